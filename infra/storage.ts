import { Duration, RemovalPolicy } from "aws-cdk-lib";
import * as s3 from "aws-cdk-lib/aws-s3";
import { Construct } from "constructs";

/**
 * Where everything lives in the stack's bucket. The worker and aggregator permissions are
 * written against these prefixes, so they are the one place to change a layout.
 */
export const PREFIXES = {
  /** ONNX models and synset_words.txt. */
  models: "models/",
  /** Validation images (unless an existing input bucket is used). */
  validation: "validation/",
  /** One folder per run: manifest.json, batches/, results.jsonl, summary.json, report.html. */
  runs: "runs/",
  /** Images dropped here are classified as they arrive. */
  drop: "drop/",
  /** One `<original key>.json` per dropped image. */
  dropResults: "drop-results/",
} as const;

export interface StorageProps {
  /**
   * What `cdk destroy` does with the bucket.
   * @default RemovalPolicy.RETAIN - models, validation images and run results outlive the stack
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * An existing bucket with validation images, imported read-only by name.
   * @default undefined - no input bucket; images go under validation/ in the stack's bucket
   */
  readonly inputBucketName?: string;
}

/** The stack's bucket (models, runs, drop folder) and, optionally, an imported input bucket. */
export class Storage extends Construct {
  public readonly bucket: s3.Bucket;
  public readonly inputBucket?: s3.IBucket;

  constructor(scope: Construct, id: string, props: StorageProps = {}) {
    super(scope, id);
    this.bucket = new s3.Bucket(this, "Bucket", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      // Results are rewritten in place on purpose (a redelivered batch overwrites its file);
      // versions would only keep paying for superseded copies.
      versioned: false,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      lifecycleRules: [
        {
          id: "abort-incomplete-multipart-uploads",
          // A worker killed mid-upload (Spot reclaim) leaves parts that are billed but invisible.
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
    });
    if (props.inputBucketName !== undefined) {
      this.inputBucket = s3.Bucket.fromBucketName(this, "InputBucket", props.inputBucketName);
    }
  }
}

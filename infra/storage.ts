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

/** Prefixes in the log bucket: S3 server access logs of the data bucket, and VPC flow logs. */
export const LOG_PREFIXES = {
  accessLogs: "s3-access-logs/",
  flowLogs: "vpc-flow-logs/",
} as const;

/** Days access and flow logs are kept in the log bucket. */
export const LOG_BUCKET_EXPIRY_DAYS = 90;

export interface StorageProps {
  /**
   * What `cdk destroy` does with the buckets.
   * @default RemovalPolicy.RETAIN - models, validation images, run results and the access logs
   *   about them outlive the stack
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * An existing bucket with validation images, imported read-only by name.
   * @default undefined - no input bucket; images go under validation/ in the stack's bucket
   */
  readonly inputBucketName?: string;
}

/**
 * The stack's bucket (models, runs, drop folder), the log bucket that receives its server
 * access logs and the VPC's flow logs, and, optionally, an imported input bucket.
 */
export class Storage extends Construct {
  public readonly bucket: s3.Bucket;
  public readonly logBucket: s3.Bucket;
  public readonly inputBucket?: s3.IBucket;

  constructor(scope: Construct, id: string, props: StorageProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.logBucket = new s3.Bucket(this, "LogBucket", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      // S3 server access logging delivers only to SSE-S3 buckets, not SSE-KMS. The log bucket
      // logs nothing itself (cdk-nag exempts a log destination): that would log every delivery.
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      // Log delivery is granted by bucket policy (CDK adds it), so ACLs stay disabled.
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
      lifecycleRules: [{ id: "expire-logs", expiration: Duration.days(LOG_BUCKET_EXPIRY_DAYS) }],
    });
    this.bucket = new s3.Bucket(this, "Bucket", {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      // Results are rewritten in place on purpose (a redelivered batch overwrites its file);
      // versions would only keep paying for superseded copies.
      versioned: false,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
      serverAccessLogsBucket: this.logBucket,
      serverAccessLogsPrefix: LOG_PREFIXES.accessLogs,
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

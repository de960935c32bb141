import * as s3 from "aws-cdk-lib/aws-s3";
import * as s3n from "aws-cdk-lib/aws-s3-notifications";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { PREFIXES } from "./storage.js";

export interface DropFolderProps {
  readonly bucket: s3.Bucket;
  /** The work queue; the worker tells S3 event messages from batch messages by their shape. */
  readonly queue: sqs.IQueue;
  /**
   * Key prefix watched for new images.
   * @default PREFIXES.drop ("drop/")
   */
  readonly prefix?: string;
}

/**
 * The drop folder: every object created under `drop/` becomes an S3 event message on the work
 * queue, which the same GPU workers classify into `drop-results/`. There is no suffix filter:
 * S3's are case-sensitive and take one spelling each, so `IMG.Jpg` slipped between `.jpg` and
 * `.JPG`. The worker skips non-images by `isImageKey`, in any case, as `score` and `plan` list.
 */
export class DropFolder extends Construct {
  public readonly prefix: string;

  constructor(scope: Construct, id: string, props: DropFolderProps) {
    super(scope, id);
    this.prefix = props.prefix ?? PREFIXES.drop;
    const destination = new s3n.SqsDestination(props.queue);
    props.bucket.addEventNotification(s3.EventType.OBJECT_CREATED, destination, { prefix: this.prefix });
  }
}

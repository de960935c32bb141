import * as s3 from "aws-cdk-lib/aws-s3";
import * as s3n from "aws-cdk-lib/aws-s3-notifications";
import type * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { IMAGE_EXTENSIONS } from "../storage/image-keys.js";
import { PREFIXES } from "./storage.js";

/**
 * Image suffixes that trigger classification. S3 suffix filters are case-sensitive and a rule
 * takes one suffix, so each spelling is its own rule; cameras and phones write upper case.
 */
export const DROP_IMAGE_SUFFIXES: readonly string[] = [
  ...IMAGE_EXTENSIONS,
  ...IMAGE_EXTENSIONS.map((extension) => extension.toUpperCase()),
];

export interface DropFolderProps {
  readonly bucket: s3.Bucket;
  /** The work queue; the worker tells S3 event messages from batch messages by their shape. */
  readonly queue: sqs.IQueue;
  /**
   * Key prefix watched for new images.
   * @default PREFIXES.drop ("drop/")
   */
  readonly prefix?: string;
  /**
   * Suffixes that count as images.
   * @default DROP_IMAGE_SUFFIXES
   */
  readonly suffixes?: readonly string[];
}

/**
 * The drop folder: every object created under `drop/` with an image suffix becomes an S3 event
 * message on the work queue, which the same GPU workers classify into `drop-results/`.
 */
export class DropFolder extends Construct {
  public readonly prefix: string;
  public readonly suffixes: readonly string[];

  constructor(scope: Construct, id: string, props: DropFolderProps) {
    super(scope, id);
    this.prefix = props.prefix ?? PREFIXES.drop;
    this.suffixes = props.suffixes ?? DROP_IMAGE_SUFFIXES;
    const destination = new s3n.SqsDestination(props.queue);
    for (const suffix of this.suffixes) {
      props.bucket.addEventNotification(s3.EventType.OBJECT_CREATED, destination, { prefix: this.prefix, suffix });
    }
  }
}

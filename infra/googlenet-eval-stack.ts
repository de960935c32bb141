import { CfnOutput, Stack, type StackProps } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import { Platform } from "aws-cdk-lib/aws-ecr-assets";
import * as ecs from "aws-cdk-lib/aws-ecs";
import type * as logs from "aws-cdk-lib/aws-logs";
import * as sns from "aws-cdk-lib/aws-sns";
import type { Construct } from "constructs";
import { Aggregator } from "./aggregator.js";
import type { DeploySettings } from "./deploy-settings.js";
import { DropFolder } from "./drop-folder.js";
import { GpuWorkers } from "./gpu-workers.js";
import { Storage } from "./storage.js";
import { WorkQueue } from "./work-queue.js";

/** The names of the stack outputs; README.md quotes them and the tests pin them. */
export const OUTPUT_NAMES = {
  bucketName: "BucketName",
  queueUrl: "QueueUrl",
  deadLetterQueueUrl: "DeadLetterQueueUrl",
  clusterName: "ClusterName",
  serviceName: "ServiceName",
  workerLogGroup: "WorkerLogGroupName",
  aggregatorLogGroup: "AggregatorLogGroupName",
} as const;

export interface GoogLeNetEvalStackProps extends StackProps {
  /** Settings, normally settingsFromContext(app.node). */
  readonly settings: DeploySettings;
  /** Repository root: the Dockerfile's build context and the Lambda's project root. */
  readonly projectRoot: string;
  /**
   * The worker image.
   * @default ContainerImage.fromAsset(projectRoot) - built from the Dockerfile at deploy time
   */
  readonly workerImage?: ecs.ContainerImage;
}

/**
 * The whole pipeline: the bucket, the work queue with its dead-letter queue and alarm, GPU
 * workers that scale from zero on the queue's backlog, the drop folder and the aggregator.
 */
export class GoogLeNetEvalStack extends Stack {
  public readonly storage: Storage;
  public readonly workQueue: WorkQueue;
  public readonly workers: GpuWorkers;
  public readonly dropFolder: DropFolder;
  public readonly aggregator: Aggregator;

  constructor(scope: Construct, id: string, props: GoogLeNetEvalStackProps) {
    super(scope, id, props);
    const { settings } = props;

    this.storage = new Storage(this, "Storage", {
      ...(settings.inputBucketName === undefined ? {} : { inputBucketName: settings.inputBucketName }),
    });
    const alarmTopic =
      settings.alarmTopicArn === undefined ? undefined : sns.Topic.fromTopicArn(this, "AlarmTopic", settings.alarmTopicArn);
    this.workQueue = new WorkQueue(this, "WorkQueue", { ...(alarmTopic ? { alarmTopic } : {}) });

    // A lookup needs credentials and an explicit environment; only an operator who names a VPC
    // pays that, so a plain `cdk synth` runs anywhere.
    const vpc = settings.vpcId === undefined ? undefined : ec2.Vpc.fromLookup(this, "Vpc", { vpcId: settings.vpcId });
    const logRetention = settings.logRetentionDays as logs.RetentionDays;
    this.workers = new GpuWorkers(this, "Workers", {
      ...(vpc ? { vpc } : {}),
      bucket: this.storage.bucket,
      ...(this.storage.inputBucket ? { inputBucket: this.storage.inputBucket, inputPrefix: settings.inputPrefix } : {}),
      workQueue: this.workQueue,
      image:
        props.workerImage ??
        ecs.ContainerImage.fromAsset(props.projectRoot, {
          file: "Dockerfile",
          // The GPU hosts are x86_64 (g4dn, g5).
          platform: Platform.LINUX_AMD64,
        }),
      instanceTypes: settings.instanceTypes,
      spot: settings.spot,
      maxInstances: settings.maxInstances,
      defaultModelKey: settings.defaultModelKey,
      defaultCrops: settings.defaultCrops,
      synsetsKey: settings.synsetsKey,
      logRetention,
    });
    this.dropFolder = new DropFolder(this, "DropFolder", { bucket: this.storage.bucket, queue: this.workQueue.queue });
    this.aggregator = new Aggregator(this, "Aggregator", {
      bucket: this.storage.bucket,
      projectRoot: props.projectRoot,
      logRetention,
    });

    const output = (name: string, value: string, description: string): void => {
      new CfnOutput(this, name, { value, description });
    };
    output(OUTPUT_NAMES.bucketName, this.storage.bucket.bucketName, "Bucket for models/, validation/, runs/, drop/ and drop-results/");
    output(OUTPUT_NAMES.queueUrl, this.workQueue.queue.queueUrl, "Work queue: pass to googlenet-eval plan --queue");
    output(OUTPUT_NAMES.deadLetterQueueUrl, this.workQueue.deadLetterQueue.queueUrl, "Batches that failed 3 times");
    output(OUTPUT_NAMES.clusterName, this.workers.cluster.clusterName, "ECS cluster of the GPU workers");
    output(OUTPUT_NAMES.serviceName, this.workers.service.serviceName, "ECS service of the GPU workers");
    output(OUTPUT_NAMES.workerLogGroup, this.workers.logGroup.logGroupName, "CloudWatch log group of the workers");
    output(OUTPUT_NAMES.aggregatorLogGroup, this.aggregator.logGroup.logGroupName, "CloudWatch log group of the aggregator Lambda");
  }
}

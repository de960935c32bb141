import { CfnOutput, Duration, Stack, type StackProps } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import { Platform } from "aws-cdk-lib/aws-ecr-assets";
import * as ecs from "aws-cdk-lib/aws-ecs";
import type * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { MAX_RECEIVE_COUNT } from "../queue/queue-timing.js";
import { Aggregator } from "./aggregator.js";
import { alarmTopic, OperationsAlarms } from "./alarms.js";
import { CpuWorkers } from "./cpu-workers.js";
import type { DeploySettings } from "./deploy-settings.js";
import { DropFolder } from "./drop-folder.js";
import { GpuWorkers } from "./gpu-workers.js";
import { acknowledge } from "./nag.js";
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
  alarmTopicArn: "AlarmTopicArn",
  logBucketName: "LogBucketName",
} as const;

/** The Dockerfile target each fleet's image is built from. */
export const IMAGE_TARGETS = { tfjs: "gpu-tfjs", onnxruntime: "gpu-onnxruntime", cpu: "cpu" } as const;

/** The image target for the settings: the CPU image for CPU workers, else the GPU engine's. */
export function imageTarget(settings: Pick<DeploySettings, "workers" | "gpuEngine">): (typeof IMAGE_TARGETS)[keyof typeof IMAGE_TARGETS] {
  return settings.workers === "cpu" ? IMAGE_TARGETS.cpu : IMAGE_TARGETS[settings.gpuEngine];
}

export interface GoogLeNetEvalStackProps extends StackProps {
  /** Settings, normally settingsFromContext(app.node). */
  readonly settings: DeploySettings;
  /** Repository root: the Dockerfile's build context and the Lambda's project root. */
  readonly projectRoot: string;
  /**
   * The worker image.
   * @default ContainerImage.fromAsset(projectRoot) at the settings' Dockerfile target, built at deploy time
   */
  readonly workerImage?: ecs.ContainerImage;
}

/**
 * The whole pipeline: the bucket and its log bucket, the work queue with its dead-letter
 * queue, workers (GPU instances or Fargate Spot) that scale from zero on the queue's backlog,
 * the drop folder, the aggregator, and the alarms, all notifying one topic.
 */
export class GoogLeNetEvalStack extends Stack {
  public readonly storage: Storage;
  public readonly workQueue: WorkQueue;
  public readonly workers: GpuWorkers | CpuWorkers;
  public readonly dropFolder: DropFolder;
  public readonly aggregator: Aggregator;
  public readonly alarms: OperationsAlarms;

  constructor(scope: Construct, id: string, props: GoogLeNetEvalStackProps) {
    super(scope, id, props);
    const { settings } = props;

    this.storage = new Storage(this, "Storage", {
      ...(settings.inputBucketName === undefined ? {} : { inputBucketName: settings.inputBucketName }),
    });
    const topic = alarmTopic(this, settings.alarmTopicArn);
    this.workQueue = new WorkQueue(this, "WorkQueue", {
      alarmTopic: topic,
      oldestMessageAlarmAge: Duration.hours(settings.queueAgeAlarmHours),
    });
    this.workers = this.workerFleet(props, topic);
    this.dropFolder = new DropFolder(this, "DropFolder", { bucket: this.storage.bucket, queue: this.workQueue.queue });
    this.aggregator = new Aggregator(this, "Aggregator", {
      bucket: this.storage.bucket,
      projectRoot: props.projectRoot,
      logRetention: settings.logRetentionDays as logs.RetentionDays,
    });
    this.alarms = new OperationsAlarms(this, "Alarms", {
      topic,
      workQueue: this.workQueue,
      cluster: this.workers.cluster,
      service: this.workers.service,
      aggregator: this.aggregator.function,
    });
    this.acknowledgeCdkHandlers();
    this.outputs(topic.topicArn);
  }

  private workerFleet(props: GoogLeNetEvalStackProps, topic: ReturnType<typeof alarmTopic>): GpuWorkers | CpuWorkers {
    const { settings } = props;
    // A lookup needs credentials and an explicit environment; only an operator who names a VPC
    // pays that, so a plain `cdk synth` runs anywhere.
    const vpc = settings.vpcId === undefined ? undefined : ec2.Vpc.fromLookup(this, "Vpc", { vpcId: settings.vpcId });
    const image =
      props.workerImage ??
      ecs.ContainerImage.fromAsset(props.projectRoot, {
        file: "Dockerfile",
        target: imageTarget(settings),
        // The GPU hosts are x86_64 (g4dn, g5); the CPU tasks run the same architecture.
        platform: Platform.LINUX_AMD64,
      });
    const common = {
      ...settings,
      ...(vpc ? { vpc } : {}),
      logBucket: this.storage.logBucket,
      bucket: this.storage.bucket,
      ...(this.storage.inputBucket ? { inputBucket: this.storage.inputBucket, inputPrefix: settings.inputPrefix } : {}),
      workQueue: this.workQueue,
      image,
      logRetention: settings.logRetentionDays as logs.RetentionDays,
    };
    return settings.workers === "cpu" ? new CpuWorkers(this, "Workers", common) : new GpuWorkers(this, "Workers", { ...common, alarmTopic: topic });
  }

  /**
   * CDK's own singleton that writes the bucket's notification configuration: created by
   * aws-s3-notifications, with a role this app does not control.
   */
  private acknowledgeCdkHandlers(): void {
    for (const child of this.node.children) {
      if (!child.node.id.startsWith("BucketNotificationsHandler")) continue;
      const role = child.node.tryFindChild("Role");
      if (role === undefined) continue;
      acknowledge(
        role,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "CDK's BucketNotificationsHandler (runs only during deployments to set the bucket's notifications); AWSLambdaBasicExecutionRole grants it only CreateLogGroup, CreateLogStream and PutLogEvents for its own logs.",
      );
    }
  }

  private outputs(topicArn: string): void {
    const output = (name: string, value: string, description: string): void => {
      new CfnOutput(this, name, { value, description });
    };
    output(OUTPUT_NAMES.bucketName, this.storage.bucket.bucketName, "Bucket for models/, validation/, runs/, drop/ and drop-results/");
    output(OUTPUT_NAMES.queueUrl, this.workQueue.queue.queueUrl, "Work queue: pass to googlenet-eval plan --queue");
    output(OUTPUT_NAMES.deadLetterQueueUrl, this.workQueue.deadLetterQueue.queueUrl, `Batches that failed ${MAX_RECEIVE_COUNT} times`);
    output(OUTPUT_NAMES.clusterName, this.workers.cluster.clusterName, "ECS cluster of the workers");
    output(OUTPUT_NAMES.serviceName, this.workers.service.serviceName, "ECS service of the workers");
    output(OUTPUT_NAMES.workerLogGroup, this.workers.logGroup.logGroupName, "CloudWatch log group of the workers");
    output(OUTPUT_NAMES.aggregatorLogGroup, this.aggregator.logGroup.logGroupName, "CloudWatch log group of the aggregator Lambda");
    output(OUTPUT_NAMES.logBucketName, this.storage.logBucket.bucketName, "Bucket of S3 access logs and VPC flow logs (retained, expires them after 90 days)");
    output(OUTPUT_NAMES.alarmTopicArn, topicArn, "SNS topic of every alarm: aws sns subscribe --protocol email --topic-arn ...");
  }
}

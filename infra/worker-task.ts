import { Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as appscaling from "aws-cdk-lib/aws-applicationautoscaling";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import type * as s3 from "aws-cdk-lib/aws-s3";
import type { Construct } from "constructs";
import { DEFAULT_BATCH_DEADLINE_SECONDS } from "../queue/queue-timing.js";
import type { DeploySettings } from "./deploy-settings.js";
import { acknowledge, NAG_ARN, nagLogicalRef, nagRef } from "./nag.js";
import { PREFIXES } from "./storage.js";
import type { WorkQueue } from "./work-queue.js";

/**
 * Seconds one batch may take before the worker hands it back and exits non-zero (the worker's
 * BATCH_DEADLINE_SECONDS): the worker's own default, set explicitly so the health check's limit
 * below is derived from the value the task really runs with.
 */
export const BATCH_DEADLINE_SECONDS = DEFAULT_BATCH_DEADLINE_SECONDS;

/**
 * The age of the worker's health file past which the container is unhealthy. The loop rewrites
 * the file on every turn (an idle long-poll is at most 20 s) and after each image, but one
 * image of a large ensemble, or a cold model download before the first, can take long; so the
 * limit is one batch deadline plus a minute: a worker that is alive but busy is never killed,
 * and one that hangs past its own deadline is.
 */
export const HEALTH_MAX_AGE_SECONDS = BATCH_DEADLINE_SECONDS + 60;

/** Where the worker keeps its health file: /tmp is writable for the image's non-root user. */
export const HEALTH_FILE = "/tmp/googlenet-eval/health.json";

/**
 * Seconds between SIGTERM and SIGKILL. The worker hands its batch back to the queue in a
 * second or two; 120 s is the most ECS allows (EC2 and Fargate alike) and the notice a Spot
 * reclaim gives.
 */
export const STOP_TIMEOUT_SECONDS = 120;

/** The command the container health check runs, in the task definition and the Dockerfile alike. */
export const HEALTH_CHECK_COMMAND = ["node", "dist/handlers/health-check.js", "--max-age", String(HEALTH_MAX_AGE_SECONDS)];

/**
 * The worker's configuration, by the names handlers/worker-command.ts reads (WORKER_ENV; the
 * tests check the names against it) plus the SDK's AWS_REGION. No secrets: every value is a
 * resource name, a URL or a number, all visible in the template anyway.
 */
export type WorkerEnvironment = Readonly<Record<string, string>>;

export interface WorkerEnvironmentOptions
  extends Pick<DeploySettings, "defaultModelKey" | "defaultCrops" | "dropMaxPixels" | "synsetsKey"> {
  readonly bucket: s3.IBucket;
  readonly workQueue: WorkQueue;
  /** "tfjs" or "onnxruntime": the drop folder's engine. */
  readonly engine: "tfjs" | "onnxruntime";
  /** onnxruntime's device; omitted for tfjs. */
  readonly device?: "cuda" | "cpu";
  /** GPU tasks must never fall back to a CPU backend. */
  readonly requireGpu: boolean;
}

/**
 * The worker's environment. VISIBILITY_TIMEOUT_SECONDS is left out on purpose: the worker reads
 * the queue's own attribute, so the queue is the one place it is set.
 */
export function workerEnvironment(scope: Construct, options: WorkerEnvironmentOptions): WorkerEnvironment {
  const bucketUrl = `s3://${options.bucket.bucketName}`;
  return {
    QUEUE_URL: options.workQueue.queue.queueUrl,
    DEFAULT_MODEL: `${bucketUrl}/${options.defaultModelKey}`,
    DEFAULT_CROPS: String(options.defaultCrops),
    // Unset, the worker keeps its own limit: one default, in the code that applies it.
    ...(options.dropMaxPixels === undefined ? {} : { DROP_MAX_PIXELS: String(options.dropMaxPixels) }),
    DROP_INPUT: `${bucketUrl}/${PREFIXES.drop}`,
    DROP_OUTPUT: `${bucketUrl}/${PREFIXES.dropResults.replace(/\/$/, "")}`,
    GOOGLENET_EVAL_SYNSETS: `${bucketUrl}/${options.synsetsKey}`,
    BATCH_DEADLINE_SECONDS: String(BATCH_DEADLINE_SECONDS),
    // The worker finishes the batch in hand on SIGTERM only when it fits in this; else hands it back.
    STOP_TIMEOUT_SECONDS: String(STOP_TIMEOUT_SECONDS),
    ENGINE: options.engine,
    ...(options.device === undefined ? {} : { DEVICE: options.device }),
    ...(options.requireGpu ? { REQUIRE_GPU: "true" } : {}),
    HEALTH_FILE,
    AWS_REGION: Stack.of(scope).region,
  };
}

/**
 * The container health check: healthy while the worker loop keeps rewriting HEALTH_FILE.
 * startPeriod (ECS's maximum, 5 minutes) covers the image's first CUDA initialisation and the
 * synsets download before the loop writes the file for the first time.
 */
export function workerHealthCheck(): ecs.HealthCheck {
  return {
    command: ["CMD", ...HEALTH_CHECK_COMMAND],
    interval: Duration.seconds(30),
    timeout: Duration.seconds(10),
    retries: 3,
    startPeriod: Duration.minutes(5),
  };
}

/** A cluster with Container Insights: its RunningTaskCount feeds the no-worker alarm. */
export function workerCluster(scope: Construct, vpc: ec2.IVpc): ecs.Cluster {
  return new ecs.Cluster(scope, "Cluster", { vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });
}

export interface WorkerAccess {
  readonly bucket: s3.IBucket;
  readonly inputBucket?: s3.IBucket;
  readonly inputPrefix?: string;
  readonly synsetsKey: string;
  readonly workQueue: WorkQueue;
  readonly cluster: ecs.Cluster;
}

/**
 * The worker's log group and task role, with the role's access granted: the same for the GPU
 * and the CPU fleets.
 */
export function workerLogsAndRole(
  scope: Construct,
  access: WorkerAccess & { readonly logRetention?: logs.RetentionDays | undefined },
): { logGroup: logs.LogGroup; taskRole: iam.Role } {
  const logGroup = new logs.LogGroup(scope, "Logs", {
    retention: access.logRetention ?? logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const taskRole = new iam.Role(scope, "TaskRole", {
    assumedBy: new iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
    description: "googlenet-eval worker: reads models and inputs, writes batch and drop results",
  });
  grantWorkerAccess(taskRole, access);
  return { logGroup, taskRole };
}

/**
 * The worker task role: reads models, inputs, dropped images and run manifests; writes batch
 * and drop results; consumes the queue; protects its own tasks from scale-in.
 */
export function grantWorkerAccess(role: iam.Role, access: WorkerAccess): void {
  const { bucket } = access;
  const reads = [
    bucket.arnForObjects(`${PREFIXES.models}*`),
    bucket.arnForObjects(`${PREFIXES.validation}*`),
    bucket.arnForObjects(`${PREFIXES.drop}*`),
    bucket.arnForObjects(`${PREFIXES.runs}*/manifest.json`),
  ];
  if (!access.synsetsKey.startsWith(PREFIXES.models)) reads.push(bucket.arnForObjects(access.synsetsKey));
  if (access.inputBucket) reads.push(access.inputBucket.arnForObjects(`${access.inputPrefix ?? ""}*`));
  role.addToPolicy(new iam.PolicyStatement({ sid: "ReadInputs", actions: ["s3:GetObject"], resources: reads }));
  role.addToPolicy(
    new iam.PolicyStatement({
      sid: "ListBucketFor404",
      // Without ListBucket S3 answers a missing key with 403, not 404, and "no such manifest
      // or model" would read as an access error. It reveals key names only.
      actions: ["s3:ListBucket"],
      resources: [bucket.bucketArn, ...(access.inputBucket ? [access.inputBucket.bucketArn] : [])],
    }),
  );
  role.addToPolicy(
    new iam.PolicyStatement({
      sid: "WriteResults",
      // Batch results and drop results only; AbortMultipartUpload for large uploads.
      actions: ["s3:PutObject", "s3:AbortMultipartUpload"],
      resources: [bucket.arnForObjects(`${PREFIXES.runs}*/batches/*`), bucket.arnForObjects(`${PREFIXES.dropResults}*`)],
    }),
  );
  access.workQueue.queue.grantConsumeMessages(role);
  // A malformed message goes to the dead-letter queue at once instead of costing the
  // redrive limit's visibility timeouts: the worker finds the queue by name and sends it there.
  access.workQueue.deadLetterQueue.grantSendMessages(role);
  // The agent's task-protection endpoint calls ecs:UpdateTaskProtection with these (task
  // role) credentials; the endpoint itself needs no IAM. Scoped to this cluster's tasks.
  access.cluster.grantTaskProtection(role);
  acknowledgeWorkerWildcards(role, access);
}

/** The reasons for each prefix wildcard in the task role, as a reviewer reads them. */
function acknowledgeWorkerWildcards(role: iam.Role, access: WorkerAccess): void {
  const bucket = nagRef(access.bucket);
  const wildcards: [string, string][] = [
    [`${bucket}/${PREFIXES.models}*`, "The worker loads any model a run's manifest names and the synsets file; users add models under models/ without redeploying."],
    [`${bucket}/${PREFIXES.validation}*`, "Validation images are whatever a run plans under validation/; the keys are not known at deploy time."],
    [`${bucket}/${PREFIXES.drop}*`, "The drop folder: any image a user uploads under drop/ is read once to be classified."],
    [`${bucket}/${PREFIXES.runs}*/manifest.json`, "Each run's manifest, at runs/<run id>/manifest.json; run ids are made by `plan` at run time. Only the manifest file, no other run output."],
    [`${bucket}/${PREFIXES.runs}*/batches/*`, "The worker writes one result file per batch, runs/<run id>/batches/<batch>.jsonl; nothing else under runs/."],
    [`${bucket}/${PREFIXES.dropResults}*`, "One result per dropped image at drop-results/<original key>.json, mirroring drop/ keys chosen by users."],
    [
      `${NAG_ARN}:ecs:<AWS::Region>:<AWS::AccountId>:task/${nagLogicalRef(access.cluster)}/*`,
      "ecs:UpdateTaskProtection on this cluster's tasks only; task ids are assigned by ECS at run time.",
    ],
  ];
  if (access.inputBucket) {
    wildcards.push([
      // An imported bucket's ARN is a literal, not a reference.
      `${NAG_ARN}:s3:::${access.inputBucket.bucketName}/${access.inputPrefix ?? ""}*`,
      "Read-only access to the operator's existing image bucket, limited to the prefix named in context inputPrefix.",
    ]);
  }
  for (const [resource, reason] of wildcards) acknowledge(role, `IAM5[Resource::${resource}]`, reason);
}

/**
 * The service's task count follows the queue's backlog: 0 messages -> 0 tasks; then 1, 2, 4,
 * ... tasks as the backlog doubles, up to `maxTasks`.
 */
export function scaleOnBacklog(service: ecs.BaseService, workQueue: WorkQueue, maxTasks: number): ecs.ScalableTaskCount {
  const scaling = service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: maxTasks });
  scaling.scaleOnMetric("QueueBacklog", {
    metric: workQueue.metricBacklog(),
    adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
    scalingSteps: backlogScalingSteps(maxTasks),
    // Two one-minute datapoints: a single SQS sample of 0 between batches does not stop work.
    evaluationPeriods: 2,
    cooldown: Duration.minutes(1),
  });
  return scaling;
}

/**
 * Exact task counts by backlog: 0 messages -> 0 tasks; then 1, 2, 4, ... tasks as the backlog
 * doubles, up to `maxTasks`. More tasks than messages would only idle on a GPU.
 */
export function backlogScalingSteps(maxTasks: number): appscaling.ScalingInterval[] {
  const steps: appscaling.ScalingInterval[] = [{ upper: 0, change: 0 }];
  for (let tasks = 1; tasks < maxTasks; tasks *= 2) steps.push({ lower: tasks, change: tasks });
  steps.push({ lower: maxTasks, change: maxTasks });
  return steps;
}

/** ecr:GetAuthorizationToken has no resource-level permission; the execution role needs it to pull. */
export function acknowledgeExecutionRole(taskDefinition: ecs.TaskDefinition): void {
  const role = taskDefinition.executionRole;
  if (role === undefined) return;
  acknowledge(
    role,
    "IAM5[Resource::*]",
    "ecr:GetAuthorizationToken, which AWS authorizes only on Resource \"*\"; the image pull itself (BatchGetImage, GetDownloadUrlForLayer) is scoped to the CDK asset repository.",
  );
}

/** The worker's settings are plain names and URLs, never secrets. */
export function acknowledgeEnvironment(taskDefinition: ecs.TaskDefinition): void {
  acknowledge(
    taskDefinition,
    "ECS2",
    "The environment holds no secret: queue URL, s3:// URLs, crop count, engine, deadline and a file path, all visible in the template anyway. A secret would go in `secrets` (Secrets Manager or SSM), never here.",
  );
}

/** Where a fleet runs: its VPC, the subnets for its instances or tasks, and whether they need public IPs. */
export interface WorkerNetwork {
  readonly vpc: ec2.IVpc;
  readonly vpcSubnets: ec2.SubnetSelection;
  readonly publicIp: boolean;
}

/**
 * The imported VPC (private subnets with egress), or a new one with public subnets only:
 * instances and tasks get public IPs and no inbound rule, so nothing (no NAT gateway) is
 * billed while the fleet is at zero. A created VPC logs its flows to the log bucket.
 */
export function workerNetwork(scope: Construct, vpc: ec2.IVpc | undefined, logBucket: s3.IBucket, flowLogPrefix: string): WorkerNetwork {
  if (vpc !== undefined) return { vpc, vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }, publicIp: false };
  const created = new ec2.Vpc(scope, "Vpc", {
    natGateways: 0,
    subnetConfiguration: [{ name: "public", subnetType: ec2.SubnetType.PUBLIC }],
    // Model and image reads stay off the internet path and cost no data processing.
    gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
  });
  // Flow logs go to S3 (cheaper than CloudWatch Logs ingestion), beside the bucket's access logs.
  created.addFlowLog("FlowLog", {
    destination: ec2.FlowLogDestination.toS3(logBucket, flowLogPrefix),
    trafficType: ec2.FlowLogTrafficType.ALL,
  });
  return { vpc: created, vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC }, publicIp: true };
}

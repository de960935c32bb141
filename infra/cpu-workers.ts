import { Duration } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import type * as s3 from "aws-cdk-lib/aws-s3";
import { Construct } from "constructs";
import type { DeploySettings } from "./deploy-settings.js";
import { ServiceDesiredCount } from "./desired-count.js";
import { LOG_PREFIXES } from "./storage.js";
import type { WorkQueue } from "./work-queue.js";
import {
  acknowledgeEnvironment,
  acknowledgeExecutionRole,
  workerLogsAndRole,
  STOP_TIMEOUT_SECONDS,
  scaleOnBacklog,
  workerCluster,
  workerEnvironment,
  workerHealthCheck,
  workerNetwork,
  type WorkerEnvironment,
  type WorkerNetwork,
} from "./worker-task.js";

/** The deploy settings the CPU workers use, documented once in deploy-settings.ts. */
export interface CpuWorkersProps
  extends Pick<
    DeploySettings,
    "maxInstances" | "defaultModelKey" | "defaultCrops" | "dropMaxPixels" | "synsetsKey" | "cpuWorkerCpu" | "cpuWorkerMemoryMiB"
  > {
  /**
   * An existing VPC (its private subnets with egress).
   * @default a new VPC with public subnets only and a flow log to `logBucket`
   */
  readonly vpc?: ec2.IVpc;
  /** Where a created VPC's flow log goes. */
  readonly logBucket: s3.IBucket;
  readonly bucket: s3.IBucket;
  readonly inputBucket?: s3.IBucket;
  readonly inputPrefix?: string;
  readonly workQueue: WorkQueue;
  /** The Dockerfile's cpu target: Node 22 and onnxruntime, no CUDA. */
  readonly image: ecs.ContainerImage;
  readonly logRetention?: logs.RetentionDays;
}

/**
 * The same worker on Fargate Spot, for accounts without GPU quota: onnxruntime on the task's
 * vCPUs (the CPU path this project measures), no instances to manage, and a task count that
 * follows the queue's backlog from 0 to `maxInstances` exactly as the GPU fleet's does.
 */
export class CpuWorkers extends Construct {
  public readonly network: WorkerNetwork;
  public readonly cluster: ecs.Cluster;
  public readonly logGroup: logs.LogGroup;
  public readonly taskRole: iam.Role;
  public readonly taskDefinition: ecs.FargateTaskDefinition;
  public readonly container: ecs.ContainerDefinition;
  public readonly environment: WorkerEnvironment;
  public readonly securityGroup: ec2.SecurityGroup;
  public readonly service: ecs.FargateService;
  public readonly scaling: ecs.ScalableTaskCount;

  constructor(scope: Construct, id: string, props: CpuWorkersProps) {
    super(scope, id);
    this.network = workerNetwork(this, props.vpc, props.logBucket, LOG_PREFIXES.flowLogs);
    this.cluster = workerCluster(this, this.network.vpc);
    this.cluster.enableFargateCapacityProviders();
    ({ logGroup: this.logGroup, taskRole: this.taskRole } = workerLogsAndRole(this, { ...props, cluster: this.cluster }));
    this.taskDefinition = new ecs.FargateTaskDefinition(this, "TaskDefinition", {
      taskRole: this.taskRole,
      cpu: props.cpuWorkerCpu,
      memoryLimitMiB: props.cpuWorkerMemoryMiB,
      // The image is built for linux/amd64 (the GPU hosts' architecture).
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.X86_64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });
    // No REQUIRE_GPU: this fleet is the CPU path on purpose.
    this.environment = workerEnvironment(this, { ...props, engine: "onnxruntime", device: "cpu", requireGpu: false });
    this.container = this.taskDefinition.addContainer("worker", {
      image: props.image,
      // The whole task's memory is the container's hard limit.
      memoryLimitMiB: props.cpuWorkerMemoryMiB,
      environment: { ...this.environment },
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: "worker" }),
      healthCheck: workerHealthCheck(),
      // A Fargate Spot reclaim sends SIGTERM two minutes ahead; the worker hands its batch back.
      stopTimeout: Duration.seconds(STOP_TIMEOUT_SECONDS),
      linuxParameters: new ecs.LinuxParameters(this, "LinuxParameters", { initProcessEnabled: true }),
    });
    acknowledgeExecutionRole(this.taskDefinition);
    acknowledgeEnvironment(this.taskDefinition);
    this.securityGroup = new ec2.SecurityGroup(this, "TaskSecurityGroup", {
      vpc: this.network.vpc,
      description: "googlenet-eval CPU workers: outbound only (S3, SQS, ECR, logs)",
      allowAllOutbound: true,
    });
    this.service = this.workerService(props);
    this.scaling = scaleOnBacklog(this.service, props.workQueue, props.maxInstances);
  }

  private workerService(props: CpuWorkersProps): ecs.FargateService {
    const desired = new ServiceDesiredCount(this, "DesiredCount", {
      cluster: this.cluster,
      revision: this.taskDefinition.taskDefinitionArn,
      ...(props.logRetention === undefined ? {} : { logRetention: props.logRetention }),
    });
    return new ecs.FargateService(this, "Service", {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: desired.desiredCount,
      // Spot only: a reclaimed task's batch returns to the queue, so the discount costs nothing
      // but a little time.
      capacityProviderStrategies: [{ capacityProvider: "FARGATE_SPOT", weight: 1 }],
      vpcSubnets: this.network.vpcSubnets,
      assignPublicIp: this.network.publicIp,
      securityGroups: [this.securityGroup],
      minHealthyPercent: 0,
      maxHealthyPercent: 100,
      circuitBreaker: { enable: true, rollback: true },
    });
  }
}

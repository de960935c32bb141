import { Aspects, Duration, Stack } from "aws-cdk-lib";
import * as autoscaling from "aws-cdk-lib/aws-autoscaling";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import type * as s3 from "aws-cdk-lib/aws-s3";
import type * as sns from "aws-cdk-lib/aws-sns";
import { Construct } from "constructs";
import type { DeploySettings } from "./deploy-settings.js";
import { ServiceDesiredCount } from "./desired-count.js";
import { acknowledge, NAG_ARN, nagLogicalRef } from "./nag.js";
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

export { backlogScalingSteps } from "./worker-task.js";

/**
 * The deploy settings the GPU workers use, documented once in deploy-settings.ts.
 */
export interface GpuWorkersProps
  extends Pick<
    DeploySettings,
    "instanceTypes" | "spot" | "maxInstances" | "defaultModelKey" | "defaultCrops" | "dropMaxPixels" | "synsetsKey" | "gpuEngine"
  > {
  /**
   * An existing VPC (its private subnets with egress).
   * @default a new VPC with public subnets only and a flow log to `logBucket`
   */
  readonly vpc?: ec2.IVpc;
  /** Where a created VPC's flow log goes. */
  readonly logBucket: s3.IBucket;
  readonly bucket: s3.IBucket;
  /** A read-only bucket of input images, and the prefix the workers may read in it. */
  readonly inputBucket?: s3.IBucket;
  /**
   * Prefix readable in `inputBucket`.
   * @default "" (the whole bucket)
   */
  readonly inputPrefix?: string;
  readonly workQueue: WorkQueue;
  /** The worker image: the Dockerfile's gpu-tfjs or gpu-onnxruntime target. */
  readonly image: ecs.ContainerImage;
  /** Where the Auto Scaling group reports launches, terminations and their failures. */
  readonly alarmTopic: sns.ITopic;
  /**
   * Days the worker logs are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
}

/** One GPU per xlarge instance; the task takes nearly all of the host so it gets the GPU alone. */
const TASK_CPU_UNITS = 4096;
/** Placement reserves 12 GiB of the 16 GiB hosts (g4dn.xlarge, g5.xlarge) ... */
const TASK_MEMORY_RESERVATION_MIB = 12 * 1024;
/** ... and the kernel stops the container at 14 GiB, leaving the ECS agent and the OS their share. */
export const GPU_TASK_MEMORY_LIMIT_MIB = 14 * 1024;

/**
 * ECS on EC2 GPU instances that cost nothing while the queue is empty: an Auto Scaling group
 * (minimum 0) behind a capacity provider with managed scaling, and a service whose task count
 * follows the queue's backlog from 0 to `maxInstances` and back to 0. Managed scaling then adds
 * or removes instances to fit the tasks.
 */
export class GpuWorkers extends Construct {
  public readonly network: WorkerNetwork;
  public readonly cluster: ecs.Cluster;
  public readonly instanceRole: iam.Role;
  public readonly launchTemplate: ec2.LaunchTemplate;
  public readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  public readonly capacityProvider: ecs.AsgCapacityProvider;
  public readonly logGroup: logs.LogGroup;
  public readonly taskRole: iam.Role;
  public readonly taskDefinition: ecs.Ec2TaskDefinition;
  public readonly container: ecs.ContainerDefinition;
  public readonly environment: WorkerEnvironment;
  public readonly service: ecs.Ec2Service;
  public readonly scaling: ecs.ScalableTaskCount;

  constructor(scope: Construct, id: string, props: GpuWorkersProps) {
    super(scope, id);
    this.network = workerNetwork(this, props.vpc, props.logBucket, LOG_PREFIXES.flowLogs);
    this.cluster = workerCluster(this, this.network.vpc);
    this.instanceRole = this.agentRole();
    this.launchTemplate = this.gpuLaunchTemplate(props);
    this.autoScalingGroup = this.instanceGroup(props);
    this.capacityProvider = new ecs.AsgCapacityProvider(this, "CapacityProvider", {
      autoScalingGroup: this.autoScalingGroup,
      enableManagedScaling: true,
      enableManagedTerminationProtection: true,
      enableManagedDraining: true,
      targetCapacityPercent: 100,
    });
    this.cluster.addAsgCapacityProvider(this.capacityProvider, { spotInstanceDraining: props.spot });

    ({ logGroup: this.logGroup, taskRole: this.taskRole } = workerLogsAndRole(this, { ...props, cluster: this.cluster }));
    this.taskDefinition = new ecs.Ec2TaskDefinition(this, "TaskDefinition", { taskRole: this.taskRole, networkMode: ecs.NetworkMode.BRIDGE });
    const onnxruntime = props.gpuEngine === "onnxruntime";
    this.environment = workerEnvironment(this, {
      ...props,
      engine: props.gpuEngine,
      ...(onnxruntime ? { device: "cuda" as const } : {}),
      requireGpu: true,
    });
    this.container = this.workerContainer(props);
    acknowledgeExecutionRole(this.taskDefinition);
    acknowledgeEnvironment(this.taskDefinition);

    this.service = this.workerService(props);
    this.scaling = scaleOnBacklog(this.service, props.workQueue, props.maxInstances);
  }

  /**
   * The instance role: the ECS agent's own actions, scoped to this cluster. The cluster would
   * add its default agent statements (with `ecs:Submit*` and several `Resource: *`) to the
   * group's role; the group gets an immutable view instead, and this policy names every action
   * the agent uses.
   */
  private agentRole(): iam.Role {
    const role = new iam.Role(this, "InstanceRole", {
      assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com"),
      description: "googlenet-eval GPU instances: the ECS agent only",
    });
    const policy = new iam.Policy(this, "EcsAgentPolicy", {
      roles: [role],
      statements: [
        new iam.PolicyStatement({
          sid: "AgentOnCluster",
          actions: [
            "ecs:RegisterContainerInstance",
            "ecs:DeregisterContainerInstance",
            "ecs:SubmitAttachmentStateChanges",
            "ecs:SubmitContainerStateChange",
            "ecs:SubmitTaskStateChange",
          ],
          resources: [this.cluster.clusterArn],
        }),
        new iam.PolicyStatement({
          sid: "AgentOnItsInstances",
          // UpdateContainerInstancesState: the agent sets its instance to DRAINING on a Spot
          // interruption notice.
          actions: ["ecs:Poll", "ecs:StartTelemetrySession", "ecs:UpdateContainerInstancesState"],
          resources: [Stack.of(this).formatArn({ service: "ecs", resource: "container-instance", resourceName: `${this.cluster.clusterName}/*` })],
        }),
        new iam.PolicyStatement({
          sid: "AgentDiscoverEndpoint",
          // AWS requires "*": ecs:DiscoverPollEndpoint has no resource-level permissions.
          actions: ["ecs:DiscoverPollEndpoint"],
          resources: ["*"],
        }),
      ],
    });
    acknowledge(policy, "IAM5[Resource::*]", "ecs:DiscoverPollEndpoint, which AWS authorizes only on Resource \"*\"; every other agent action is scoped to this cluster.");
    acknowledge(
      policy,
      `IAM5[Resource::${NAG_ARN}:ecs:<AWS::Region>:<AWS::AccountId>:container-instance/${nagLogicalRef(this.cluster)}/*]`,
      "The agent polls and reports for its own container instance, whose id ECS assigns at registration; the wildcard stays inside this cluster.",
    );
    return role;
  }

  private gpuLaunchTemplate(props: GpuWorkersProps): ec2.LaunchTemplate {
    const securityGroup = new ec2.SecurityGroup(this, "InstanceSecurityGroup", {
      vpc: this.network.vpc,
      description: "googlenet-eval GPU workers: outbound only (S3, SQS, ECS, ECR, logs)",
      allowAllOutbound: true,
    });
    const template = new ec2.LaunchTemplate(this, "LaunchTemplate", {
      // Amazon Linux 2023's ECS GPU AMI: NVIDIA driver and container toolkit; Amazon Linux 2
      // reaches end of support in 2026.
      machineImage: ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU),
      userData: ec2.UserData.forLinux(),
      role: this.instanceRole.withoutPolicyUpdates(),
      securityGroup,
      associatePublicIpAddress: this.network.publicIp,
      // IMDSv2 with a hop limit of 1: containers on the docker bridge are one hop further and
      // cannot fetch the instance role's credentials; they use their task role.
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      blockDevices: [
        {
          // The CUDA + libtensorflow image is several GB; the GPU AMI's 30 GB root is tight.
          deviceName: "/dev/xvda",
          volume: ec2.BlockDeviceVolume.ebs(60, { volumeType: ec2.EbsDeviceVolumeType.GP3, encrypted: true }),
        },
      ],
    });
    if (props.spot) {
      // The cluster adds this line only for groups with a plain spotPrice, not mixed-instances
      // groups: on a Spot interruption notice the agent drains the instance, the worker gets
      // SIGTERM and hands its batch back to the queue.
      template.userData?.addCommands("echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config");
    }
    return template;
  }

  private instanceGroup(props: GpuWorkersProps): autoscaling.AutoScalingGroup {
    const group = new autoscaling.AutoScalingGroup(this, "AutoScalingGroup", {
      vpc: this.network.vpc,
      vpcSubnets: this.network.vpcSubnets,
      minCapacity: 0,
      maxCapacity: props.maxInstances,
      // Launches, terminations and their failures (an instance type without capacity, a quota
      // of 0 GPUs) reach whoever subscribed to the alarm topic.
      notifications: [{ topic: props.alarmTopic, scalingEvents: autoscaling.ScalingEvents.ALL }],
      mixedInstancesPolicy: {
        launchTemplate: this.launchTemplate,
        launchTemplateOverrides: props.instanceTypes.map((type) => ({ instanceType: new ec2.InstanceType(type) })),
        instancesDistribution: {
          onDemandAllocationStrategy: autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
          onDemandBaseCapacity: 0,
          onDemandPercentageAboveBaseCapacity: props.spot ? 0 : 100,
          spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
        },
      },
    });
    acknowledge(
      group,
      "EC26",
      "cdk-nag cannot read the launch template through the mixed-instances policy's intrinsic; its one block device is encrypted (the GPU workers test asserts Encrypted: true).",
    );
    return group;
  }

  private workerContainer(props: GpuWorkersProps): ecs.ContainerDefinition {
    return this.taskDefinition.addContainer("worker", {
      image: props.image,
      gpuCount: 1,
      cpu: TASK_CPU_UNITS,
      memoryReservationMiB: TASK_MEMORY_RESERVATION_MIB,
      // A hard limit: a leak ends this container, not the ECS agent or the host.
      memoryLimitMiB: GPU_TASK_MEMORY_LIMIT_MIB,
      environment: { ...this.environment },
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: "worker" }),
      healthCheck: workerHealthCheck(),
      // SIGTERM first: the worker stops taking messages and hands its batch back (visibility 0).
      stopTimeout: Duration.seconds(STOP_TIMEOUT_SECONDS),
      // An init process reaps children and forwards SIGTERM to node, which is not PID 1 then.
      linuxParameters: new ecs.LinuxParameters(this, "LinuxParameters", { initProcessEnabled: true }),
    });
  }

  private workerService(props: GpuWorkersProps): ecs.Ec2Service {
    const desired = new ServiceDesiredCount(this, "DesiredCount", {
      cluster: this.cluster,
      revision: this.taskDefinition.taskDefinitionArn,
      ...(props.logRetention === undefined ? {} : { logRetention: props.logRetention }),
    });
    const service = new ecs.Ec2Service(this, "Service", {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      // 0 on creation, the running count on every later deploy: scaling owns the count.
      desiredCount: desired.desiredCount,
      // A deployment replaces tasks in place instead of needing spare GPUs; a task that holds a
      // batch is scale-in protected, and ECS waits for it to finish before replacing it.
      minHealthyPercent: 0,
      maxHealthyPercent: 100,
      // A task that cannot start (image, GPU driver) fails the deployment in minutes and rolls
      // back, instead of ECS retrying for hours.
      circuitBreaker: { enable: true, rollback: true },
      capacityProviderStrategies: [{ capacityProvider: this.capacityProvider.capacityProviderName, weight: 1, base: 0 }],
    });
    // The cluster creates its capacity-provider association late (in an aspect). A service whose
    // strategy names the provider must be created after that association and deleted before it,
    // or CloudFormation fails with "not associated" on create and "in use" on delete.
    Aspects.of(this.cluster).add({
      visit(node) {
        if (node instanceof ecs.CfnClusterCapacityProviderAssociations) service.node.addDependency(node);
      },
    });
    return service;
  }
}

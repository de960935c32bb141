import { Aspects, Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import * as appscaling from "aws-cdk-lib/aws-applicationautoscaling";
import * as autoscaling from "aws-cdk-lib/aws-autoscaling";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import type * as s3 from "aws-cdk-lib/aws-s3";
import { Construct } from "constructs";
import { VISIBILITY_TIMEOUT_SECONDS } from "../pipeline/queue-timing.js";
import type { DeploySettings } from "./deploy-settings.js";
import { PREFIXES } from "./storage.js";
import type { WorkQueue } from "./work-queue.js";

/** The worker's configuration, exactly the variables handlers/worker-command.ts reads. */
export interface WorkerEnvironment {
  readonly QUEUE_URL: string;
  readonly DEFAULT_MODEL: string;
  readonly DEFAULT_CROPS: string;
  readonly DROP_OUTPUT: string;
  readonly AWS_REGION: string;
  readonly GOOGLENET_EVAL_SYNSETS: string;
  readonly VISIBILITY_TIMEOUT_SECONDS: string;
}

/**
 * The deploy settings the workers use (instance types, Spot, maximum instances, the drop
 * folder's model, crops and synsets keys), documented once in deploy-settings.ts.
 */
export interface GpuWorkersProps
  extends Pick<DeploySettings, "instanceTypes" | "spot" | "maxInstances" | "defaultModelKey" | "defaultCrops" | "synsetsKey"> {
  /**
   * The VPC to run in.
   * @default a new VPC with public subnets only: instances get public IPs and no inbound rule,
   *   so nothing (no NAT gateway) is billed while the group is at zero
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Subnets for the instances when `vpc` is given.
   * @default { subnetType: PRIVATE_WITH_EGRESS } for an imported VPC; the public subnets of a created one
   */
  readonly vpcSubnets?: ec2.SubnetSelection;
  readonly bucket: s3.IBucket;
  /** A read-only bucket of input images, and the prefix the workers may read in it. */
  readonly inputBucket?: s3.IBucket;
  /**
   * Prefix readable in `inputBucket`.
   * @default "" (the whole bucket)
   */
  readonly inputPrefix?: string;
  readonly workQueue: WorkQueue;
  /** The worker image; the stack passes ContainerImage.fromAsset(repo root). */
  readonly image: ecs.ContainerImage;
  /**
   * Days the worker logs are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
}

/** One GPU per xlarge instance; the task takes nearly all of the host so it gets the GPU alone. */
const TASK_CPU_UNITS = 4096;
const TASK_MEMORY_RESERVATION_MIB = 12 * 1024;

/**
 * ECS on EC2 GPU instances that cost nothing while the queue is empty: an Auto Scaling group
 * (minimum 0) behind a capacity provider with managed scaling, and a service whose task count
 * follows the queue's backlog from 0 to `maxInstances` and back to 0. Managed scaling then adds
 * or removes instances to fit the tasks.
 */
export class GpuWorkers extends Construct {
  public readonly vpc: ec2.IVpc;
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
    const { bucket, workQueue } = props;
    const createdVpc = props.vpc === undefined;
    this.vpc =
      props.vpc ??
      new ec2.Vpc(this, "Vpc", {
        natGateways: 0,
        subnetConfiguration: [{ name: "public", subnetType: ec2.SubnetType.PUBLIC }],
        // Model and image reads stay off the internet path and cost no data processing.
        gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      });
    const vpcSubnets =
      props.vpcSubnets ?? { subnetType: createdVpc ? ec2.SubnetType.PUBLIC : ec2.SubnetType.PRIVATE_WITH_EGRESS };

    this.cluster = new ecs.Cluster(this, "Cluster", { vpc: this.vpc });

    // --- Instances -----------------------------------------------------------------------
    this.instanceRole = new iam.Role(this, "InstanceRole", {
      assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com"),
      description: "googlenet-eval GPU instances: the ECS agent only",
    });
    // The cluster would add its default agent statements (with `ecs:Submit*` and several
    // `Resource: *`) to the group's role; it gets an immutable view instead, and the policy
    // below names every action the agent uses on this cluster.
    new iam.Policy(this, "EcsAgentPolicy", {
      roles: [this.instanceRole],
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
          resources: [
            Stack.of(this).formatArn({
              service: "ecs",
              resource: "container-instance",
              resourceName: `${this.cluster.clusterName}/*`,
            }),
          ],
        }),
        new iam.PolicyStatement({
          sid: "AgentDiscoverEndpoint",
          // AWS requires "*": ecs:DiscoverPollEndpoint has no resource-level permissions.
          actions: ["ecs:DiscoverPollEndpoint"],
          resources: ["*"],
        }),
      ],
    });

    const securityGroup = new ec2.SecurityGroup(this, "InstanceSecurityGroup", {
      vpc: this.vpc,
      description: "googlenet-eval GPU workers: outbound only (S3, SQS, ECS, ECR, logs)",
      allowAllOutbound: true,
    });
    this.launchTemplate = new ec2.LaunchTemplate(this, "LaunchTemplate", {
      machineImage: ecs.EcsOptimizedImage.amazonLinux2(ecs.AmiHardwareType.GPU),
      userData: ec2.UserData.forLinux(),
      role: this.instanceRole.withoutPolicyUpdates(),
      securityGroup,
      associatePublicIpAddress: createdVpc,
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
      this.launchTemplate.userData?.addCommands("echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config");
    }

    this.autoScalingGroup = new autoscaling.AutoScalingGroup(this, "AutoScalingGroup", {
      vpc: this.vpc,
      vpcSubnets,
      minCapacity: 0,
      maxCapacity: props.maxInstances,
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
    this.capacityProvider = new ecs.AsgCapacityProvider(this, "CapacityProvider", {
      autoScalingGroup: this.autoScalingGroup,
      enableManagedScaling: true,
      enableManagedTerminationProtection: true,
      enableManagedDraining: true,
      targetCapacityPercent: 100,
    });
    this.cluster.addAsgCapacityProvider(this.capacityProvider, { spotInstanceDraining: props.spot });

    // --- Task ----------------------------------------------------------------------------
    this.logGroup = new logs.LogGroup(this, "Logs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.taskRole = new iam.Role(this, "TaskRole", {
      assumedBy: new iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
      description: "googlenet-eval worker: reads models and inputs, writes batch and drop results",
    });
    this.grantWorkerAccess(props);

    this.taskDefinition = new ecs.Ec2TaskDefinition(this, "TaskDefinition", {
      taskRole: this.taskRole,
      networkMode: ecs.NetworkMode.BRIDGE,
    });
    this.environment = {
      QUEUE_URL: workQueue.queue.queueUrl,
      DEFAULT_MODEL: `s3://${bucket.bucketName}/${props.defaultModelKey}`,
      DEFAULT_CROPS: String(props.defaultCrops),
      DROP_OUTPUT: `s3://${bucket.bucketName}/${PREFIXES.dropResults.replace(/\/$/, "")}`,
      AWS_REGION: Stack.of(this).region,
      GOOGLENET_EVAL_SYNSETS: `s3://${bucket.bucketName}/${props.synsetsKey}`,
      VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
    };
    this.container = this.taskDefinition.addContainer("worker", {
      image: props.image,
      gpuCount: 1,
      cpu: TASK_CPU_UNITS,
      memoryReservationMiB: TASK_MEMORY_RESERVATION_MIB,
      environment: { ...this.environment },
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: "worker" }),
      // SIGTERM first: the worker stops taking messages and hands its batch back (visibility 0).
      stopTimeout: Duration.seconds(120),
      // An init process reaps children and forwards SIGTERM to node, which is not PID 1 then.
      linuxParameters: new ecs.LinuxParameters(this, "LinuxParameters", { initProcessEnabled: true }),
    });

    // --- Service and scaling -------------------------------------------------------------
    this.service = new ecs.Ec2Service(this, "Service", {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: 0,
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
    const service = this.service;
    Aspects.of(this.cluster).add({
      visit(node) {
        if (node instanceof ecs.CfnClusterCapacityProviderAssociations) service.node.addDependency(node);
      },
    });

    this.scaling = this.service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: props.maxInstances });
    this.scaling.scaleOnMetric("QueueBacklog", {
      metric: workQueue.metricBacklog(),
      adjustmentType: appscaling.AdjustmentType.EXACT_CAPACITY,
      scalingSteps: backlogScalingSteps(props.maxInstances),
      // Two one-minute datapoints: a single SQS sample of 0 between batches does not stop work.
      evaluationPeriods: 2,
      cooldown: Duration.minutes(1),
    });
  }

  private grantWorkerAccess(props: GpuWorkersProps): void {
    const { bucket } = props;
    const reads = [
      bucket.arnForObjects(`${PREFIXES.models}*`),
      bucket.arnForObjects(`${PREFIXES.validation}*`),
      bucket.arnForObjects(`${PREFIXES.drop}*`),
      bucket.arnForObjects(`${PREFIXES.runs}*/manifest.json`),
    ];
    if (!props.synsetsKey.startsWith(PREFIXES.models)) reads.push(bucket.arnForObjects(props.synsetsKey));
    if (props.inputBucket) reads.push(props.inputBucket.arnForObjects(`${props.inputPrefix ?? ""}*`));
    this.taskRole.addToPolicy(new iam.PolicyStatement({ sid: "ReadInputs", actions: ["s3:GetObject"], resources: reads }));
    this.taskRole.addToPolicy(
      new iam.PolicyStatement({
        sid: "ListBucketFor404",
        // Without ListBucket S3 answers a missing key with 403, not 404, and "no such manifest
        // or model" would read as an access error. It reveals key names only.
        actions: ["s3:ListBucket"],
        resources: [bucket.bucketArn, ...(props.inputBucket ? [props.inputBucket.bucketArn] : [])],
      }),
    );
    this.taskRole.addToPolicy(
      new iam.PolicyStatement({
        sid: "WriteResults",
        // Batch results and drop results only; AbortMultipartUpload for large uploads.
        actions: ["s3:PutObject", "s3:AbortMultipartUpload"],
        resources: [bucket.arnForObjects(`${PREFIXES.runs}*/batches/*`), bucket.arnForObjects(`${PREFIXES.dropResults}*`)],
      }),
    );
    props.workQueue.queue.grantConsumeMessages(this.taskRole);
    // The agent's task-protection endpoint calls ecs:UpdateTaskProtection with these (task
    // role) credentials; the endpoint itself needs no IAM. Scoped to this cluster's tasks.
    this.cluster.grantTaskProtection(this.taskRole);
  }
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

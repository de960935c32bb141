import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { WORKER_ENV } from "../../../handlers/worker-command.js";
import { backlogScalingSteps, GPU_TASK_MEMORY_LIMIT_MIB } from "../../../infra/gpu-workers.js";
import { BATCH_DEADLINE_SECONDS, HEALTH_FILE, HEALTH_MAX_AGE_SECONDS, STOP_TIMEOUT_SECONDS } from "../../../infra/worker-task.js";
import { resourcesOfType, synthStack, workerImageTarget } from "./synth-app.js";

/** What handlers/worker-command.ts reads, plus the SDK's region: the task sets only these. */
const WORKER_VARIABLES = new Set<string>([...Object.values(WORKER_ENV), "AWS_REGION"]);
/** The ones a GPU task cannot run without. */
const REQUIRED = [WORKER_ENV.queue, WORKER_ENV.synsets, WORKER_ENV.dropInput, WORKER_ENV.dropOut, WORKER_ENV.requireGpu, WORKER_ENV.healthFile];

/** The worker container's environment as name -> value. */
function environmentOf(template: Template): Record<string, unknown> {
  const environment = new Capture();
  template.hasResourceProperties("AWS::ECS::TaskDefinition", { ContainerDefinitions: [Match.objectLike({ Environment: environment })] });
  return Object.fromEntries((environment.asArray() as { Name: string; Value: unknown }[]).map((v) => [v.Name, v.Value]));
}

let template: Template;

beforeAll(() => {
  ({ template } = synthStack());
});

describe("the worker task", () => {
  it("asks for one GPU, logs to CloudWatch and runs the image from the repository's Dockerfile", () => {
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      RequiresCompatibilities: ["EC2"],
      ContainerDefinitions: [
        Match.objectLike({
          ResourceRequirements: [{ Type: "GPU", Value: "1" }],
          LogConfiguration: Match.objectLike({ LogDriver: "awslogs" }),
          Image: { "Fn::Sub": Match.stringLikeRegexp("container-assets") },
          LinuxParameters: Match.objectLike({ InitProcessEnabled: true }),
        }),
      ],
    });
  });

  it("sets only variables the worker reads, including every one a GPU task needs, pointing into the stack's bucket", () => {
    // Act
    const variables = environmentOf(template);

    // Assess
    expect(Object.keys(variables).filter((name) => !WORKER_VARIABLES.has(name))).toEqual([]);
    for (const name of REQUIRED) expect(variables, name).toHaveProperty(name);
    expect(variables).toMatchObject({
      DEFAULT_CROPS: "144",
      REQUIRE_GPU: "true",
      ENGINE: "tfjs",
      HEALTH_FILE,
      BATCH_DEADLINE_SECONDS: String(BATCH_DEADLINE_SECONDS),
      STOP_TIMEOUT_SECONDS: String(STOP_TIMEOUT_SECONDS),
      AWS_REGION: { Ref: "AWS::Region" },
    });
    // The queue's own visibility timeout is the one the worker uses; the stack sets it once.
    expect(variables).not.toHaveProperty("VISIBILITY_TIMEOUT_SECONDS");
    expect(variables).not.toHaveProperty("DEVICE");
    // No dropMaxPixels in the context: the worker keeps its own limit.
    expect(variables).not.toHaveProperty(WORKER_ENV.dropMaxPixels);
    expect(JSON.stringify(variables.DEFAULT_MODEL)).toContain("/models/bvlc-googlenet.onnx");
    expect(JSON.stringify(variables.DROP_INPUT)).toMatch(/"s3:\/\/",\{"Ref":"StorageBucket[0-9A-F]+"\},"\/drop\/"/);
    expect(JSON.stringify(variables.DROP_OUTPUT)).toMatch(/"s3:\/\/",\{"Ref":"StorageBucket[0-9A-F]+"\},"\/drop-results"/);
    expect(JSON.stringify(variables.GOOGLENET_EVAL_SYNSETS)).toContain("/models/synset_words.txt");
  });

  it("has a hard memory limit, a health check on the worker loop's file and the longest stop timeout ECS allows", () => {
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      ContainerDefinitions: [
        Match.objectLike({
          Memory: GPU_TASK_MEMORY_LIMIT_MIB,
          MemoryReservation: 12 * 1024,
          StopTimeout: STOP_TIMEOUT_SECONDS,
          HealthCheck: {
            Command: ["CMD", "node", "dist/handlers/health-check.js", "--max-age", String(HEALTH_MAX_AGE_SECONDS)],
            Interval: 30,
            Timeout: 10,
            Retries: 3,
            StartPeriod: 300,
          },
        }),
      ],
    });
    expect(STOP_TIMEOUT_SECONDS).toBe(120);
    expect(GPU_TASK_MEMORY_LIMIT_MIB).toBeLessThan(16 * 1024);
    // A batch may run up to its deadline without a turn of the loop; the health check allows it.
    expect(HEALTH_MAX_AGE_SECONDS).toBeGreaterThan(BATCH_DEADLINE_SECONDS + 20);
  });

  it("is built from the Dockerfile's gpu-tfjs target", () => {
    expect(workerImageTarget(synthStack().stack)).toBe("gpu-tfjs");
  });
});

describe("with gpuEngine=onnxruntime", () => {
  it("runs the gpu-onnxruntime image with onnxruntime on CUDA, the GPU still required", () => {
    // Prepare
    const { stack, template: variant } = synthStack({ gpuEngine: "onnxruntime" });

    // Act
    const variables = environmentOf(variant);

    // Assess
    expect(workerImageTarget(stack)).toBe("gpu-onnxruntime");
    expect(variables).toMatchObject({ ENGINE: "onnxruntime", DEVICE: "cuda", REQUIRE_GPU: "true" });
    variant.hasResourceProperties("AWS::ECS::TaskDefinition", {
      ContainerDefinitions: [Match.objectLike({ ResourceRequirements: [{ Type: "GPU", Value: "1" }] })],
    });
  });
});

describe("the capacity", () => {
  it("is an Auto Scaling group of GPU instances that can shrink to 0", () => {
    template.hasResourceProperties("AWS::AutoScaling::AutoScalingGroup", {
      MinSize: "0",
      MaxSize: "4",
      NewInstancesProtectedFromScaleIn: true,
      NotificationConfigurations: [
        {
          TopicARN: { Ref: Match.stringLikeRegexp("^AlarmTopic") },
          NotificationTypes: Match.arrayWith([
            "autoscaling:EC2_INSTANCE_LAUNCH",
            "autoscaling:EC2_INSTANCE_LAUNCH_ERROR",
            "autoscaling:EC2_INSTANCE_TERMINATE",
            "autoscaling:EC2_INSTANCE_TERMINATE_ERROR",
          ]),
        },
      ],
      MixedInstancesPolicy: Match.objectLike({
        LaunchTemplate: Match.objectLike({ Overrides: [{ InstanceType: "g4dn.xlarge" }, { InstanceType: "g5.xlarge" }] }),
      }),
    });
    // The ECS-optimised GPU AMI on Amazon Linux 2023, resolved from its public SSM parameter at deploy time.
    const parameters = template.toJSON().Parameters as Record<string, { Default?: string }>;
    expect(Object.values(parameters).map((p) => p.Default)).toContain(
      "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id",
    );
  });

  it("joins the cluster through a capacity provider with managed scaling and termination protection", () => {
    // Prepare
    const group = new Capture();

    // Act
    template.hasResourceProperties("AWS::ECS::CapacityProvider", {
      AutoScalingGroupProvider: {
        AutoScalingGroupArn: { Ref: group },
        ManagedScaling: Match.objectLike({ Status: "ENABLED" }),
        ManagedTerminationProtection: "ENABLED",
        ManagedDraining: "ENABLED",
      },
    });

    // Assess
    expect(resourcesOfType(template, "AWS::AutoScaling::AutoScalingGroup")[group.asString()]).toMatchObject({ MinSize: "0" });
    template.hasResourceProperties("AWS::ECS::ClusterCapacityProviderAssociations", {
      CapacityProviders: [{ Ref: Match.stringLikeRegexp("CapacityProvider") }],
    });
  });

  it("keeps the instance role off the containers (IMDSv2, hop limit 1) and encrypts its volume", () => {
    template.hasResourceProperties("AWS::EC2::LaunchTemplate", {
      LaunchTemplateData: Match.objectLike({
        MetadataOptions: { HttpTokens: "required", HttpPutResponseHopLimit: 1 },
        // cdk-nag's EC26 cannot see this through the mixed-instances policy; it is acknowledged on this basis.
        BlockDeviceMappings: [{ DeviceName: "/dev/xvda", Ebs: Match.objectLike({ Encrypted: true, VolumeType: "gp3" }) }],
      }),
    });
  });

  it("runs in a cluster with Container Insights, whose task counts the no-worker alarm reads", () => {
    template.hasResourceProperties("AWS::ECS::Cluster", {
      ClusterSettings: [{ Name: "containerInsights", Value: "enabled" }],
    });
  });
});

describe("the service", () => {
  it("takes its desired count from the custom resource (0 on creation, the running count after) and places tasks through the capacity provider", () => {
    // Prepare
    const source = new Capture();

    // Act
    template.hasResourceProperties("AWS::ECS::Service", {
      DesiredCount: { "Fn::GetAtt": [source, "DesiredCount"] },
      CapacityProviderStrategy: [Match.objectLike({ CapacityProvider: { Ref: Match.stringLikeRegexp("CapacityProvider") } })],
    });

    // Assess
    const custom = template.findResources("Custom::ServiceDesiredCount");
    expect(Object.keys(custom)).toEqual([source.asString()]);
    // Read again whenever the task definition changes, i.e. just before the service is updated.
    expect(JSON.stringify(custom[source.asString()])).toMatch(/"Revision":\{"Ref":"WorkersTaskDefinition/);
  });

  it("is created after, and deleted before, the cluster's capacity-provider association", () => {
    // Prepare
    const [association] = Object.keys(resourcesOfType(template, "AWS::ECS::ClusterCapacityProviderAssociations"));

    // Assess
    expect(association).toBeDefined();
    template.hasResource("AWS::ECS::Service", { DependsOn: Match.arrayWith([association]) });
  });

  it("scales between 0 and the maximum on the queue backlog, visible plus held by a worker", () => {
    // Prepare
    const expression = new Capture();
    const metrics = new Capture();

    // Act
    template.hasResourceProperties("AWS::ApplicationAutoScaling::ScalableTarget", {
      MinCapacity: 0,
      MaxCapacity: 4,
      ScalableDimension: "ecs:service:DesiredCount",
    });
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      ComparisonOperator: "LessThanOrEqualToThreshold",
      Threshold: 0,
      Metrics: Match.arrayWith([Match.objectLike({ Expression: expression, ReturnData: true })]),
    });
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      Threshold: 1,
      Metrics: metrics,
    });

    // Assess
    const names = (metrics.asArray() as { MetricStat?: { Metric: { MetricName: string; Namespace: string } } }[])
      .flatMap((m) => (m.MetricStat ? [`${m.MetricStat.Metric.Namespace}/${m.MetricStat.Metric.MetricName}`] : []))
      .sort();
    expect(names).toEqual(["AWS/SQS/ApproximateNumberOfMessagesVisible", "googlenet-eval/MessagesHeld"]);
    expect(expression.asString()).toBe("visible + FILL(held, 0)");
    template.hasResourceProperties("AWS::ApplicationAutoScaling::ScalingPolicy", {
      StepScalingPolicyConfiguration: Match.objectLike({
        AdjustmentType: "ExactCapacity",
        StepAdjustments: [{ MetricIntervalUpperBound: 0, ScalingAdjustment: 0 }],
      }),
    });
    template.hasResourceProperties("AWS::ApplicationAutoScaling::ScalingPolicy", {
      StepScalingPolicyConfiguration: Match.objectLike({
        AdjustmentType: "ExactCapacity",
        StepAdjustments: Match.arrayWith([{ MetricIntervalLowerBound: 3, ScalingAdjustment: 4 }]),
      }),
    });
  });
});

describe.each([
  { maxTasks: 1, counts: [0, 1] },
  { maxTasks: 4, counts: [0, 1, 2, 4] },
  { maxTasks: 6, counts: [0, 1, 2, 4, 6] },
])("backlogScalingSteps($maxTasks)", ({ maxTasks, counts }) => {
  it("goes from 0 tasks at an empty backlog to the maximum, never more tasks than messages", () => {
    // Act
    const steps = backlogScalingSteps(maxTasks);

    // Assess
    expect(steps.map((s) => s.change)).toEqual(counts);
    expect(steps[0]).toEqual({ upper: 0, change: 0 });
    for (const step of steps.slice(1)) expect(step.change).toBeLessThanOrEqual(step.lower ?? 0);
  });
});

describe.each([
  { spot: false, onDemandPercent: 100, draining: false },
  { spot: true, onDemandPercent: 0, draining: true },
])("with spot=$spot", ({ spot, onDemandPercent, draining }) => {
  it(`buys ${onDemandPercent}% on-demand and ${draining ? "enables" : "leaves off"} Spot draining`, () => {
    // Prepare
    const { template: variant } = synthStack({ spot: String(spot), instanceTypes: "g5.xlarge", maxInstances: "2" });
    const userData = new Capture();

    // Act
    variant.hasResourceProperties("AWS::EC2::LaunchTemplate", {
      LaunchTemplateData: Match.objectLike({ UserData: { "Fn::Base64": userData } }),
    });

    // Assess
    variant.hasResourceProperties("AWS::AutoScaling::AutoScalingGroup", {
      MinSize: "0",
      MaxSize: "2",
      MixedInstancesPolicy: Match.objectLike({
        InstancesDistribution: Match.objectLike({ OnDemandPercentageAboveBaseCapacity: onDemandPercent }),
        LaunchTemplate: Match.objectLike({ Overrides: [{ InstanceType: "g5.xlarge" }] }),
      }),
    });
    expect(JSON.stringify(userData.asObject()).includes("ECS_ENABLE_SPOT_INSTANCE_DRAINING=true")).toBe(draining);
  });
});

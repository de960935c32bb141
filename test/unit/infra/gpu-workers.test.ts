import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { WORKER_ENV } from "../../../handlers/worker-command.js";
import { backlogScalingSteps } from "../../../infra/gpu-workers.js";
import { VISIBILITY_TIMEOUT_SECONDS } from "../../../pipeline/queue-timing.js";
import { resourcesOfType, synthStack } from "../../helpers/synth-stack.js";

/** What handlers/worker-command.ts reads, plus the SDK's region: the task sets exactly these. */
const WORKER_VARIABLES = [...Object.values(WORKER_ENV), "AWS_REGION"].sort();

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

  it("sets exactly the worker's environment variables, pointing into the stack's bucket", () => {
    // Prepare
    const environment = new Capture();

    // Act
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      ContainerDefinitions: [Match.objectLike({ Environment: environment })],
    });

    // Assess
    const variables = Object.fromEntries((environment.asArray() as { Name: string; Value: unknown }[]).map((v) => [v.Name, v.Value]));
    expect(Object.keys(variables).sort()).toEqual(WORKER_VARIABLES);
    expect(variables.DEFAULT_CROPS).toBe("144");
    expect(variables.VISIBILITY_TIMEOUT_SECONDS).toBe(String(VISIBILITY_TIMEOUT_SECONDS));
    expect(JSON.stringify(variables.DEFAULT_MODEL)).toContain("/models/bvlc-googlenet.onnx");
    expect(JSON.stringify(variables.DROP_OUTPUT)).toMatch(/"s3:\/\/",\{"Ref":"StorageBucket[0-9A-F]+"\},"\/drop-results"/);
    expect(JSON.stringify(variables.GOOGLENET_EVAL_SYNSETS)).toContain("/models/synset_words.txt");
    expect(variables.AWS_REGION).toEqual({ Ref: "AWS::Region" });
  });
});

describe("the capacity", () => {
  it("is an Auto Scaling group of GPU instances that can shrink to 0", () => {
    template.hasResourceProperties("AWS::AutoScaling::AutoScalingGroup", {
      MinSize: "0",
      MaxSize: "4",
      NewInstancesProtectedFromScaleIn: true,
      MixedInstancesPolicy: Match.objectLike({
        LaunchTemplate: Match.objectLike({ Overrides: [{ InstanceType: "g4dn.xlarge" }, { InstanceType: "g5.xlarge" }] }),
      }),
    });
    // The ECS-optimised GPU AMI, resolved from its public SSM parameter at deploy time.
    const parameters = template.toJSON().Parameters as Record<string, { Default?: string }>;
    expect(Object.values(parameters).map((p) => p.Default)).toContain(
      "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id",
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

  it("keeps the instance role off the containers (IMDSv2, hop limit 1)", () => {
    template.hasResourceProperties("AWS::EC2::LaunchTemplate", {
      LaunchTemplateData: Match.objectLike({ MetadataOptions: { HttpTokens: "required", HttpPutResponseHopLimit: 1 } }),
    });
  });
});

describe("the service", () => {
  it("starts at 0 tasks and places them through the capacity provider", () => {
    template.hasResourceProperties("AWS::ECS::Service", {
      DesiredCount: 0,
      CapacityProviderStrategy: [Match.objectLike({ CapacityProvider: { Ref: Match.stringLikeRegexp("CapacityProvider") } })],
    });
  });

  it("is created after, and deleted before, the cluster's capacity-provider association", () => {
    // Prepare
    const [association] = Object.keys(resourcesOfType(template, "AWS::ECS::ClusterCapacityProviderAssociations"));

    // Assess
    expect(association).toBeDefined();
    template.hasResource("AWS::ECS::Service", { DependsOn: Match.arrayWith([association]) });
  });

  it("scales between 0 and the maximum on the queue backlog, visible plus in flight", () => {
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
    expect(names).toEqual(["AWS/SQS/ApproximateNumberOfMessagesNotVisible", "AWS/SQS/ApproximateNumberOfMessagesVisible"]);
    expect(expression.asString()).toBe("visible + inFlight");
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

import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { WORKER_ENV } from "../../../handlers/worker-command.js";
import { HEALTH_MAX_AGE_SECONDS, STOP_TIMEOUT_SECONDS } from "../../../infra/worker-task.js";
import { synthStack, workerImageTarget } from "./synth-app.js";

let template: Template;
let target: string | undefined;

beforeAll(() => {
  const { stack, template: synthesized } = synthStack({ workers: "cpu", cpuWorkerCpu: "2048", cpuWorkerMemoryMiB: "6144", dropMaxPixels: "24000000" });
  template = synthesized;
  target = workerImageTarget(stack);
});

describe("workers=cpu", () => {
  it("runs the worker on Fargate Spot only, sized by context, from the Dockerfile's cpu target", () => {
    expect(target).toBe("cpu");
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      RequiresCompatibilities: ["FARGATE"],
      Cpu: "2048",
      Memory: "6144",
      RuntimePlatform: { CpuArchitecture: "X86_64", OperatingSystemFamily: "LINUX" },
    });
    template.hasResourceProperties("AWS::ECS::Service", {
      CapacityProviderStrategy: [{ CapacityProvider: "FARGATE_SPOT", Weight: 1 }],
      NetworkConfiguration: { AwsvpcConfiguration: Match.objectLike({ AssignPublicIp: "ENABLED" }) },
      DesiredCount: { "Fn::GetAtt": [Match.stringLikeRegexp("DesiredCount"), "DesiredCount"] },
    });
    template.hasResourceProperties("AWS::ECS::ClusterCapacityProviderAssociations", {
      CapacityProviders: Match.arrayWith(["FARGATE_SPOT"]),
    });
  });

  it("has no GPU, no Auto Scaling group, and runs onnxruntime on the CPU without REQUIRE_GPU", () => {
    // Prepare
    const environment = new Capture();

    // Act
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      ContainerDefinitions: [Match.objectLike({ Environment: environment, ResourceRequirements: Match.absent() })],
    });

    // Assess
    const variables = Object.fromEntries((environment.asArray() as { Name: string; Value: unknown }[]).map((v) => [v.Name, v.Value]));
    expect(variables).toMatchObject({ [WORKER_ENV.engine]: "onnxruntime", [WORKER_ENV.device]: "cpu", [WORKER_ENV.dropMaxPixels]: "24000000" });
    expect(variables).not.toHaveProperty(WORKER_ENV.requireGpu);
    template.resourceCountIs("AWS::AutoScaling::AutoScalingGroup", 0);
  });

  it("keeps the health check, the memory limit and the stop timeout of the GPU task", () => {
    template.hasResourceProperties("AWS::ECS::TaskDefinition", {
      ContainerDefinitions: [
        Match.objectLike({
          Memory: 6144,
          StopTimeout: STOP_TIMEOUT_SECONDS,
          HealthCheck: Match.objectLike({ Command: ["CMD", "node", "dist/handlers/health-check.js", "--max-age", String(HEALTH_MAX_AGE_SECONDS)] }),
        }),
      ],
    });
  });

  it("scales from zero on the same backlog", () => {
    template.hasResourceProperties("AWS::ApplicationAutoScaling::ScalableTarget", { MinCapacity: 0, MaxCapacity: 4, ScalableDimension: "ecs:service:DesiredCount" });
    template.hasResourceProperties("AWS::ApplicationAutoScaling::ScalingPolicy", {
      StepScalingPolicyConfiguration: Match.objectLike({ AdjustmentType: "ExactCapacity", StepAdjustments: [{ MetricIntervalUpperBound: 0, ScalingAdjustment: 0 }] }),
    });
  });
});

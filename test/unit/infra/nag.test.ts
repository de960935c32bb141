import { describe, expect, it } from "vitest";
import { nagReport } from "./synth-app.js";

/**
 * cdk-nag's AwsSolutions pack on the app exactly as infra/app.ts builds it. Every error is
 * either fixed or acknowledged on the construct it concerns, with a reason; a new finding
 * fails here with its rule and construct path.
 */
describe.each([
  { variant: "the defaults (GPU workers, tfjs)", context: {} },
  { variant: "gpuEngine=onnxruntime", context: { gpuEngine: "onnxruntime" } },
  { variant: "workers=cpu", context: { workers: "cpu" } },
  {
    variant: "spot, an input bucket and an operator's alarm topic",
    context: { spot: "true", inputBucketName: "imagenet-val", inputPrefix: "val", alarmTopicArn: "arn:aws:sns:us-east-1:123456789012:ops" },
  },
])("cdk-nag AwsSolutions with $variant", ({ context }) => {
  const report = nagReport(context);

  it("leaves no finding open", () => {
    expect(report.open.map((f) => `${f.severity} ${f.rule} at ${f.path}`)).toEqual([]);
    expect(report.thrown).toBeUndefined();
  });

  it("acknowledges each remaining finding with a reason a reviewer can check", () => {
    expect(report.acknowledged.length).toBeGreaterThan(0);
    for (const finding of report.acknowledged) {
      expect(finding.reason, `${finding.rule} at ${finding.path}`).toMatch(/\S{3,}.{40,}/);
    }
  });

  it("fixes, rather than acknowledges, access logs, flow logs, Container Insights, the Lambda runtime and ASG notifications", () => {
    const rules = new Set(report.acknowledged.map((f) => f.rule.replace(/\[.*$/, "")));
    for (const fixed of ["S1", "VPC7", "ECS4", "L1", "AS3", "SNS3", "SQS4", "S10"]) expect(rules.has(`AwsSolutions-${fixed}`)).toBe(false);
  });
});

import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { resourcesOfType, synthStack } from "./synth-app.js";

let template: Template;

beforeAll(() => {
  ({ template } = synthStack());
});

/** The alarm whose description starts with `start`. */
function alarmDescribed(t: Template, start: string): Record<string, unknown> {
  const found = Object.values(resourcesOfType(t, "AWS::CloudWatch::Alarm")).filter((a) => String(a.AlarmDescription ?? "").startsWith(start));
  expect(found, start).toHaveLength(1);
  return found[0] ?? {};
}

const topicAction = [{ Ref: Match.stringLikeRegexp("^AlarmTopic") }];

describe("the alarm topic", () => {
  it("is created, TLS-only, and output so an email can subscribe, when context names none", () => {
    template.resourceCountIs("AWS::SNS::Topic", 1);
    template.hasResourceProperties("AWS::SNS::TopicPolicy", {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } })]) },
    });
    template.hasOutput("AlarmTopicArn", { Value: { Ref: Match.stringLikeRegexp("^AlarmTopic") } });
  });

  it("is the operator's topic when context names one", () => {
    const arn = "arn:aws:sns:us-east-1:123456789012:ops";
    const { template: variant } = synthStack({ alarmTopicArn: arn });
    variant.resourceCountIs("AWS::SNS::Topic", 0);
    variant.hasOutput("AlarmTopicArn", { Value: arn });
    const notifying = Object.values(resourcesOfType(variant, "AWS::CloudWatch::Alarm")).filter((a) => JSON.stringify(a.AlarmActions ?? "").includes(":sns:"));
    expect(notifying).toHaveLength(4);
    for (const alarm of notifying) expect(alarm.AlarmActions).toEqual([arn]);
  });
});

describe("the alarms", () => {
  it("are the four operational alarms, all notifying the topic, plus the two the backlog scaling policy owns", () => {
    const alarms = Object.values(resourcesOfType(template, "AWS::CloudWatch::Alarm"));
    const notifying = alarms.filter((a) => a.AlarmActions !== undefined && JSON.stringify(a.AlarmActions).includes("AlarmTopic"));
    expect(alarms).toHaveLength(6);
    expect(notifying).toHaveLength(4);
  });

  it("fire when a batch is parked in the dead-letter queue", () => {
    const alarm = alarmDescribed(template, "A batch or drop-folder event failed on every delivery");
    expect(alarm).toMatchObject({ MetricName: "ApproximateNumberOfMessagesVisible", Threshold: 0, AlarmActions: [{ Ref: expect.stringMatching(/^AlarmTopic/) }] });
  });

  it("fire when the oldest message has waited longer than queueAgeAlarmHours", () => {
    // Act
    const alarm = alarmDescribed(template, "A message has waited in the work queue for more than 6 hours");
    const { template: variant } = synthStack({ queueAgeAlarmHours: "2" });

    // Assess
    expect(alarm).toMatchObject({
      Namespace: "AWS/SQS",
      MetricName: "ApproximateAgeOfOldestMessage",
      Statistic: "Maximum",
      Threshold: 6 * 3600,
      ComparisonOperator: "GreaterThanThreshold",
      Dimensions: [{ Name: "QueueName", Value: { "Fn::GetAtt": [expect.stringMatching(/^WorkQueue[0-9A-F]+$/), "QueueName"] } }],
    });
    expect(alarmDescribed(variant, "A message has waited in the work queue for more than 2 hours").Threshold).toBe(2 * 3600);
  });

  it("fire when messages have waited 30 minutes with no worker task running", () => {
    // Prepare
    const metrics = new Capture();

    // Act
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      AlarmDescription: Match.stringLikeRegexp("^Messages have waited in the work queue for 30 minutes with no worker task running"),
      Metrics: metrics,
      Threshold: 1,
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      EvaluationPeriods: 6,
      DatapointsToAlarm: 6,
      AlarmActions: topicAction,
    });

    // Assess
    const list = metrics.asArray() as { Id: string; Expression?: string; MetricStat?: { Metric: { Namespace: string; MetricName: string; Dimensions: { Name: string }[] }; Period: number } }[];
    expect(list.find((m) => m.Expression)?.Expression).toBe("IF(FILL(visible, 0) > 0 AND FILL(running, 0) < 1, 1, 0)");
    const byId = Object.fromEntries(list.filter((m) => m.MetricStat).map((m) => [m.Id, m.MetricStat]));
    expect(byId.visible?.Metric).toMatchObject({ Namespace: "AWS/SQS", MetricName: "ApproximateNumberOfMessagesVisible" });
    expect(byId.running?.Metric).toMatchObject({ Namespace: "ECS/ContainerInsights", MetricName: "RunningTaskCount" });
    expect(byId.running?.Metric.Dimensions.map((d) => d.Name).sort()).toEqual(["ClusterName", "ServiceName"]);
    expect(byId.running?.Period).toBe(300);
  });

  it("fire when the aggregator Lambda reports an error", () => {
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      Namespace: "AWS/Lambda",
      MetricName: "Errors",
      Statistic: "Sum",
      Dimensions: [{ Name: "FunctionName", Value: { Ref: Match.stringLikeRegexp("^AggregatorFunction") } }],
      Threshold: 0,
      ComparisonOperator: "GreaterThanThreshold",
      AlarmActions: topicAction,
    });
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HeldMetric, queueNameOf } from "../../queue/held-metric.js";

const QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/GoogLeNetEval-WorkQueueAD162499-abc";

/**
 * The rules of CloudWatch's embedded metric format that decide whether a log line becomes a
 * metric (AWS "Specification: Embedded metric format"): `_aws` with a millisecond Timestamp and
 * CloudWatchMetrics directives; every dimension and metric named there is a root member, the
 * dimensions strings and the metrics numbers.
 */
function emfMetrics(entry: Record<string, unknown>): { namespace: string; timestamp: number; dimensions: Record<string, string>; values: Record<string, number> } {
  const aws = entry._aws as { Timestamp: unknown; CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit?: string }[] }[] };
  expect(Number.isInteger(aws.Timestamp)).toBe(true);
  expect(aws.CloudWatchMetrics).toHaveLength(1);
  const [directive] = aws.CloudWatchMetrics;
  if (directive === undefined) throw new Error("no directive");
  const dimensions = Object.fromEntries(directive.Dimensions.flat().map((name) => [name, entry[name]]));
  const values = Object.fromEntries(directive.Metrics.map((metric) => [metric.Name, entry[metric.Name]]));
  for (const value of Object.values(dimensions)) expect(typeof value).toBe("string");
  for (const value of Object.values(values)) expect(typeof value).toBe("number");
  return { namespace: directive.Namespace, timestamp: aws.Timestamp as number, dimensions: dimensions as Record<string, string>, values: values as Record<string, number> };
}

describe("HeldMetric", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it("a message held from 00:00:55 to 00:02:05 is counted once in each of the three minutes it touched", () => {
    // Prepare
    vi.setSystemTime(new Date("2026-12-06T00:00:55.000Z"));
    const entries: Record<string, unknown>[] = [];
    const metric = new HeldMetric(QUEUE_URL, "m-1", (entry) => entries.push(entry));

    // Act
    metric.start();
    vi.advanceTimersByTime(70_000);
    metric.stop();
    vi.advanceTimersByTime(600_000);

    // Assess: one line per minute, stamped with the minute's start; none after stop().
    const metrics = entries.map(emfMetrics);
    expect(metrics.map((m) => new Date(m.timestamp).toISOString())).toEqual([
      "2026-12-06T00:00:00.000Z",
      "2026-12-06T00:01:00.000Z",
      "2026-12-06T00:02:00.000Z",
    ]);
    for (const m of metrics) {
      expect(m).toMatchObject({ namespace: "googlenet-eval", dimensions: { QueueName: "GoogLeNetEval-WorkQueueAD162499-abc" }, values: { MessagesHeld: 1 } });
    }
    expect(entries[0]).toMatchObject({ event: "message-held", messageId: "m-1" });
  });

  it.each([
    [QUEUE_URL, "GoogLeNetEval-WorkQueueAD162499-abc"],
    ["http://127.0.0.1:4566/000000000000/work/", "work"],
    ["http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q1?x=1", "q1"],
  ])("queueNameOf(%s) is %s", (url, name) => {
    expect(queueNameOf(url)).toBe(name);
  });
});

import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { resourcesOfType, synthStack } from "./synth-app.js";

/**
 * What the worker service's scaling does for a given state of the queue and the workers, worked
 * out from the synthesized template alone: the scaling alarms' metric math, evaluated as
 * CloudWatch does (a metric without data is missing, and so is a sum with a missing term, unless
 * FILL gives a value), and the step policies' exact task counts. The inputs are what CloudWatch
 * would read: SQS's two queue metrics, and the workers' own MessagesHeld.
 */

/** One minute of readings, by "Namespace/MetricName"; undefined is no data. */
type Readings = Readonly<Record<string, number | undefined>>;

interface MetricQuery {
  readonly Id: string;
  readonly Expression?: string;
  readonly ReturnData?: boolean;
  readonly MetricStat?: { Metric: { Namespace: string; MetricName: string; Dimensions?: { Name: string; Value: unknown }[] }; Stat: string; Period: number };
}

interface StepAdjustment {
  readonly MetricIntervalLowerBound?: number;
  readonly MetricIntervalUpperBound?: number;
  readonly ScalingAdjustment: number;
}

/** Evaluates the `a + b + FILL(c, 0)` expressions the scaling alarm may use; anything else fails the test. */
function evaluate(queries: readonly MetricQuery[], readings: Readings): number | undefined {
  const byId = new Map(queries.map((q) => [q.Id, q]));
  const valueOf = (id: string): number | undefined => {
    const stat = byId.get(id)?.MetricStat;
    if (stat === undefined) throw new Error(`no metric with id ${id}`);
    return readings[`${stat.Metric.Namespace}/${stat.Metric.MetricName}`];
  };
  const expression = queries.find((q) => q.ReturnData !== false && q.Expression)?.Expression;
  if (expression === undefined) throw new Error("the alarm has no expression");
  let sum: number | undefined = 0;
  for (const term of expression.split("+").map((t) => t.trim())) {
    const fill = /^FILL\((\w+),\s*(-?\d+(?:\.\d+)?)\)$/.exec(term);
    const value = fill ? (valueOf(fill[1] as string) ?? Number(fill[2])) : /^\w+$/.test(term) ? valueOf(term) : Number.NaN;
    if (Number.isNaN(value)) throw new Error(`cannot evaluate "${term}" in "${expression}"`);
    sum = sum === undefined || value === undefined ? undefined : sum + value;
  }
  return sum;
}

/**
 * The step whose interval (relative to the alarm's threshold) holds `value`. AWS: above the
 * threshold the lower bound is inclusive and the upper exclusive; below it, the other way round.
 */
function stepFor(steps: readonly StepAdjustment[], threshold: number, value: number, above: boolean): number | undefined {
  const offset = value - threshold;
  const holds = (s: StepAdjustment): boolean => {
    const lower = s.MetricIntervalLowerBound ?? -Infinity;
    const upper = s.MetricIntervalUpperBound ?? Infinity;
    return above ? lower <= offset && offset < upper : lower < offset && offset <= upper;
  };
  return steps.find(holds)?.ScalingAdjustment;
}

interface ScalingRules {
  readonly queries: readonly MetricQuery[];
  readonly low: { threshold: number; steps: StepAdjustment[] };
  readonly high: { threshold: number; steps: StepAdjustment[] };
}

/** The backlog alarms and their step policies, as synthesized. */
function scalingRules(template: Template): ScalingRules {
  const alarms = Object.values(resourcesOfType(template, "AWS::CloudWatch::Alarm")).filter((a) =>
    (a.AlarmActions as unknown[] | undefined)?.some((action) => JSON.stringify(action).includes("QueueBacklog")),
  );
  const policies = resourcesOfType(template, "AWS::ApplicationAutoScaling::ScalingPolicy");
  const rule = (operator: string): { threshold: number; steps: StepAdjustment[]; queries: MetricQuery[] } => {
    const alarm = alarms.find((a) => a.ComparisonOperator === operator);
    if (alarm === undefined) throw new Error(`no backlog alarm with ${operator}`);
    const policyId = (alarm.AlarmActions as { Ref: string }[])[0]?.Ref ?? "";
    const config = policies[policyId]?.StepScalingPolicyConfiguration as { AdjustmentType: string; StepAdjustments: StepAdjustment[] };
    expect(config.AdjustmentType).toBe("ExactCapacity");
    return { threshold: alarm.Threshold as number, steps: config.StepAdjustments, queries: alarm.Metrics as MetricQuery[] };
  };
  const low = rule("LessThanOrEqualToThreshold");
  const high = rule("GreaterThanOrEqualToThreshold");
  expect(high.queries).toEqual(low.queries);
  return { queries: high.queries, low, high };
}

/** The task count the policies set for one minute's readings; undefined: no alarm acts (no data). */
function desiredTasks(rules: ScalingRules, readings: Readings): { backlog: number | undefined; tasks: number | undefined } {
  const backlog = evaluate(rules.queries, readings);
  if (backlog === undefined) return { backlog, tasks: undefined };
  if (backlog <= rules.low.threshold) return { backlog, tasks: stepFor(rules.low.steps, rules.low.threshold, backlog, false) };
  if (backlog >= rules.high.threshold) return { backlog, tasks: stepFor(rules.high.steps, rules.high.threshold, backlog, true) };
  return { backlog, tasks: undefined };
}

const VISIBLE = "AWS/SQS/ApproximateNumberOfMessagesVisible";
const NOT_VISIBLE = "AWS/SQS/ApproximateNumberOfMessagesNotVisible";
const HELD = "googlenet-eval/MessagesHeld";

describe("the GPU service's backlog scaling, worked out from the template (maxInstances 4)", () => {
  let template: Template;
  let rules: ScalingRules;

  beforeAll(() => {
    ({ template } = synthStack());
    rules = scalingRules(template);
  });

  it("5 batches sitting out a backoff, nothing visible, nothing held: the old metric keeps 4 tasks, this one scales to 0", () => {
    // Prepare: what CloudWatch reads in such a minute. SQS counts the 5 hidden messages as not
    // visible; no worker holds a message, so none writes MessagesHeld and it has no data.
    const readings: Readings = { [VISIBLE]: 0, [NOT_VISIBLE]: 5, [HELD]: undefined };
    // f6a092f's alarm, as it synthesized: "visible + inFlight", inFlight = NotVisible (Maximum).
    const old = {
      ...rules,
      queries: [
        { Id: "visible", MetricStat: { Metric: { Namespace: "AWS/SQS", MetricName: "ApproximateNumberOfMessagesVisible" }, Stat: "Maximum", Period: 60 }, ReturnData: false },
        { Id: "inFlight", MetricStat: { Metric: { Namespace: "AWS/SQS", MetricName: "ApproximateNumberOfMessagesNotVisible" }, Stat: "Maximum", Period: 60 }, ReturnData: false },
        { Id: "expr_1", Expression: "visible + inFlight" },
      ],
    };

    // Act
    const before = desiredTasks(old, readings);
    const after = desiredTasks(rules, readings);

    // Assess: 0 + 5 = 5, at or above the 4-task step (lower bound 4 = threshold 1 + 3): 4 idle GPU
    // tasks for the whole backoff; 0 + FILL(no data, 0) = 0, the 0-task step.
    expect(before).toEqual({ backlog: 5, tasks: 4 });
    expect(after).toEqual({ backlog: 0, tasks: 0 });
  });

  it.each([
    { state: "a run just planned, 10 batches visible, no worker yet", visible: 10, held: undefined, backlog: 10, tasks: 4 },
    { state: "the last batch held by a worker, nothing visible", visible: 0, held: 1, backlog: 1, tasks: 1 },
    { state: "2 batches held and 1 visible, 5 more in backoff", visible: 1, held: 2, backlog: 3, tasks: 2 },
    { state: "an idle queue", visible: 0, held: undefined, backlog: 0, tasks: 0 },
  ])("$state: backlog $backlog, $tasks tasks", ({ visible, held, backlog, tasks }) => {
    expect(desiredTasks(rules, { [VISIBLE]: visible, [NOT_VISIBLE]: 5, [HELD]: held })).toEqual({ backlog, tasks });
  });

  it("reads held messages from the workers' metric for this queue, one-minute Sums, and never SQS's not-visible count", () => {
    // Prepare
    const dimensions = new Capture();

    // Act
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      Metrics: Match.arrayWith([
        Match.objectLike({
          Id: "held",
          MetricStat: { Metric: { Namespace: "googlenet-eval", MetricName: "MessagesHeld", Dimensions: dimensions }, Period: 60, Stat: "Sum" },
        }),
      ]),
    });

    // Assess
    const [queueId] = Object.keys(resourcesOfType(template, "AWS::SQS::Queue")).filter((id) => id.startsWith("WorkQueue") && !id.includes("DeadLetter"));
    expect(dimensions.asArray()).toEqual([{ Name: "QueueName", Value: { "Fn::GetAtt": [queueId, "QueueName"] } }]);
    expect(JSON.stringify(rules.queries)).not.toContain("ApproximateNumberOfMessagesNotVisible");
  });
});

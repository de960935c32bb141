import { Duration } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cloudwatchActions from "aws-cdk-lib/aws-cloudwatch-actions";
import type * as sns from "aws-cdk-lib/aws-sns";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import {
  HEARTBEAT_SECONDS,
  MAX_RECEIVE_COUNT,
  VISIBILITY_TIMEOUT_SECONDS,
  assertHeartbeatFits,
} from "../pipeline/queue-timing.js";

export interface WorkQueueProps {
  /**
   * Topic the dead-letter alarm notifies.
   * @default undefined - the alarm has no action; it shows in the CloudWatch console
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * How long a message (a batch, or a drop-folder event) may wait in the queue.
   * @default Duration.days(14) - a run planned before a long weekend is still there after it
   */
  readonly retention?: Duration;
}

/**
 * The work queue (one message per batch of a run, or per S3 drop-folder event) and its
 * dead-letter queue. The visibility timeout and heartbeat come from pipeline/queue-timing.ts,
 * the same constants the worker uses, so a held batch cannot reappear while the worker is alive.
 */
export class WorkQueue extends Construct {
  public readonly queue: sqs.Queue;
  public readonly deadLetterQueue: sqs.Queue;
  public readonly deadLetterAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: WorkQueueProps = {}) {
    super(scope, id);
    assertHeartbeatFits(HEARTBEAT_SECONDS, VISIBILITY_TIMEOUT_SECONDS);

    this.deadLetterQueue = new sqs.Queue(this, "DeadLetterQueue", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, "Queue", {
      // SQS-managed keys, not KMS: S3 event notifications can deliver to SSE-SQS queues without
      // a key policy, and there is no per-request KMS charge on 50,000-image runs.
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(VISIBILITY_TIMEOUT_SECONDS),
      receiveMessageWaitTime: Duration.seconds(20),
      retentionPeriod: props.retention ?? Duration.days(14),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: MAX_RECEIVE_COUNT },
    });

    this.deadLetterAlarm = new cloudwatch.Alarm(this, "DeadLetterAlarm", {
      alarmDescription:
        "A batch or drop-folder event failed on every delivery and was parked in the dead-letter queue; its images have no results until it is redriven.",
      metric: this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(1),
        statistic: cloudwatch.Stats.MAXIMUM,
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      // An idle, empty queue stops publishing metrics; that is not a failure.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (props.alarmTopic) this.deadLetterAlarm.addAlarmAction(new cloudwatchActions.SnsAction(props.alarmTopic));
  }

  /**
   * The queue's backlog: visible messages plus those held by a worker. Scaling on this, not on
   * visible messages alone, keeps a task alive while it still works on the last batches.
   */
  metricBacklog(period: Duration = Duration.minutes(1)): cloudwatch.MathExpression {
    return new cloudwatch.MathExpression({
      label: "Backlog (visible + in flight)",
      expression: "visible + inFlight",
      usingMetrics: {
        visible: this.queue.metricApproximateNumberOfMessagesVisible({ period, statistic: cloudwatch.Stats.MAXIMUM }),
        inFlight: this.queue.metricApproximateNumberOfMessagesNotVisible({ period, statistic: cloudwatch.Stats.MAXIMUM }),
      },
      period,
    });
  }
}

import { Duration } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cloudwatchActions from "aws-cdk-lib/aws-cloudwatch-actions";
import type * as sns from "aws-cdk-lib/aws-sns";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import {
  HELD_METRIC_PERIOD_SECONDS,
  MESSAGES_HELD_METRIC,
  QUEUE_NAME_DIMENSION,
  WORKER_METRICS_NAMESPACE,
  HEARTBEAT_SECONDS,
  MAX_RECEIVE_COUNT,
  VISIBILITY_TIMEOUT_SECONDS,
  assertHeartbeatFits,
} from "../queue/queue-timing.js";

/** How long a message may wait in the work queue: a run planned on a Friday is still there on Monday. */
export const WORK_QUEUE_RETENTION = Duration.days(4);

/**
 * How long the dead-letter queue keeps a message. SQS measures retention from the message's
 * first enqueue, not from its move to the dead-letter queue, so this must be longer than the
 * work queue's or a parked batch could expire before anyone looks at it.
 */
export const DEAD_LETTER_RETENTION = Duration.days(14);

export interface WorkQueueProps {
  /**
   * Topic the queue's alarms notify.
   * @default undefined - the alarms have no action; they show in the CloudWatch console
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * How long a message (a batch, or a drop-folder event) may wait in the queue; shorter than the
   * dead-letter queue's 14 days.
   * @default WORK_QUEUE_RETENTION (4 days)
   */
  readonly retention?: Duration;
  /**
   * Age of the oldest message at which the queue-age alarm fires: a stuck run, no GPU capacity,
   * or a run larger than the fleet finishes in this time.
   * @default Duration.hours(6)
   */
  readonly oldestMessageAlarmAge?: Duration;
}

/**
 * The work queue (one message per batch of a run, or per S3 drop-folder event) and its
 * dead-letter queue. The visibility timeout and heartbeat come from queue/queue-timing.ts,
 * the same constants the worker uses, so a held batch cannot reappear while the worker is alive.
 */
export class WorkQueue extends Construct {
  public readonly queue: sqs.Queue;
  public readonly deadLetterQueue: sqs.Queue;
  public readonly deadLetterAlarm: cloudwatch.Alarm;
  public readonly oldestMessageAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: WorkQueueProps = {}) {
    super(scope, id);
    assertHeartbeatFits(HEARTBEAT_SECONDS, VISIBILITY_TIMEOUT_SECONDS);

    this.deadLetterQueue = new sqs.Queue(this, "DeadLetterQueue", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: DEAD_LETTER_RETENTION,
    });
    this.queue = new sqs.Queue(this, "Queue", {
      // SQS-managed keys, not KMS: S3 event notifications can deliver to SSE-SQS queues without
      // a key policy, and there is no per-request KMS charge on 50,000-image runs.
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(VISIBILITY_TIMEOUT_SECONDS),
      receiveMessageWaitTime: Duration.seconds(20),
      retentionPeriod: props.retention ?? WORK_QUEUE_RETENTION,
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
    this.oldestMessageAlarm = this.ageAlarm(props.oldestMessageAlarmAge ?? Duration.hours(6));
    if (props.alarmTopic) {
      for (const alarm of [this.deadLetterAlarm, this.oldestMessageAlarm]) alarm.addAlarmAction(new cloudwatchActions.SnsAction(props.alarmTopic));
    }
  }

  /**
   * The oldest message has waited longer than `age`: no worker takes the queue's messages
   * (no GPU quota or capacity, a crashing image), or a run is larger than the fleet clears in
   * that time. Five-minute maxima over 15 minutes, so one slow batch does not page anyone.
   */
  private ageAlarm(age: Duration): cloudwatch.Alarm {
    return new cloudwatch.Alarm(this, "OldestMessageAlarm", {
      alarmDescription: `A message has waited in the work queue for more than ${age.toHumanString()}: no worker is taking messages, or the run is larger than the fleet clears in that time.`,
      metric: this.queue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(5), statistic: cloudwatch.Stats.MAXIMUM }),
      threshold: age.toSeconds(),
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
      // An idle queue stops publishing metrics; nothing waits then.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }

  /**
   * The queue's backlog: the work there is for tasks. Visible messages, which a worker can take
   * now, plus the messages workers hold, which keeps a task alive while it works on the last
   * batches. Held is the workers' own MessagesHeld (queue/held-metric.ts), not SQS's
   * ApproximateNumberOfMessagesNotVisible: that also counts failed batches sitting out their
   * backoff (up to an hour each, about 3.2 h from first failure to the dead-letter queue), and
   * five such batches would hold four GPU tasks idle for all that time. While no worker holds a
   * message the metric has no data, hence FILL.
   */
  metricBacklog(): cloudwatch.MathExpression {
    const period = Duration.seconds(HELD_METRIC_PERIOD_SECONDS);
    return new cloudwatch.MathExpression({
      label: "Backlog (visible + held by a worker)",
      expression: "visible + FILL(held, 0)",
      usingMetrics: {
        visible: this.queue.metricApproximateNumberOfMessagesVisible({ period, statistic: cloudwatch.Stats.MAXIMUM }),
        // One sample per held message per minute: the minute's Sum is the number held.
        held: new cloudwatch.Metric({
          namespace: WORKER_METRICS_NAMESPACE,
          metricName: MESSAGES_HELD_METRIC,
          dimensionsMap: { [QUEUE_NAME_DIMENSION]: this.queue.queueName },
          statistic: cloudwatch.Stats.SUM,
          period,
        }),
      },
      period,
    });
  }
}

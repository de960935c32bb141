import { HELD_METRIC_PERIOD_SECONDS, MESSAGES_HELD_METRIC, QUEUE_NAME_DIMENSION, WORKER_METRICS_NAMESPACE } from "./queue-timing.js";
/**
 * The messages workers hold, as a CloudWatch metric, for the GPU and CPU services' scaling
 * (infra/work-queue.ts). SQS's ApproximateNumberOfMessagesNotVisible cannot tell a held message
 * from one sitting out a failure backoff (the worker hides a failed batch for up to an hour),
 * so the worker says what it holds itself: while it holds a message it writes one log line per
 * minute in CloudWatch's embedded metric format (EMF), which CloudWatch Logs turns into the
 * metric MessagesHeld. No SDK call and no IAM permission beyond the task's log stream.
 *
 * Each line is stamped with the start of its minute and a held message gives at most one per
 * minute, so the metric's one-minute Sum is the number of messages held in that minute,
 * however the ticks fall.
 */

/** How often a holder looks whether a new minute has begun; a message held for less may go uncounted. */
const TICK_MILLISECONDS = 10_000;

/** The queue's name: the last path segment of its URL (https://sqs.<region>.amazonaws.com/<account>/<name>). */
export function queueNameOf(queueUrl: string): string {
  const path = queueUrl.replace(/[?#].*$/, "").replace(/\/+$/, "");
  return path.slice(path.lastIndexOf("/") + 1);
}

/** One EMF log entry: MessagesHeld = 1 for the minute starting at `minuteStartMs`. */
export function heldMetricEntry(queueName: string, minuteStartMs: number, messageId: string | undefined): Record<string, unknown> {
  return {
    event: "message-held",
    messageId: messageId ?? null,
    _aws: {
      Timestamp: minuteStartMs,
      CloudWatchMetrics: [
        {
          Namespace: WORKER_METRICS_NAMESPACE,
          Dimensions: [[QUEUE_NAME_DIMENSION]],
          Metrics: [{ Name: MESSAGES_HELD_METRIC, Unit: "Count", StorageResolution: 60 }],
        },
      ],
    },
    [QUEUE_NAME_DIMENSION]: queueName,
    [MESSAGES_HELD_METRIC]: 1,
  };
}

/** Writes heldMetricEntry lines for one held message, from start() until stop(). */
export class HeldMetric {
  private timer: NodeJS.Timeout | undefined;
  private lastMinute: number | undefined;
  private readonly queueName: string;

  constructor(
    queueUrl: string,
    private readonly messageId: string | undefined,
    private readonly log: (entry: Record<string, unknown>) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.queueName = queueNameOf(queueUrl);
  }

  start(): void {
    this.report();
    this.timer = setInterval(() => this.report(), TICK_MILLISECONDS);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private report(): void {
    const periodMs = HELD_METRIC_PERIOD_SECONDS * 1000;
    const minute = Math.floor(this.now() / periodMs) * periodMs;
    if (minute === this.lastMinute) return;
    this.lastMinute = minute;
    this.log(heldMetricEntry(this.queueName, minute, this.messageId));
  }
}

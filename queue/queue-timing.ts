/**
 * Queue timing shared by the worker and the CDK stack, so the visibility timeout the stack
 * gives the queue and the heartbeat the worker keeps can never drift apart.
 */

/** How long a received batch stays invisible to other workers before SQS redelivers it. */
export const VISIBILITY_TIMEOUT_SECONDS = 600;

/**
 * How often a worker extends the visibility of the batch it holds. It must be well below the
 * visibility timeout so a slow network call cannot let the message reappear mid-batch.
 */
export const HEARTBEAT_SECONDS = 120;

/**
 * Receives after which a batch that keeps failing goes to the dead-letter queue. Five, not
 * three: a Spot reclaim or scale-in hands a batch back without it having failed, and two of
 * those in a row must not park a healthy batch.
 */
export const MAX_RECEIVE_COUNT = 5;

/**
 * Seconds one batch may take before the worker hands it back and exits non-zero. A 32-image,
 * 144-crop batch is at most 4,608 crops: about 60 s on this project's 2-core CPU measurement
 * (77 crops/s), so 900 s leaves room for a slow GPU, a cold model load and a slow network,
 * while a batch stuck on a stalled read frees its GPU instance within 15 minutes.
 */
export const DEFAULT_BATCH_DEADLINE_SECONDS = 900;

/**
 * SQS keeps a received message hidden for at most 12 hours after its receive, however often its
 * visibility is extended: a heartbeat asking for more is refused. A worker's deadline plus its
 * visibility timeout must stay within this.
 */
export const MAX_HIDDEN_SECONDS = 43_200;

/**
 * The fastest a worker is taken to score, in crops per second per model, to refuse plans whose
 * batches could not finish within the deadline even so. Twice the README's T4 figure of 500
 * crops/s, which is an estimate (no GPU has been measured; see "Cost of one 50,000-image,
 * 144-crop run"), and 13 times the one measurement, 77.5 crops/s with onnxruntime on 2 CPU cores.
 */
export const FASTEST_CROPS_PER_SECOND = 1000;

/**
 * Longest delay before a failed batch comes back: the delay starts at the visibility timeout
 * and doubles with each receive, up to this (SQS allows 12 hours).
 */
export const FAILURE_BACKOFF_CAP_SECONDS = 3600;

/**
 * Seconds between SIGTERM and SIGKILL the worker plans for: ECS's default stopTimeout. The
 * stack sets its own (STOP_TIMEOUT_SECONDS); the batch in hand is finished only when it fits.
 */
export const DEFAULT_STOP_TIMEOUT_SECONDS = 30;

/** Delay before a batch that failed on its `receiveCount`-th receive is offered again. */
export function failureBackoffSeconds(visibilityTimeoutSeconds: number, receiveCount: number): number {
  const doublings = Math.max(0, Math.min(30, receiveCount - 1));
  return Math.min(Math.max(FAILURE_BACKOFF_CAP_SECONDS, visibilityTimeoutSeconds), visibilityTimeoutSeconds * 2 ** doublings);
}

/** Throws when a heartbeat could not keep a message invisible. */
export function assertHeartbeatFits(heartbeatSeconds: number, visibilityTimeoutSeconds: number): void {
  if (!(heartbeatSeconds > 0 && heartbeatSeconds < visibilityTimeoutSeconds)) {
    throw new RangeError(
      `heartbeat (${heartbeatSeconds}s) must be positive and shorter than the visibility timeout (${visibilityTimeoutSeconds}s)`,
    );
  }
}

// The workers' MessagesHeld metric (queue/held-metric.ts writes it, infra/work-queue.ts scales on it).

/** CloudWatch namespace of the worker's own metrics. */
export const WORKER_METRICS_NAMESPACE = "googlenet-eval";

/** The metric: 1 per held message per minute. */
export const MESSAGES_HELD_METRIC = "MessagesHeld";

/** Its one dimension: the work queue's name, so two stacks in one account do not add up. */
export const QUEUE_NAME_DIMENSION = "QueueName";

/** The period over which a Sum of MessagesHeld counts held messages: one line per minute. */
export const HELD_METRIC_PERIOD_SECONDS = 60;

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

/** Throws when a heartbeat could not keep a message invisible. */
export function assertHeartbeatFits(heartbeatSeconds: number, visibilityTimeoutSeconds: number): void {
  if (!(heartbeatSeconds > 0 && heartbeatSeconds < visibilityTimeoutSeconds)) {
    throw new RangeError(
      `heartbeat (${heartbeatSeconds}s) must be positive and shorter than the visibility timeout (${visibilityTimeoutSeconds}s)`,
    );
  }
}

import { ChangeMessageVisibilityCommand, DeleteMessageCommand, type Message, type SQSClient } from "@aws-sdk/client-sqs";
import { GoogLeNetEvalError } from "../model/errors.js";
import { DeadlineExceededError } from "./message-errors.js";
import { recordProgress } from "./health-file.js";
import { HeldMetric } from "./held-metric.js";

/** ECS task scale-in protection (queue/task-protection.ts), or anything shaped like it. */
export interface BatchProtection {
  /** Must settle within a few seconds (the agent client gives up after 5 s): a release waits for it. */
  protect(expiresInMinutes: number): Promise<unknown>;
  release(): Promise<unknown>;
}

/**
 * What the worker does with the message in hand when asked to stop: "fit" finishes it when the
 * rest, at the pace so far, fits in the stop timeout and hands it back otherwise; "finish"
 * always finishes; "abandon" always hands it back.
 */
export type StopMode = "fit" | "finish" | "abandon";

export interface HoldSettings {
  readonly sqs: SQSClient;
  readonly queueUrl: string;
  readonly visibilityTimeoutSeconds: number;
  readonly heartbeatSeconds: number;
  /** Seconds the work may take before it is handed back and DeadlineExceededError thrown. */
  readonly deadlineSeconds: number;
  /** Aborted when the worker is asked to stop (SIGTERM). */
  readonly stop: AbortSignal;
  readonly stopMode: StopMode;
  /** Seconds between the stop request and SIGKILL (ECS stopTimeout). */
  readonly stopTimeoutSeconds: number;
  readonly protection?: BatchProtection | undefined;
  /** File rewritten after each image, for the container health check. */
  readonly healthFile?: string | undefined;
  readonly log: (entry: Record<string, unknown>) => void;
}

/** Thrown by `HeldMessage.progressed` when the worker stops and hands the message back. */
export class Abandoned extends Error {
  constructor() {
    super("stop requested");
    this.name = "Abandoned";
  }
}

/**
 * The held message's visibility ran out because its heartbeats failed: SQS may already have
 * given it to another worker, so this worker's results would be a duplicate and its receipt
 * handle stale. The job is cut off and the worker exits non-zero, loudly, rather than carry on.
 */
export class VisibilityLostError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "VisibilityLostError";
  }
}

/** Seconds kept free after the estimated rest of a batch, for writing its results and deleting it. */
const STOP_MARGIN_SECONDS = 5;

/** The HTTP status of an AWS SDK error that came with an answer; undefined for a timeout or a reset. */
function answeredStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}


/** How the message left this worker's hands: deleted, or made visible again `seconds` after `at`. */
type Release = { readonly kind: "deleted" } | { readonly kind: "visible"; readonly seconds: number; readonly at: number };

/**
 * A received message while a job works on it: its heartbeat, its deadline, the stop rule, and
 * the job's cancellation once the worker gives the message up.
 */
export class HeldMessage {
  private readonly startedAt = performance.now();
  private stopSeenAt: number | undefined;
  private readonly cancel = new AbortController();
  /** Until when (performance.now() ms) SQS surely keeps the message hidden: from the receive, then the last heartbeat that landed. */
  private hiddenUntil: number;
  private released: Release | undefined;
  private failedBeats = 0;
  private lastBeatError: string | undefined;
  /** Protection calls in flight, awaited before protection is released so none lands after it. */
  private readonly protecting = new Set<Promise<unknown>>();
  private work: Promise<unknown> | undefined;

  constructor(
    readonly message: Message,
    private readonly settings: HoldSettings,
  ) {
    this.hiddenUntil = this.startedAt + settings.visibilityTimeoutSeconds * 1000;
  }

  get receiveCount(): number {
    return Number(this.message.Attributes?.ApproximateReceiveCount ?? 1);
  }

  /** Aborted, with the reason, when the worker gives the message up (deadline, visibility lost): the job must stop. */
  get signal(): AbortSignal {
    return this.cancel.signal;
  }

  /** Settles once the job `hold` ran has stopped, however it ended (at once when none ran). */
  get stopped(): Promise<void> {
    return (this.work ?? Promise.resolve()).then(
      () => undefined,
      () => undefined,
    );
  }

  /**
   * Throws the reason the message was given up, if it was. A job calls it before writing its
   * results: another worker may hold the message by now, and this one's receipt handle is stale.
   */
  assertHeld(): void {
    this.cancel.signal.throwIfAborted();
  }

  /**
   * Called by a job before its first image and after each one: records progress for the health
   * check; throws the reason the message was given up, or Abandoned when a stop was asked and
   * the rest of the job should not run.
   */
  async progressed(done: number, total: number): Promise<void> {
    this.assertHeld();
    if (this.settings.healthFile !== undefined) await recordProgress(this.settings.healthFile);
    if (!this.settings.stop.aborted || this.settings.stopMode === "finish") return;
    const now = performance.now();
    this.stopSeenAt ??= now;
    if (this.settings.stopMode === "abandon") throw new Abandoned();
    // Before the first image the one in progress is taken to need all the time spent so far.
    const restSeconds = ((now - this.startedAt) / 1000 / Math.max(done, 1)) * (total - done);
    const leftSeconds = this.settings.stopTimeoutSeconds - (now - this.stopSeenAt) / 1000;
    if (restSeconds + STOP_MARGIN_SECONDS > leftSeconds) throw new Abandoned();
  }

  /** Deletes the message: only after its results are written, and never once it was given up. */
  async delete(): Promise<void> {
    this.assertHeld();
    this.released = { kind: "deleted" };
    await this.settings.sqs.send(new DeleteMessageCommand({ QueueUrl: this.settings.queueUrl, ReceiptHandle: this.message.ReceiptHandle }));
  }

  /** Releases the message: visible again after `seconds` (0: at once, for another worker). No heartbeat follows. */
  async setVisibility(seconds: number): Promise<void> {
    this.released = { kind: "visible", seconds, at: performance.now() };
    await this.changeVisibility(seconds);
  }

  private async changeVisibility(seconds: number): Promise<void> {
    await this.settings.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: this.settings.queueUrl,
        ReceiptHandle: this.message.ReceiptHandle,
        VisibilityTimeout: seconds,
      }),
    );
  }

  /**
   * One heartbeat: the message stays hidden for another visibility timeout, the task protected.
   * Once the last extension has run out with no heartbeat landing, SQS may have given the
   * message to another worker: the job is cut off with VisibilityLostError instead.
   */
  private beat(): void {
    if (this.released !== undefined || this.cancel.signal.aborted) return;
    const { log, protection, visibilityTimeoutSeconds } = this.settings;
    // Lost only on SQS's word: heartbeats that failed and let the visibility run out. A beat merely
    // late (this process held its event loop, e.g. loading a model) is sent now and may still land.
    if (performance.now() >= this.hiddenUntil && this.failedBeats > 0) {
      const error = new VisibilityLostError(
        `message ${this.message.MessageId} may be visible to other workers again: its visibility ran out ` +
          `${Math.round((performance.now() - this.startedAt) / 1000)} s after it was received, after ${this.failedBeats} failed heartbeats ` +
          `(last: ${this.lastBeatError ?? "none answered"}); its work is stopped`,
      );
      this.cancel.abort(error);
      return;
    }
    void this.extend(performance.now());
    if (protection) {
      const call = protection.protect(Math.ceil(visibilityTimeoutSeconds / 60) + 1).catch((error: unknown) => {
        log({ event: "protection-failed", error: messageOf(error) });
      });
      this.protecting.add(call);
      void call.finally(() => this.protecting.delete(call));
    }
  }

  private async extend(sentAt: number): Promise<void> {
    const { log, visibilityTimeoutSeconds } = this.settings;
    try {
      await this.changeVisibility(visibilityTimeoutSeconds);
      if (this.released === undefined) {
        this.hiddenUntil = Math.max(this.hiddenUntil, sentAt + visibilityTimeoutSeconds * 1000);
        this.failedBeats = 0;
      }
    } catch (error) {
      // After a delete or a hand-back a refused heartbeat is expected, not news.
      if (this.released === undefined) {
        this.failedBeats++;
        this.lastBeatError = messageOf(error);
        const hiddenForSeconds = Math.max(0, Math.floor((this.hiddenUntil - performance.now()) / 1000));
        log({ event: "heartbeat-failed", messageId: this.message.MessageId, failedBeats: this.failedBeats, hiddenForSeconds, error: this.lastBeatError });
      }
      // SQS answered with a refusal (e.g. MessageNotInflight after a hand-back to 0): nothing landed.
      if (answeredStatus(error) !== undefined) return;
    }
    await this.repeatRelease();
  }

  /**
   * A heartbeat in flight when the message was released with a delay (a failed batch's backoff,
   * during which SQS still counts it in flight) may land after the release, SQS applying the
   * later call: the backoff would become one visibility timeout. The release's visibility is set
   * again, less the time gone, once such a heartbeat has landed or timed out unanswered.
   */
  private async repeatRelease(): Promise<void> {
    const released = this.released;
    if (released?.kind !== "visible") return;
    const seconds = Math.max(0, Math.ceil(released.seconds - (performance.now() - released.at) / 1000));
    const messageId = this.message.MessageId;
    this.settings.log({ event: "heartbeat-after-release", messageId, visibleInSeconds: seconds });
    await this.changeVisibility(seconds).catch((error: unknown) => {
      this.settings.log({ event: "release-repeat-failed", messageId, error: messageOf(error) });
    });
  }

  /**
   * Runs `work` while keeping the message hidden and the task protected. The heartbeat starts
   * before the work and always stops. Past the deadline, or once the visibility is lost, the
   * work's signal is aborted (it writes and deletes nothing more) and the reason thrown at once
   * (a stalled read cannot hold the message, and the instance the backlog keeps alive, until
   * SQS's 12-hour limit); `stopped` tells when the work has actually ended.
   */
  async hold<T>(work: () => Promise<T>): Promise<T> {
    const { protection, log, deadlineSeconds, visibilityTimeoutSeconds, heartbeatSeconds } = this.settings;
    const heartbeat = setInterval(() => this.beat(), heartbeatSeconds * 1000);
    // The services scale on messages held, not on "not visible", which counts backoffs too.
    const heldMetric = new HeldMetric(this.settings.queueUrl, this.message.MessageId, log);
    heldMetric.start();
    let deadline: NodeJS.Timeout | undefined;
    let protectedTask = false;
    const givenUp = new Promise<never>((_, reject) => {
      this.cancel.signal.addEventListener("abort", () => reject(this.cancel.signal.reason as Error), { once: true });
    });
    // Raced below; a cut-off that comes after the race settled (or before it starts) is no news.
    givenUp.catch(() => undefined);
    try {
      if (protection) {
        // Without protection a scale-in may stop us mid-batch; redelivery covers that case.
        protectedTask = await protection.protect(Math.ceil(visibilityTimeoutSeconds / 60) + 1).then(
          () => true,
          (error: unknown) => (log({ event: "protection-failed", error: messageOf(error) }), false),
        );
      }
      deadline = setTimeout(() => {
        this.cancel.abort(new DeadlineExceededError(`message ${this.message.MessageId} was not done within its deadline of ${deadlineSeconds} s`));
      }, deadlineSeconds * 1000);
      const running = work();
      this.work = running;
      return await Promise.race([running, givenUp]);
    } finally {
      clearInterval(heartbeat);
      heldMetric.stop();
      clearTimeout(deadline);
      // A protect call still in flight would land after the release and leave the task protected;
      // waiting for it delays a hand-back by at most the agent client's 5 s timeout.
      await Promise.all(this.protecting);
      if (protectedTask) {
        await protection?.release().catch((error: unknown) => log({ event: "protection-release-failed", error: messageOf(error) }));
      }
    }
  }
}

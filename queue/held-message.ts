import { ChangeMessageVisibilityCommand, DeleteMessageCommand, type Message, type SQSClient } from "@aws-sdk/client-sqs";
import { DeadlineExceededError } from "../model/errors.js";
import { recordProgress } from "./health-file.js";
import { HeldMetric } from "./held-metric.js";

/** ECS task scale-in protection (queue/task-protection.ts), or anything shaped like it. */
export interface BatchProtection {
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

/** Seconds kept free after the estimated rest of a batch, for writing its results and deleting it. */
const STOP_MARGIN_SECONDS = 5;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A received message while a job works on it: its heartbeat, its deadline, and the stop rule. */
export class HeldMessage {
  private readonly startedAt = performance.now();
  private stopSeenAt: number | undefined;

  constructor(
    readonly message: Message,
    private readonly settings: HoldSettings,
  ) {}

  get receiveCount(): number {
    return Number(this.message.Attributes?.ApproximateReceiveCount ?? 1);
  }

  /**
   * Called by a job before its first image and after each one: records progress for the health
   * check, and throws Abandoned when a stop was asked and the rest of the job should not run.
   */
  async progressed(done: number, total: number): Promise<void> {
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

  /** Deletes the message: only after its results are written. */
  async delete(): Promise<void> {
    await this.settings.sqs.send(new DeleteMessageCommand({ QueueUrl: this.settings.queueUrl, ReceiptHandle: this.message.ReceiptHandle }));
  }

  /** Makes the message visible again after `seconds` (0: at once, for another worker). */
  async setVisibility(seconds: number): Promise<void> {
    await this.settings.sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: this.settings.queueUrl,
        ReceiptHandle: this.message.ReceiptHandle,
        VisibilityTimeout: seconds,
      }),
    );
  }

  /** One heartbeat: the message stays hidden for another visibility timeout, the task protected. */
  private async beat(): Promise<void> {
    const { log, protection, visibilityTimeoutSeconds } = this.settings;
    await this.setVisibility(visibilityTimeoutSeconds).catch((error: unknown) => {
      log({ event: "heartbeat-failed", messageId: this.message.MessageId, error: messageOf(error) });
    });
    await protection?.protect(Math.ceil(visibilityTimeoutSeconds / 60) + 1).catch((error: unknown) => {
      log({ event: "protection-failed", error: messageOf(error) });
    });
  }

  /**
   * Runs `work` while keeping the message hidden and the task protected. The heartbeat starts
   * before the work and always stops; past the deadline the work is left behind and
   * DeadlineExceededError thrown (a stalled read cannot hold the message, and the instance the
   * backlog keeps alive, until SQS's 12-hour limit).
   */
  async hold<T>(work: () => Promise<T>): Promise<T> {
    const { protection, log, deadlineSeconds, visibilityTimeoutSeconds, heartbeatSeconds } = this.settings;
    const heartbeat = setInterval(() => void this.beat(), heartbeatSeconds * 1000);
    // The services scale on messages held, not on "not visible", which counts backoffs too.
    const heldMetric = new HeldMetric(this.settings.queueUrl, this.message.MessageId, log);
    heldMetric.start();
    let deadline: NodeJS.Timeout | undefined;
    let protectedTask = false;
    try {
      if (protection) {
        // Without protection a scale-in may stop us mid-batch; redelivery covers that case.
        protectedTask = await protection.protect(Math.ceil(visibilityTimeoutSeconds / 60) + 1).then(
          () => true,
          (error: unknown) => (log({ event: "protection-failed", error: messageOf(error) }), false),
        );
      }
      const expired = new Promise<never>((_, reject) => {
        deadline = setTimeout(
          () => reject(new DeadlineExceededError(`message ${this.message.MessageId} was not done within its deadline of ${deadlineSeconds} s`)),
          deadlineSeconds * 1000,
        );
      });
      return await Promise.race([work(), expired]);
    } finally {
      clearInterval(heartbeat);
      heldMetric.stop();
      clearTimeout(deadline);
      if (protectedTask) {
        await protection?.release().catch((error: unknown) => log({ event: "protection-release-failed", error: messageOf(error) }));
      }
    }
  }
}

import type { S3Client } from "@aws-sdk/client-s3";
import {
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { BackendUnavailableError, ConfigurationError } from "../model/errors.js";
import { DeadlineExceededError } from "./message-errors.js";
import { StorageError } from "../storage/errors.js";
import { loadEngine, type EngineChoice, type LoadEngineOptions } from "../model/load.js";
import { defaultS3Client, defaultSqsClient } from "../storage/aws-clients.js";
import { ArchiveIndexCache } from "./archive-batch.js";
import { ManifestCache, runBatchJob, type JobContext, type RunCaches } from "./batch-job.js";
import { runDropJob, type DropSettings } from "./drop-job.js";
import { recordProgress } from "./health-file.js";
import { assertGpuStarts } from "./gpu-check.js";
import { Abandoned, HeldMessage, VisibilityLostError, type BatchProtection, type HoldSettings, type StopMode } from "./held-message.js";
import { PermanentMessageError, SupersededMessageError } from "./message-errors.js";
import { ModelCache, type LoadModel } from "./model-cache.js";
import { readQueueFacts, type QueueFacts } from "./queue-facts.js";
import {
  DEFAULT_BATCH_DEADLINE_SECONDS,
  DEFAULT_STOP_TIMEOUT_SECONDS,
  HEARTBEAT_SECONDS,
  MAX_HIDDEN_SECONDS,
  assertHeartbeatFits,
  failureBackoffSeconds,
} from "./queue-timing.js";
import { objectVersion } from "../storage/object-version.js";
import { readUrl } from "../storage/open-location.js";
import { classifyMessage, parseDropInput, type DropInput, type WorkItem } from "./work-message.js";

export type { BatchProtection, StopMode } from "./held-message.js";
export type { DropSettings } from "./drop-job.js";
export type { LoadedModel, LoadModel } from "./model-cache.js";

export interface WorkerOptions {
  readonly queueUrl: string;
  /** First synset name by class index, for the names in top-5 entries. */
  readonly classNames: readonly string[];
  /** Loads models. Default: read the file (path or s3://) and model/load.ts's loadEngine with `engineSettings`. */
  readonly loadModel?: LoadModel;
  /**
   * Threads, tfjs backend and onnxruntime device for the default `loadModel`. With `requireGpu`
   * the GPU is started before the first receive, whatever `loadModel` is. Default: loadEngine's.
   */
  readonly engineSettings?: Pick<LoadEngineOptions, "threads" | "backend" | "tfjsWorkers" | "device" | "requireGpu" | "graphEdits">;
  /** Default: clients built from the environment. */
  readonly clients?: { readonly s3?: S3Client; readonly sqs?: SQSClient };
  /** Long-poll wait per receive. Default: 20 (the SQS maximum). */
  readonly waitTimeSeconds?: number;
  /** Visibility a receive and each heartbeat give the held message. Default: the queue's own, read at start. */
  readonly visibilityTimeoutSeconds?: number;
  /** Interval between heartbeats; below the visibility timeout. Default: the smaller of 120 and a fifth of the timeout. */
  readonly heartbeatSeconds?: number;
  /**
   * Seconds one message may be worked on before it is handed back and the worker exits; with the
   * visibility timeout at most 43,200 (SQS hides a message for at most 12 hours after its receive).
   * Default: 900.
   */
  readonly deadlineSeconds?: number;
  /** Exit once the queue has no visible, delayed or in-flight message. Default: false. */
  readonly untilEmpty?: boolean;
  /** Aborting stops the loop (SIGTERM); a receive in flight is let finish. Default: never aborted. */
  readonly signal?: AbortSignal;
  /** What to do with a held message when `signal` aborts. Default: "fit". */
  readonly onStop?: StopMode;
  /** Seconds from the stop request to SIGKILL, for the "fit" rule. Default: 30 (ECS's default). */
  readonly stopTimeoutSeconds?: number;
  /** The S3 prefix whose drop events are honoured (s3://bucket/prefix/); without it, none are. */
  readonly dropInput?: string;
  /** Drop-folder settings, required with `dropInput`. */
  readonly drop?: DropSettings;
  /** Scale-in protection around each message, renewed with each heartbeat. Default: none. */
  readonly protection?: BatchProtection;
  /** Models kept loaded across messages (least recently used evicted). Default: 2. */
  readonly modelCacheSize?: number;
  /** Crops per engine call. Default: the scorer's. */
  readonly cropsPerCall?: number;
  /** Largest batch input object read, in bytes; a larger one is its error record. Default: DEFAULT_INPUT_MAX_BYTES (50 MiB). */
  readonly inputMaxBytes?: number;
  /** Rewritten on every turn of the loop and after each image, for the container health check. */
  readonly healthFile?: string;
  /** Receives one JSON object per event. Default: one JSON line on stdout. */
  readonly log?: (entry: Record<string, unknown>) => void;
}

export interface WorkerStats {
  batches: number;
  dropMessages: number;
  abandoned: number;
  failedMessages: number;
  poisonMessages: number;
}

/** The timing a worker runs with, once the queue's own visibility timeout is known. */
export interface WorkerTiming {
  readonly waitTimeSeconds: number;
  readonly visibilityTimeoutSeconds: number;
  readonly heartbeatSeconds: number;
  readonly deadlineSeconds: number;
  readonly stopTimeoutSeconds: number;
}

const wholeSeconds = (name: string, value: number, low: number, high: number): number => {
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new ConfigurationError(`${name} must be a whole number of seconds from ${low} to ${high}, got ${value}`);
  }
  return value;
};

/**
 * Validates the timing once, so a heartbeat that could not keep a message hidden fails at
 * start. `queueVisibilitySeconds` is the queue's own timeout, the default.
 */
export function resolveWorkerTiming(options: WorkerOptions, queueVisibilitySeconds: number): WorkerTiming {
  const visibilityTimeoutSeconds = wholeSeconds("visibility timeout", options.visibilityTimeoutSeconds ?? queueVisibilitySeconds, 2, MAX_HIDDEN_SECONDS);
  const heartbeatSeconds = options.heartbeatSeconds ?? Math.max(1, Math.min(HEARTBEAT_SECONDS, Math.floor(visibilityTimeoutSeconds / 5)));
  try {
    assertHeartbeatFits(heartbeatSeconds, visibilityTimeoutSeconds);
  } catch (error) {
    throw new ConfigurationError(`${(error as Error).message}: give a heartbeat from 1 to ${visibilityTimeoutSeconds - 1} seconds`, { cause: error });
  }
  const deadlineSeconds = wholeSeconds("deadline", options.deadlineSeconds ?? DEFAULT_BATCH_DEADLINE_SECONDS, 1, MAX_HIDDEN_SECONDS);
  if (deadlineSeconds + visibilityTimeoutSeconds > MAX_HIDDEN_SECONDS) {
    // A heartbeat near the deadline asks for a visibility timeout more; past the limit SQS refuses it.
    throw new ConfigurationError(
      `deadline ${deadlineSeconds} s plus visibility timeout ${visibilityTimeoutSeconds} s is ${deadlineSeconds + visibilityTimeoutSeconds} s, ` +
        `more than the ${MAX_HIDDEN_SECONDS} s (12 hours) SQS keeps a message hidden after its receive: the last heartbeats would be refused ` +
        `and the message would reappear mid-work; give a deadline of at most ${MAX_HIDDEN_SECONDS - visibilityTimeoutSeconds} s or a shorter visibility timeout`,
    );
  }
  return {
    waitTimeSeconds: wholeSeconds("wait time", options.waitTimeSeconds ?? 20, 0, 20),
    visibilityTimeoutSeconds,
    heartbeatSeconds,
    deadlineSeconds,
    stopTimeoutSeconds: wholeSeconds("stop timeout", options.stopTimeoutSeconds ?? DEFAULT_STOP_TIMEOUT_SECONDS, 1, 43_200),
  };
}

function defaultLog(entry: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Seconds a job given up at its deadline has to reach its next check (the end of its image) and
 * stop before the worker goes on without it: an image of 144 crops takes about 2 s at the
 * 77.5 crops/s measured on 2 CPU cores, 4 s on one, far less on a GPU.
 */
const GIVEN_UP_GRACE_SECONDS = 10;

function eventFor(error: Error): string {
  if (error instanceof DeadlineExceededError) return "deadline-exceeded";
  return error instanceof VisibilityLostError ? "visibility-lost" : "gpu-unavailable";
}

/** Consecutive failed receives after which the worker gives up: the queue itself is unreachable. */
const RECEIVE_FAILURES_TO_EXIT = 5;

/**
 * The SQS loop. Takes one message at a time and applies one rule per kind of failure:
 * - a malformed message goes to the dead-letter queue at once, with the reason as an attribute;
 * - a batch or drop event is worked on while held (heartbeat, deadline, stop rule); an image's
 *   own fault is a record; a storage fault or a broken model fails the message, which comes back
 *   after a delay that doubles with each receive, while the worker goes on with other messages;
 * - past the deadline the message is handed back and DeadlineExceededError thrown (exit non-zero);
 * - on stop the message in hand is finished if it fits in the stop timeout, else handed back.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerStats> {
  const sqs = options.clients?.sqs ?? defaultSqsClient();
  const s3 = options.clients?.s3 ?? defaultS3Client();
  const log = options.log ?? defaultLog;
  const signal = options.signal ?? new AbortController().signal;
  if (options.dropInput !== undefined && options.drop === undefined) {
    throw new ConfigurationError("a drop input needs the drop settings: model, crops and output");
  }
  const dropInput = options.dropInput === undefined ? undefined : parseDropInput(options.dropInput);
  // Before any receive: a worker that cannot serve must not take a message only to hand it back.
  await assertGpuStarts(options.engineSettings);
  const facts = await readQueueFacts(sqs, options.queueUrl);
  const timing = resolveWorkerTiming(options, facts.visibilityTimeoutSeconds);
  const loadModel: LoadModel =
    options.loadModel ??
    (async (url, engine: EngineChoice, preprocess) =>
      loadEngine(await readUrl(url, s3), { source: url, engine, ...options.engineSettings, ...(preprocess ? { preprocess } : {}) }));
  const worker = process.pid;
  const tagged = (entry: Record<string, unknown>): void => log({ ...entry, worker });
  const loop = new WorkerLoop(options, { sqs, s3, facts, timing, dropInput, signal, log: tagged, loadModel });
  tagged({
    event: "worker-started",
    queue: options.queueUrl,
    untilEmpty: options.untilEmpty ?? false,
    ...timing,
    deadLetterQueue: facts.deadLetterQueueUrl ?? null,
    maxReceiveCount: facts.maxReceiveCount ?? null,
    dropInput: options.dropInput ?? null,
    ...(dropInput === undefined ? { note: "no drop input set: S3 events go to the dead-letter queue" } : {}),
  });
  return loop.run();
}

interface LoopParts {
  readonly sqs: SQSClient;
  readonly s3: S3Client;
  readonly facts: QueueFacts;
  readonly timing: WorkerTiming;
  readonly dropInput: DropInput | undefined;
  readonly signal: AbortSignal;
  readonly log: (entry: Record<string, unknown>) => void;
  readonly loadModel: LoadModel;
}

/** The receive loop and what it does with each message; one instance per runWorker call. */
class WorkerLoop {
  private readonly stats: WorkerStats = { batches: 0, dropMessages: 0, abandoned: 0, failedMessages: 0, poisonMessages: 0 };
  private readonly models: ModelCache;
  private readonly runs: RunCaches;
  private readonly context: JobContext;
  private readonly hold: HoldSettings;
  /** Settles when the job of a message given up at its deadline (or on lost visibility) has stopped. */
  private givenUp: Promise<void> | undefined;

  constructor(
    private readonly options: WorkerOptions,
    private readonly parts: LoopParts,
  ) {
    const cacheSize = options.modelCacheSize ?? 2;
    if (!Number.isInteger(cacheSize) || cacheSize < 1) throw new ConfigurationError(`model cache size must be a positive integer, got ${cacheSize}`);
    // One HEAD per model per message: how a warm worker sees a model replaced at its URL.
    this.models = new ModelCache(cacheSize, parts.loadModel, (url) => objectVersion(url, parts.s3));
    this.runs = { manifests: new ManifestCache(parts.s3), archiveIndexes: new ArchiveIndexCache(parts.s3) };
    this.context = { s3: parts.s3, classNames: options.classNames, models: this.models, cropsPerCall: options.cropsPerCall, inputMaxBytes: options.inputMaxBytes, log: parts.log };
    this.hold = {
      sqs: parts.sqs,
      queueUrl: options.queueUrl,
      ...parts.timing,
      stop: parts.signal,
      stopMode: options.onStop ?? "fit",
      protection: options.protection,
      healthFile: options.healthFile,
      log: parts.log,
    };
  }

  async run(): Promise<WorkerStats> {
    const { signal, log } = this.parts;
    let reason = "signal";
    try {
      let failedReceives = 0;
      while (!signal.aborted) {
        if (this.options.healthFile !== undefined) await recordProgress(this.options.healthFile);
        let received: Message[];
        try {
          received = await this.receive();
          failedReceives = 0;
        } catch (error) {
          failedReceives++;
          log({ event: "receive-failed", attempt: failedReceives, error: messageOf(error) });
          if (failedReceives >= RECEIVE_FAILURES_TO_EXIT) {
            throw new StorageError(`cannot receive from ${this.options.queueUrl} (${failedReceives} attempts): ${messageOf(error)}`, { cause: error });
          }
          await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** failedReceives));
          continue;
        }
        if (signal.aborted) {
          // Asked to stop while the receive was in flight: what it brought goes back at once.
          await this.handBack(received, "arrived after stop was asked");
          break;
        }
        if (received.length === 0 && this.options.untilEmpty && (await this.queueIsDrained().catch(() => false))) {
          reason = "queue-empty";
          log({ event: "queue-empty" });
          break;
        }
        for (const one of received) await this.handle(one);
      }
    } finally {
      await this.disposeModels();
    }
    log({ event: "worker-stopped", ...this.stats, reason });
    return this.stats;
  }

  /**
   * Disposes the engines only once no job can use them: a job given up at its deadline runs on
   * until its next check (the end of the image in hand, or a read that returns), and an engine
   * disposed under a running inference may take the process down with it.
   */
  private async disposeModels(): Promise<void> {
    const job = this.givenUp;
    if (job !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), GIVEN_UP_GRACE_SECONDS * 1000);
      });
      const stopped = await Promise.race([job.then(() => true as const), grace]);
      clearTimeout(timer);
      if (!stopped) {
        this.parts.log({ event: "given-up-job-running", note: `still running ${GIVEN_UP_GRACE_SECONDS} s after it was given up; its models are disposed once it stops` });
        void job.then(() => this.models.disposeAll());
        return;
      }
    }
    await this.models.disposeAll();
  }

  /**
   * A receive is never aborted: SQS may already have made a message invisible for a receive
   * whose answer is lost, hiding it for the whole visibility timeout.
   */
  private async receive(): Promise<Message[]> {
    const response = await this.parts.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.options.queueUrl,
        MaxNumberOfMessages: 1,
        WaitTimeSeconds: this.parts.timing.waitTimeSeconds,
        VisibilityTimeout: this.parts.timing.visibilityTimeoutSeconds,
        MessageSystemAttributeNames: ["ApproximateReceiveCount"],
      }),
    );
    return response.Messages ?? [];
  }

  private async handBack(messages: readonly Message[], why: string): Promise<void> {
    for (const message of messages) {
      await new HeldMessage(message, this.hold).setVisibility(0).catch(() => undefined);
      this.parts.log({ event: "handed-back", messageId: message.MessageId, reason: why });
    }
  }

  private async queueIsDrained(): Promise<boolean> {
    const response = await this.parts.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: this.options.queueUrl,
        AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
      }),
    );
    const attributes = response.Attributes ?? {};
    return [attributes.ApproximateNumberOfMessages, attributes.ApproximateNumberOfMessagesNotVisible, attributes.ApproximateNumberOfMessagesDelayed].every(
      (count) => Number(count ?? 0) === 0,
    );
  }

  private async handle(message: Message): Promise<void> {
    const item = classifyMessage(message.Body, this.parts.dropInput);
    const held = new HeldMessage(message, this.hold);
    if (item.kind === "poison" || item.kind === "test") {
      try {
        if (item.kind === "poison") await this.deadLetter(held, item.reason);
        else await held.delete();
        if (item.kind === "test") this.parts.log({ event: "s3-test-event", messageId: message.MessageId });
      } catch (error) {
        // SQS itself failed: the message comes back after its visibility timeout and is tried again.
        this.parts.log({ event: "queue-call-failed", messageId: message.MessageId, kind: item.kind, error: messageOf(error) });
      }
      return;
    }
    try {
      await held.hold(() => this.work(held, item));
      if (item.kind === "batch") this.stats.batches++;
      else this.stats.dropMessages++;
    } catch (error) {
      await this.failed(held, item, error);
    }
  }

  private async work(held: HeldMessage, item: Extract<WorkItem, { kind: "batch" | "drop" }>): Promise<void> {
    if (item.kind === "batch") return runBatchJob(this.context, held, this.runs, item.batch);
    return runDropJob(this.context, held, this.options.drop as DropSettings, item.objects);
  }

  /** A message that failed: handed back on stop or deadline, delayed with backoff on a fault. */
  private async failed(held: HeldMessage, item: WorkItem, error: unknown): Promise<void> {
    const { log, timing } = this.parts;
    const messageId = held.message.MessageId;
    const batch = item.kind === "batch" ? { run: item.batch.runId, batch: item.batch.batchId } : {};
    if (error instanceof Abandoned) {
      this.stats.abandoned++;
      await held.setVisibility(0).catch(() => undefined);
      log({ event: "abandoned", messageId, ...batch });
      return;
    }
    if (error instanceof DeadlineExceededError || error instanceof VisibilityLostError || error instanceof BackendUnavailableError) {
      // Taken as this worker's fault: another worker (ECS starts a new task) takes it now. The
      // hand-back still costs the receive, and should: a deadline cannot tell a slow or stalled
      // worker from a batch too big for it or an input whose read always stalls, and a free
      // hand-back would let such a batch kill workers for ever; the redrive limit bounds it. A
      // GPU that does not start costs none: assertGpuStarts stops the worker before it receives.
      this.givenUp = held.stopped;
      await held.setVisibility(0).catch(() => undefined);
      log({ event: eventFor(error), messageId, ...batch, error: messageOf(error) });
      throw error;
    }
    if (error instanceof SupersededMessageError || error instanceof PermanentMessageError) {
      await this.settle(held, error, batch);
      return;
    }
    this.stats.failedMessages++;
    const delay = failureBackoffSeconds(timing.visibilityTimeoutSeconds, held.receiveCount);
    await held.setVisibility(delay).catch((visibilityError: unknown) => {
      log({ event: "backoff-failed", messageId, error: messageOf(visibilityError) });
    });
    log({
      event: "message-failed",
      messageId,
      receiveCount: held.receiveCount,
      maxReceiveCount: this.parts.facts.maxReceiveCount ?? null,
      retryInSeconds: delay,
      ...batch,
      error: messageOf(error),
    });
  }

  /** A message that no retry can help: a superseded one is deleted, a permanent failure dead-lettered now. */
  private async settle(held: HeldMessage, error: SupersededMessageError | PermanentMessageError, batch: Record<string, unknown>): Promise<void> {
    const messageId = held.message.MessageId;
    try {
      if (error instanceof PermanentMessageError) await this.deadLetter(held, error.message);
      else {
        await held.delete();
        this.parts.log({ event: "superseded", messageId, ...batch, reason: error.message, action: "deleted" });
      }
    } catch (queueError) {
      // SQS itself failed: the message comes back after its visibility timeout and is settled then.
      this.parts.log({ event: "queue-call-failed", messageId, kind: error.name, error: messageOf(queueError) });
    }
  }

  /** Moves a malformed message to the dead-letter queue now, with the reason as an attribute. */
  private async deadLetter(held: HeldMessage, reason: string): Promise<void> {
    const { facts, log, sqs } = this.parts;
    this.stats.poisonMessages++;
    const messageId = held.message.MessageId;
    if (facts.deadLetterQueueUrl === undefined) {
      log({ event: "poison", messageId, reason, action: "left on the queue: it has no dead-letter queue" });
      return;
    }
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: facts.deadLetterQueueUrl,
        MessageBody: held.message.Body ?? "",
        MessageAttributes: {
          "googlenet-eval-reason": { DataType: "String", StringValue: reason.slice(0, 1024) },
          "googlenet-eval-source-queue": { DataType: "String", StringValue: this.options.queueUrl },
          "googlenet-eval-source-message-id": { DataType: "String", StringValue: messageId ?? "unknown" },
        },
      }),
    );
    await held.delete();
    log({ event: "poison", messageId, reason, action: "moved to the dead-letter queue" });
  }
}

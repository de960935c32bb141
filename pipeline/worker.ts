import type { S3Client } from "@aws-sdk/client-s3";
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Engine, ModelInfo } from "../model/engine.js";
import { ConfigurationError, StorageError } from "../model/errors.js";
import type { CropCount } from "../model/predict.js";
import { defaultS3Client, defaultSqsClient } from "./aws-clients.js";
import { loadEngine, type EngineChoice } from "../model/load.js";
import { batchResultKey, parseBatchMessage, readManifest, type BatchMessage, type Manifest } from "./manifest.js";
import { HEARTBEAT_SECONDS, VISIBILITY_TIMEOUT_SECONDS, assertHeartbeatFits } from "./queue-timing.js";
import { isFailed, type ResultRecord } from "./records.js";
import { parseS3EventMessage, planDropEvent, type S3ObjectEvent } from "./s3-events.js";
import { S3Location, readUrl } from "./s3-location.js";
import { scoreImages, type ImageInput } from "./scorer.js";
import { openLocation, type Location } from "./storage.js";

/** A model ready to score, as model/load.ts returns it. */
export interface LoadedModel {
  readonly engine: Engine;
  readonly info: ModelInfo;
}

/** Loads a model file (path or s3:// URL) with an engine. */
export type LoadModel = (url: string, engine: EngineChoice) => Promise<LoadedModel>;

/** ECS task scale-in protection (pipeline/task-protection.ts), or anything shaped like it. */
export interface BatchProtection {
  protect(expiresInMinutes: number): Promise<unknown>;
  release(): Promise<unknown>;
}

/** What the worker does with a batch it holds when asked to stop. */
export type StopMode = "abandon" | "finish";

/** Settings for S3 event messages (the drop folder). */
export interface DropSettings {
  /** Model file (path or s3:// URL) used for every dropped image. */
  readonly model: string;
  /** Crops per dropped image. */
  readonly crops: CropCount;
  /** Folder or s3:// prefix receiving `<original key>.json`. */
  readonly out: string;
  /** Apply EXIF orientation (phone photos). Default: true. */
  readonly applyExifOrientation?: boolean;
}

export interface WorkerOptions {
  readonly queueUrl: string;
  /** First synset name by class index, for the names in top-5 entries. */
  readonly classNames: readonly string[];
  /** Loads models. Default: read the file (path or s3://) and model/load.ts's loadEngine. */
  readonly loadModel?: LoadModel;
  /** Default: clients built from the environment. */
  readonly clients?: { readonly s3?: S3Client; readonly sqs?: SQSClient };
  /** Long-poll wait per receive. Default: 20 (the SQS maximum). */
  readonly waitTimeSeconds?: number;
  /** Visibility a receive and each heartbeat give the held message. Default: VISIBILITY_TIMEOUT_SECONDS (600). */
  readonly visibilityTimeoutSeconds?: number;
  /** Interval between heartbeats; must be below the visibility timeout. Default: HEARTBEAT_SECONDS (120). */
  readonly heartbeatSeconds?: number;
  /** Exit once the queue has no visible, delayed or in-flight message. Default: false. */
  readonly untilEmpty?: boolean;
  /** Aborting stops the loop (SIGTERM). Default: never aborted. */
  readonly signal?: AbortSignal;
  /** What to do with a held batch when `signal` aborts. Default: "abandon" (redelivered at once). */
  readonly onStop?: StopMode;
  /** Engine for drop-folder models (batches use their manifest's). Default: "auto". */
  readonly engine?: EngineChoice;
  /** Drop-folder settings; without them S3 event messages are left for the dead-letter queue. */
  readonly drop?: DropSettings;
  /** Scale-in protection around each batch. Default: none. */
  readonly protection?: BatchProtection;
  /** Models kept loaded across messages (least recently used evicted). Default: 2. */
  readonly modelCacheSize?: number;
  /** Receives one JSON object per event. Default: one JSON line on stdout. */
  readonly log?: (entry: Record<string, unknown>) => void;
}

export interface WorkerStats {
  batches: number;
  dropObjects: number;
  abandoned: number;
  failedMessages: number;
  poisonMessages: number;
}

/** Thrown inside a batch when the worker was told to stop and abandons it. */
class Abandoned extends Error {
  constructor() {
    super("stop requested");
    this.name = "Abandoned";
  }
}

interface Resolved {
  readonly queueUrl: string;
  readonly waitTimeSeconds: number;
  readonly visibilityTimeoutSeconds: number;
  readonly heartbeatSeconds: number;
  readonly onStop: StopMode;
  readonly engine: EngineChoice;
  readonly modelCacheSize: number;
}

/** Validates the timing options once, so a heartbeat that could not keep a message hidden fails at start. */
export function resolveWorkerTiming(options: WorkerOptions): Resolved {
  const visibilityTimeoutSeconds = options.visibilityTimeoutSeconds ?? VISIBILITY_TIMEOUT_SECONDS;
  const heartbeatSeconds = options.heartbeatSeconds ?? HEARTBEAT_SECONDS;
  assertHeartbeatFits(heartbeatSeconds, visibilityTimeoutSeconds);
  const waitTimeSeconds = options.waitTimeSeconds ?? 20;
  if (!Number.isInteger(waitTimeSeconds) || waitTimeSeconds < 0 || waitTimeSeconds > 20) {
    throw new ConfigurationError(`wait time must be an integer from 0 to 20 seconds, got ${waitTimeSeconds}`);
  }
  if (!Number.isInteger(visibilityTimeoutSeconds) || visibilityTimeoutSeconds > 43_200) {
    throw new ConfigurationError(`visibility timeout must be an integer up to 43200 seconds, got ${visibilityTimeoutSeconds}`);
  }
  const modelCacheSize = options.modelCacheSize ?? 2;
  if (!Number.isInteger(modelCacheSize) || modelCacheSize < 1) {
    throw new ConfigurationError(`model cache size must be a positive integer, got ${modelCacheSize}`);
  }
  return {
    queueUrl: options.queueUrl,
    waitTimeSeconds,
    visibilityTimeoutSeconds,
    heartbeatSeconds,
    onStop: options.onStop ?? "abandon",
    engine: options.engine ?? "auto",
    modelCacheSize,
  };
}

function defaultLog(entry: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isAbortError(error: unknown): boolean {
  return (error as { name?: string } | undefined)?.name === "AbortError";
}

/**
 * Loaded models by engine and URL, least recently used first. Models in use by the current
 * message are never evicted, so an ensemble larger than the cache still runs.
 */
class ModelCache {
  private readonly entries = new Map<string, Promise<LoadedModel>>();

  constructor(
    private readonly capacity: number,
    private readonly load: LoadModel,
  ) {}

  async acquire(urls: readonly string[], engine: EngineChoice): Promise<LoadedModel[]> {
    const keys = urls.map((url) => `${engine}\u0000${url}`);
    const models: LoadedModel[] = [];
    for (const [i, key] of keys.entries()) {
      let entry = this.entries.get(key);
      if (entry === undefined) {
        entry = this.load(urls[i] as string, engine);
        // A failed load must not stay cached: the next delivery should try again.
        entry.catch(() => this.entries.delete(key));
      } else {
        this.entries.delete(key);
      }
      this.entries.set(key, entry);
      models.push(await entry);
    }
    await this.evict(new Set(keys));
    return models;
  }

  private async evict(inUse: ReadonlySet<string>): Promise<void> {
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.capacity) break;
      if (inUse.has(key)) continue;
      this.entries.delete(key);
      await (await entry).engine.dispose();
    }
  }

  async disposeAll(): Promise<void> {
    const entries = [...this.entries.values()];
    this.entries.clear();
    for (const entry of entries) await (await entry.catch(() => undefined))?.engine.dispose();
  }
}

/**
 * The queue loop. Takes one message at a time: a batch of a planned run, or an S3 event for the
 * drop folder. A message is deleted only after its results are written; anything else (a crash,
 * an unreadable or unknown message, a missing manifest) leaves it to come back after its
 * visibility timeout and, after the queue's maxReceiveCount, go to the dead-letter queue.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerStats> {
  const timing = resolveWorkerTiming(options);
  const sqs = options.clients?.sqs ?? defaultSqsClient();
  const s3 = options.clients?.s3 ?? defaultS3Client();
  const log = options.log ?? defaultLog;
  const signal = options.signal ?? new AbortController().signal;
  const loadModel: LoadModel =
    options.loadModel ?? (async (url, engine) => loadEngine(await readUrl(url, s3), { source: url, engine }));
  const models = new ModelCache(timing.modelCacheSize, loadModel);
  const manifests = new Map<string, Manifest>();
  const stats: WorkerStats = { batches: 0, dropObjects: 0, abandoned: 0, failedMessages: 0, poisonMessages: 0 };
  const worker = process.pid;

  const queueIsDrained = async (): Promise<boolean> => {
    const response = await sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: timing.queueUrl,
        AttributeNames: [
          "ApproximateNumberOfMessages",
          "ApproximateNumberOfMessagesNotVisible",
          "ApproximateNumberOfMessagesDelayed",
        ],
      }),
    );
    const attributes = response.Attributes ?? {};
    return (
      Number(attributes.ApproximateNumberOfMessages ?? 0) === 0 &&
      Number(attributes.ApproximateNumberOfMessagesNotVisible ?? 0) === 0 &&
      Number(attributes.ApproximateNumberOfMessagesDelayed ?? 0) === 0
    );
  };

  const setVisibility = async (received: Message, seconds: number): Promise<void> => {
    await sqs.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: timing.queueUrl,
        ReceiptHandle: received.ReceiptHandle,
        VisibilityTimeout: seconds,
      }),
    );
  };

  const remove = async (received: Message): Promise<void> => {
    await sqs.send(new DeleteMessageCommand({ QueueUrl: timing.queueUrl, ReceiptHandle: received.ReceiptHandle }));
  };

  /** Runs `work` while keeping the message hidden; the heartbeat starts first and always stops. */
  const holding = async <T>(received: Message, work: () => Promise<T>): Promise<T> => {
    const heartbeat = setInterval(() => {
      setVisibility(received, timing.visibilityTimeoutSeconds).catch((error: unknown) => {
        log({ event: "heartbeat-failed", worker, messageId: received.MessageId, error: message(error) });
      });
    }, timing.heartbeatSeconds * 1000);
    let protectedTask = false;
    try {
      if (options.protection) {
        try {
          await options.protection.protect(Math.ceil(timing.visibilityTimeoutSeconds / 60) + 1);
          protectedTask = true;
        } catch (error) {
          // Without protection a scale-in may stop us mid-batch; redelivery covers that case.
          log({ event: "protection-failed", worker, error: message(error) });
        }
      }
      return await work();
    } finally {
      clearInterval(heartbeat);
      if (protectedTask) {
        await options.protection?.release().catch((error: unknown) => {
          log({ event: "protection-release-failed", worker, error: message(error) });
        });
      }
    }
  };

  const stopRequested = (): boolean => signal.aborted && timing.onStop === "abandon";

  const loadManifest = async (body: BatchMessage): Promise<Manifest> => {
    const cached = manifests.get(body.out);
    if (cached !== undefined && cached.runId === body.runId) return cached;
    const manifest = await readManifest(openLocation(body.out, { s3 }));
    if (manifest.runId !== body.runId) {
      throw new StorageError(`message for run ${body.runId} but ${body.out}/manifest.json is run ${manifest.runId}`);
    }
    // Manifests never change after plan (plan refuses to overwrite one), so caching is safe.
    if (manifests.size >= 8) manifests.clear();
    manifests.set(body.out, manifest);
    return manifest;
  };

  const score = async (
    inputs: ImageInput[],
    loaded: LoadedModel[],
    crops: CropCount,
    applyExifOrientation: boolean,
  ): Promise<ResultRecord[]> => {
    const records: ResultRecord[] = [];
    for await (const record of scoreImages(inputs, {
      models: loaded.map((model) => ({ engine: model.engine, info: model.info })),
      crops,
      classNames: options.classNames,
      applyExifOrientation,
    })) {
      records.push(record);
      if (stopRequested()) throw new Abandoned();
    }
    return records;
  };

  const runBatch = async (received: Message, body: BatchMessage, receiveCount: number): Promise<void> => {
    const started = performance.now();
    const manifest = await loadManifest(body);
    const batch = manifest.batches.find((candidate) => candidate.id === body.batchId);
    if (batch === undefined) {
      throw new StorageError(`batch ${body.batchId} is not in ${body.out}/manifest.json (run ${manifest.runId})`);
    }
    log({ event: "batch-started", worker, run: manifest.runId, batch: batch.id, images: batch.keys.length, receiveCount });
    const loaded = await models.acquire(
      manifest.models.map((model) => model.url),
      manifest.engine,
    );
    loaded.forEach((model, i) => {
      const expected = manifest.models[i]?.sha256;
      if (model.info.sha256 !== expected) {
        throw new StorageError(
          `model ${manifest.models[i]?.url} has sha256 ${model.info.sha256}, but run ${manifest.runId} was planned with ${expected}`,
        );
      }
    });
    const input = openLocation(manifest.input, { s3 });
    const inputs: ImageInput[] = batch.keys.map((key, i) => ({
      key,
      label: batch.labels[i] ?? null,
      read: () => input.read(key),
    }));
    const records = await score(inputs, loaded, manifest.crops, false);
    if (records.length !== batch.keys.length || records.some((record, i) => record.key !== batch.keys[i])) {
      throw new StorageError(`scorer returned ${records.length} records for ${batch.keys.length} keys of batch ${batch.id}`);
    }
    const out = openLocation(manifest.out, { s3 });
    await out.write(batchResultKey(batch.id), records.map((record) => `${JSON.stringify(record)}\n`).join(""));
    await remove(received);
    const seconds = (performance.now() - started) / 1000;
    const failures = records.filter(isFailed).length;
    const crops = (records.length - failures) * manifest.crops * manifest.models.length;
    log({
      event: "batch-done",
      worker,
      run: manifest.runId,
      batch: batch.id,
      images: records.length,
      failures,
      seconds: Number(seconds.toFixed(3)),
      cropsPerSecond: Number((crops / seconds).toFixed(1)),
      receiveCount,
    });
    stats.batches++;
  };

  const runDrop = async (received: Message, objects: readonly S3ObjectEvent[]): Promise<void> => {
    const drop = options.drop;
    if (drop === undefined) {
      throw new ConfigurationError("S3 event received but this worker has no drop-folder settings (--model, --crops, --drop-out)");
    }
    const started = performance.now();
    const decisions = planDropEvent(objects);
    for (const decision of decisions) {
      if (decision.action === "skip") {
        log({ event: "drop-skipped", worker, bucket: decision.object.bucket, key: decision.object.key, reason: decision.reason });
      }
    }
    const wanted = decisions.flatMap((decision) => (decision.action === "score" ? [decision] : []));
    if (wanted.length > 0) {
      const [loaded] = await models.acquire([drop.model], timing.engine);
      const buckets = new Map<string, S3Location>();
      const inputs: ImageInput[] = wanted.map(({ object }) => {
        let bucket = buckets.get(object.bucket);
        if (bucket === undefined) {
          bucket = new S3Location(`s3://${object.bucket}`, s3);
          buckets.set(object.bucket, bucket);
        }
        const source = bucket;
        return { key: object.key, label: null, read: () => source.read(object.key) };
      });
      const records = await score(inputs, [loaded as LoadedModel], drop.crops, drop.applyExifOrientation ?? true);
      const out: Location = openLocation(drop.out, { s3 });
      for (const [i, decision] of wanted.entries()) {
        const record = records[i] as ResultRecord;
        await out.write(decision.resultKey, `${JSON.stringify(record)}\n`);
        log({
          event: "drop-done",
          worker,
          key: decision.object.key,
          out: `${out.url}/${decision.resultKey}`,
          failed: isFailed(record),
        });
      }
      stats.dropObjects += wanted.length;
    }
    await remove(received);
    log({
      event: "drop-message-done",
      worker,
      objects: objects.length,
      scored: wanted.length,
      seconds: Number(((performance.now() - started) / 1000).toFixed(3)),
    });
  };

  const handle = async (received: Message): Promise<void> => {
    const receiveCount = Number(received.Attributes?.ApproximateReceiveCount ?? 1);
    const messageId = received.MessageId;
    let body: unknown;
    try {
      body = JSON.parse(received.Body ?? "");
    } catch (error) {
      stats.poisonMessages++;
      log({ event: "poison", worker, messageId, receiveCount, reason: `body is not JSON: ${message(error)}` });
      return;
    }
    let kind: { batch: BatchMessage } | { objects: readonly S3ObjectEvent[] } | { test: true };
    try {
      const batch = parseBatchMessage(body);
      if (batch !== undefined) {
        kind = { batch };
      } else {
        const event = parseS3EventMessage(body);
        if (event === undefined) throw new StorageError("unknown message type (neither a batch nor an S3 event)");
        kind = event.kind === "test" ? { test: true } : { objects: event.objects };
      }
    } catch (error) {
      stats.poisonMessages++;
      log({ event: "poison", worker, messageId, receiveCount, reason: message(error) });
      return;
    }
    if ("test" in kind) {
      await remove(received);
      log({ event: "s3-test-event", worker, messageId });
      return;
    }
    try {
      await holding(received, () =>
        "batch" in kind ? runBatch(received, kind.batch, receiveCount) : runDrop(received, kind.objects),
      );
    } catch (error) {
      if (error instanceof Abandoned) {
        stats.abandoned++;
        // Visibility 0 hands the message to another worker now instead of after the timeout.
        await setVisibility(received, 0).catch(() => undefined);
        log({ event: "abandoned", worker, messageId, ...("batch" in kind ? { batch: kind.batch.batchId } : {}) });
        return;
      }
      stats.failedMessages++;
      log({
        event: "message-failed",
        worker,
        messageId,
        receiveCount,
        ...("batch" in kind ? { run: kind.batch.runId, batch: kind.batch.batchId } : {}),
        error: message(error),
      });
    }
  };

  log({ event: "worker-started", worker, queue: timing.queueUrl, untilEmpty: options.untilEmpty ?? false });
  try {
    while (!signal.aborted) {
      let received: Message[];
      try {
        const response = await sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: timing.queueUrl,
            MaxNumberOfMessages: 1,
            WaitTimeSeconds: timing.waitTimeSeconds,
            VisibilityTimeout: timing.visibilityTimeoutSeconds,
            MessageSystemAttributeNames: ["ApproximateReceiveCount"],
          }),
          { abortSignal: signal },
        );
        received = response.Messages ?? [];
      } catch (error) {
        if (signal.aborted || isAbortError(error)) break;
        log({ event: "receive-failed", worker, error: message(error) });
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (received.length === 0) {
        if (options.untilEmpty && (await queueIsDrained().catch(() => false))) {
          log({ event: "queue-empty", worker });
          break;
        }
        continue;
      }
      for (const one of received) await handle(one);
    }
  } finally {
    await models.disposeAll();
  }
  log({ event: "worker-stopped", worker, ...stats, reason: signal.aborted ? "signal" : "queue-empty" });
  return stats;
}

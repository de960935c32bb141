import { DEFAULT_INPUT_MAX_BYTES } from "../scoring/image-input.js";
import type { S3Client } from "@aws-sdk/client-s3";
import { StorageError } from "../model/errors.js";
import { measureEngines } from "../model/engine-meter.js";
import type { EngineChoice } from "../model/load.js";
import type { HeldMessage } from "./held-message.js";
import { batchResultKeyFor, readManifestWithDigest, type BatchMessage, type ManifestWithDigest } from "./manifest.js";
import type { LoadedModel, ModelCache } from "./model-cache.js";
import { isFailed, type ResultRecord } from "../scoring/records.js";
import { scoreImages, type ImageInput, type ScorerOptions } from "../scoring/scorer.js";
import { openLocation } from "../storage/open-location.js";

/** What the batch and drop jobs share: clients, class names, loaded models, the log. */
export interface JobContext {
  readonly s3: S3Client;
  readonly classNames: readonly string[];
  readonly models: ModelCache;
  /** Crops per engine call. Default: the scorer's. */
  readonly cropsPerCall?: number | undefined;
  /** Largest input object read, in bytes; a larger one is its error record. Default: DEFAULT_INPUT_MAX_BYTES. */
  readonly inputMaxBytes?: number | undefined;
  readonly log: (entry: Record<string, unknown>) => void;
}

/**
 * Scores inputs, telling the held message after each image (health, stop rule). A storage
 * fault, a broken model or the stop rule rejects; only an image's own fault is a record.
 */
export async function scoreHeld(
  context: JobContext,
  held: HeldMessage,
  inputs: readonly ImageInput[],
  loaded: readonly LoadedModel[],
  settings: Pick<ScorerOptions, "crops" | "applyExifOrientation" | "maxPixels">,
): Promise<ResultRecord[]> {
  const records: ResultRecord[] = [];
  await held.progressed(0, inputs.length);
  for await (const record of scoreImages(inputs, {
    ...settings,
    models: loaded.map((model) => ({ engine: model.engine, info: model.info })),
    classNames: context.classNames,
    ...(context.cropsPerCall !== undefined ? { batchCrops: context.cropsPerCall } : {}),
  })) {
    records.push(record);
    await held.progressed(records.length, inputs.length);
  }
  return records;
}

/** Manifests by run, read once per worker: plan never rewrites one (it refuses a used --out). */
export class ManifestCache {
  private readonly manifests = new Map<string, ManifestWithDigest>();

  constructor(private readonly s3: S3Client) {}

  /**
   * The manifest a message names. A message of another plan of the same --out (its digest or
   * run id differ: the prefix was replanned with --replace) is a StorageError: its batch must not
   * be scored with settings it was not planned with.
   */
  async get(body: BatchMessage): Promise<ManifestWithDigest> {
    const key = `${body.out}\u0000${body.manifestDigest}`;
    const cached = this.manifests.get(key);
    if (cached !== undefined) return cached;
    const read = await readManifestWithDigest(openLocation(body.out, { s3: this.s3 }));
    if (read.manifest.runId !== body.runId || read.manifestDigest !== body.manifestDigest) {
      throw new StorageError(
        `message for run ${body.runId} (manifest ${body.manifestDigest.slice(0, 16)}) but ${body.out}/manifest.json is run ` +
          `${read.manifest.runId} (manifest ${read.manifestDigest.slice(0, 16)}): the prefix was planned again`,
      );
    }
    if (this.manifests.size >= 8) this.manifests.clear();
    this.manifests.set(key, read);
    return read;
  }
}

/** The models of a manifest, loaded (or taken from the cache) and checked against its sha256s. */
async function modelsOf(context: JobContext, manifest: ManifestWithDigest["manifest"]): Promise<LoadedModel[]> {
  const loaded = await context.models.acquire(manifest.models, manifest.engine as EngineChoice);
  loaded.forEach((model, i) => {
    const expected = manifest.models[i]?.sha256;
    if (model.info.sha256 !== expected) {
      throw new StorageError(
        `model ${manifest.models[i]?.url} has sha256 ${model.info.sha256}, but run ${manifest.runId} was planned with ${expected}`,
      );
    }
  });
  return loaded;
}

/**
 * One batch of a planned run: its images scored with the manifest's models and settings, the
 * batch file written, then the message deleted. Any fault rejects before the write.
 */
export async function runBatchJob(context: JobContext, held: HeldMessage, manifests: ManifestCache, body: BatchMessage): Promise<void> {
  const started = performance.now();
  const { manifest, manifestDigest } = await manifests.get(body);
  const batch = manifest.batches.find((candidate) => candidate.id === body.batchId);
  if (batch === undefined) {
    throw new StorageError(`batch ${body.batchId} is not in ${body.out}/manifest.json (run ${manifest.runId})`);
  }
  const receiveCount = held.receiveCount;
  context.log({ event: "batch-started", run: manifest.runId, batch: batch.id, images: batch.keys.length, receiveCount });
  const loaded = await modelsOf(context, manifest);
  // Device, crops/s and the share of the batch the engines sat idle (on a GPU: waiting for the host).
  const usage = measureEngines(loaded.map((model) => model.engine));
  const input = openLocation(manifest.input, { s3: context.s3 });
  const inputs: ImageInput[] = batch.keys.map((key, i) => ({ key, label: batch.labels[i] ?? null, read: () => input.read(key, { maxBytes: context.inputMaxBytes ?? DEFAULT_INPUT_MAX_BYTES }) }));
  const records = await scoreHeld(context, held, inputs, loaded, {
    crops: manifest.crops,
    applyExifOrientation: manifest.applyExifOrientation,
    maxPixels: manifest.maxPixels,
  });
  if (records.length !== batch.keys.length || records.some((record, i) => record.key !== batch.keys[i])) {
    throw new StorageError(`scorer returned ${records.length} records for ${batch.keys.length} keys of batch ${batch.id}`);
  }
  const out = openLocation(manifest.out, { s3: context.s3 });
  await out.write(batchResultKeyFor(manifestDigest, batch.id), records.map((record) => `${JSON.stringify(record)}\n`).join(""));
  await held.delete();
  const seconds = (performance.now() - started) / 1000;
  const failures = records.filter(isFailed).length;
  const crops = (records.length - failures) * manifest.crops * manifest.models.length;
  context.log({
    event: "batch-done",
    run: manifest.runId,
    batch: batch.id,
    images: records.length,
    failures,
    seconds: Number(seconds.toFixed(3)),
    cropsPerSecond: Number((crops / seconds).toFixed(1)),
    engine: usage.finish(),
    receiveCount,
  });
}

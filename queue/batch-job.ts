import { DEFAULT_INPUT_MAX_BYTES } from "../scoring/image-input.js";
import type { S3Client } from "@aws-sdk/client-s3";
import { StorageError } from "../storage/errors.js";
import { measureEngines } from "../model/engine-meter.js";
import type { EngineChoice } from "../model/load.js";
import type { HeldMessage } from "./held-message.js";
import {
  batchResultKeyFor,
  digestOfManifest,
  MANIFEST_KEY,
  parseManifest,
  type BatchMessage,
  type Manifest,
  type ManifestBatch,
  type ManifestWithDigest,
} from "./manifest.js";
import { archiveBatchInputs, archiveChangedIn, type ArchiveIndexCache } from "./archive-batch.js";
import { PermanentMessageError, SupersededMessageError } from "./message-errors.js";
import type { LoadedModel, ModelCache } from "./model-cache.js";
import { isFailed, type ResultRecord } from "../scoring/records.js";
import { scoreImages, type ImageInput, type ScorerOptions } from "../scoring/scorer.js";
import type { Location } from "../storage/location.js";
import { objectVersion } from "../storage/object-version.js";
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
  settings: Pick<ScorerOptions, "crops" | "applyExifOrientation" | "maxPixels" | "classes">,
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

/** A manifest as a worker last read it, with the version of the stored file it came from. */
interface ReadManifest extends ManifestWithDigest {
  readonly version: string | undefined;
}

/**
 * Manifests by `out`, read again only when the stored file changed (one HEAD per message), so a
 * re-plan of the same `out` (`plan --replace`) is seen by a worker that read the earlier one.
 */
export class ManifestCache {
  private readonly manifests = new Map<string, ReadManifest>();

  constructor(private readonly s3: S3Client) {}

  /**
   * The manifest a message names. A message of another plan of the same `out` (the manifest
   * there has another digest or run id) is superseded: its run no longer exists. A manifest
   * that is missing, of an older format or malformed is permanent: the message can never be
   * worked on. A storage fault while reading rejects as itself (StorageError: try again later).
   */
  async get(body: BatchMessage): Promise<ManifestWithDigest> {
    const out = openLocation(body.out, { s3: this.s3 });
    const where = `${out.url}/${MANIFEST_KEY}`;
    const version = await objectVersion(where, this.s3);
    let read = this.manifests.get(out.url);
    if (read === undefined || version === undefined || read.version !== version) {
      read = await this.read(out, where, version);
      if (this.manifests.size >= 8) this.manifests.clear();
      this.manifests.set(out.url, read);
    }
    if (read.manifest.runId !== body.runId || read.manifestDigest !== body.manifestDigest) {
      throw new SupersededMessageError(
        `message for run ${body.runId} (manifest ${body.manifestDigest.slice(0, 16)}) but ${where} is run ` +
          `${read.manifest.runId} (manifest ${read.manifestDigest.slice(0, 16)}): the prefix was planned again`,
      );
    }
    return read;
  }

  private async read(out: Location, where: string, version: string | undefined): Promise<ReadManifest> {
    const bytes = await out.readIfExists(MANIFEST_KEY);
    // plan writes the manifest before any message and --replace overwrites it in place, so a
    // message whose manifest is missing belongs to a prefix that was deleted, not to a re-plan.
    if (bytes === undefined) throw new PermanentMessageError(`no manifest at ${where}: the run's output prefix was deleted or never planned`);
    let manifest;
    try {
      manifest = parseManifest(bytes.toString("utf8"), where);
    } catch (error) {
      throw new PermanentMessageError((error as Error).message, { cause: error });
    }
    return { manifest, manifestDigest: digestOfManifest(manifest), version };
  }
}

/** The models of a manifest, loaded (or taken from the cache) with the sha256s it was planned with. */
async function modelsOf(context: JobContext, manifest: Manifest): Promise<LoadedModel[]> {
  return context.models.acquire(
    manifest.models.map((model) => ({ url: model.url, preprocess: model.preprocess, sha256: model.sha256 })),
    manifest.engine as EngineChoice,
  );
}

/** What a worker reads once per run and keeps: manifests, and the indexes of archives planned. */
export interface RunCaches {
  readonly manifests: ManifestCache;
  readonly archiveIndexes: ArchiveIndexCache;
}

/**
 * The batch's inputs: loose keys each read from the input, or archive members read by range.
 * An archive no longer the one planned (412 on If-Match, deleted) fails the batch for good.
 */
async function batchInputs(context: JobContext, caches: RunCaches, read: ManifestWithDigest, batch: ManifestBatch): Promise<ImageInput[]> {
  const { manifest, manifestDigest } = read;
  const maxBytes = context.inputMaxBytes ?? DEFAULT_INPUT_MAX_BYTES;
  const { members } = batch;
  if (members === undefined) {
    const input = openLocation(manifest.input, { s3: context.s3 });
    return batch.keys.map((key, i) => ({ key, label: batch.labels[i] ?? null, read: () => input.read(key, { maxBytes }) }));
  }
  const images = await caches.archiveIndexes.get(manifest, manifestDigest, members.archive);
  return archiveBatchInputs(manifest, { ...batch, members }, images, context.s3, maxBytes);
}

function permanentIfArchiveChanged(error: unknown): unknown {
  const changed = archiveChangedIn(error);
  return changed === undefined ? error : new PermanentMessageError(changed.message, { cause: error });
}

/**
 * One batch of a planned run: its images scored with the manifest's models and settings, the
 * batch file written, then the message deleted. Any fault rejects before the write.
 */
export async function runBatchJob(context: JobContext, held: HeldMessage, caches: RunCaches, body: BatchMessage): Promise<void> {
  const started = performance.now();
  const read = await caches.manifests.get(body);
  const { manifest, manifestDigest } = read;
  const batch = manifest.batches.find((candidate) => candidate.id === body.batchId);
  if (batch === undefined) {
    throw new PermanentMessageError(`batch ${body.batchId} is not in ${body.out}/${MANIFEST_KEY} (run ${manifest.runId})`);
  }
  const receiveCount = held.receiveCount;
  context.log({ event: "batch-started", run: manifest.runId, batch: batch.id, images: batch.keys.length, receiveCount });
  const loaded = await modelsOf(context, manifest);
  // Device, crops/s and the share of the batch the engines sat idle (on a GPU: waiting for the host).
  const usage = measureEngines(loaded.map((model) => model.engine));
  let records: ResultRecord[];
  try {
    const inputs = await batchInputs(context, caches, read, batch);
    records = await scoreHeld(context, held, inputs, loaded, {
      crops: manifest.crops,
      applyExifOrientation: manifest.applyExifOrientation,
      maxPixels: manifest.maxPixels,
      classes: manifest.classes,
    });
  } catch (error) {
    throw permanentIfArchiveChanged(error);
  }
  if (records.length !== batch.keys.length || records.some((record, i) => record.key !== batch.keys[i])) {
    throw new StorageError(`scorer returned ${records.length} records for ${batch.keys.length} keys of batch ${batch.id}`);
  }
  const out = openLocation(manifest.out, { s3: context.s3 });
  held.assertHeld();
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

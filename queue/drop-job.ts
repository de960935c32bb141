import { HeadObjectCommand } from "@aws-sdk/client-s3";
import type { CropCount } from "../model/predict.js";
import type { EngineChoice } from "../model/load.js";
import { StorageError } from "../storage/errors.js";
import type { JobContext } from "./batch-job.js";
import { scoreHeld } from "./batch-job.js";
import type { HeldMessage } from "./held-message.js";
import { PermanentMessageError } from "./message-errors.js";
import type { Location } from "../storage/location.js";
import type { LoadedModel } from "./model-cache.js";
import { isFailed, type ResultRecord } from "../scoring/records.js";
import { planDropEvent, type DropDecision, type S3ObjectEvent } from "./s3-events.js";
import { S3Location } from "../storage/s3-location.js";
import type { ImageInput } from "../scoring/scorer.js";
import { openLocation } from "../storage/open-location.js";

/** Largest dropped object read, in bytes: a drop folder takes uploads from people, not a curated set. */
export const DEFAULT_DROP_MAX_BYTES = 50 * 1024 * 1024;
/** Pixel limit for dropped images, below validation's 100 million: a phone photo is 12-50 MP. */
export const DEFAULT_DROP_MAX_PIXELS = 60_000_000;

/** Settings for S3 event messages (the drop folder). */
export interface DropSettings {
  /** Model file (path or s3:// URL) used for every dropped image. */
  readonly model: string;
  readonly engine: EngineChoice;
  readonly crops: CropCount;
  /** Folder or s3:// prefix receiving `<original key>.json`. */
  readonly out: string;
  /** Apply EXIF orientation (phone photos). Default: true. */
  readonly applyExifOrientation?: boolean;
  /** Default: DEFAULT_DROP_MAX_BYTES. */
  readonly maxBytes?: number;
  /** Default: DEFAULT_DROP_MAX_PIXELS. */
  readonly maxPixels?: number;
}

type Wanted = Extract<DropDecision, { action: "score" }>;

/** The object's size from its event, or from a HEAD when the event has none. */
async function sizeOf(context: JobContext, object: S3ObjectEvent): Promise<number | undefined> {
  if (object.size !== undefined) return object.size;
  try {
    const head = await context.s3.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key }));
    return head.ContentLength;
  } catch (error) {
    // A 404 is the object's own story (deleted since): the read below makes it an error record.
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
    throw new StorageError(`cannot stat s3://${object.bucket}/${object.key}: ${(error as Error).message}`, { cause: error });
  }
}

/** An input per wanted object; one over the size cap gets an error record without being read. */
async function inputsFor(context: JobContext, wanted: readonly Wanted[], maxBytes: number): Promise<{ inputs: ImageInput[]; oversized: Map<string, ResultRecord> }> {
  const inputs: ImageInput[] = [];
  const oversized = new Map<string, ResultRecord>();
  const buckets = new Map<string, S3Location>();
  for (const { object } of wanted) {
    const size = await sizeOf(context, object);
    if (size !== undefined && size > maxBytes) {
      const error = `s3://${object.bucket}/${object.key}: ${size} bytes, more than the drop folder's limit of ${maxBytes} bytes`;
      oversized.set(object.key, { key: object.key, error });
      continue;
    }
    let bucket = buckets.get(object.bucket);
    if (bucket === undefined) {
      bucket = new S3Location(`s3://${object.bucket}`, context.s3);
      buckets.set(object.bucket, bucket);
    }
    const source = bucket;
    // The event's size can be stale (the key rewritten since): the read itself is capped too.
    inputs.push({ key: object.key, label: null, read: () => source.read(object.key, { maxBytes }) });
  }
  return { inputs, oversized };
}

/** S3's longest object key, in UTF-8 bytes. */
export const S3_MAX_KEY_BYTES = 1024;

/**
 * Refuses a message whose result key S3 could never store: `<drop out>/<key>.json` can pass
 * 1,024 bytes although the dropped key itself did not, and S3 would refuse every write of it.
 */
function assertStorableKeys(out: Location, wanted: readonly Wanted[]): void {
  if (!(out instanceof S3Location)) return;
  for (const { object, resultKey } of wanted) {
    const key = out.objectKey(resultKey);
    const bytes = Buffer.byteLength(key, "utf8");
    if (bytes > S3_MAX_KEY_BYTES) {
      throw new PermanentMessageError(
        // Bytes first: the reason attribute is cut at 1,024 characters and these keys are long.
        `result key ${bytes} bytes, more than S3's ${S3_MAX_KEY_BYTES}, for s3://${object.bucket}/${object.key.slice(0, 100)}... ` +
          `(result s3://${out.bucket}/${key.slice(0, 100)}...): shorten the drop output prefix or the dropped key`,
      );
    }
  }
}

/**
 * The objects of one S3 event message: each new image scored with the drop model and written
 * to `<drop out>/<key>.json` with the model's URL and sha256, then the message deleted. Objects that are not new images are
 * skipped with a log line; an image over the size cap or that does not decode gets an error
 * record; a storage fault or a broken model rejects before anything is deleted.
 */
export async function runDropJob(context: JobContext, held: HeldMessage, drop: DropSettings, objects: readonly S3ObjectEvent[]): Promise<void> {
  const started = performance.now();
  const decisions = planDropEvent(objects);
  for (const decision of decisions) {
    if (decision.action === "skip") {
      context.log({ event: "drop-skipped", bucket: decision.object.bucket, key: decision.object.key, reason: decision.reason });
    }
  }
  const wanted = decisions.filter((decision): decision is Wanted => decision.action === "score");
  if (wanted.length > 0) {
    const out = openLocation(drop.out, { s3: context.s3 });
    assertStorableKeys(out, wanted);
    const { inputs, oversized } = await inputsFor(context, wanted, drop.maxBytes ?? DEFAULT_DROP_MAX_BYTES);
    const [loaded] = await context.models.acquire([{ url: drop.model }], drop.engine);
    // Workers load the drop model when they start or when it changed, so results from
    // different workers may come from different files: each says which one.
    const model = { url: drop.model, sha256: (loaded as LoadedModel).info.sha256 };
    const scored = await scoreHeld(context, held, inputs, [loaded as LoadedModel], {
      crops: drop.crops,
      applyExifOrientation: drop.applyExifOrientation ?? true,
      maxPixels: drop.maxPixels ?? DEFAULT_DROP_MAX_PIXELS,
    });
    const byKey = new Map<string, ResultRecord>([...oversized, ...scored.map((record) => [record.key, record] as const)]);
    for (const decision of wanted) {
      const record = byKey.get(decision.object.key) as ResultRecord;
      held.assertHeld();
      await out.write(decision.resultKey, `${JSON.stringify({ ...record, model })}\n`);
      context.log({ event: "drop-done", key: decision.object.key, out: `${out.url}/${decision.resultKey}`, failed: isFailed(record), model });
    }
  }
  await held.delete();
  context.log({
    event: "drop-message-done",
    objects: objects.length,
    scored: wanted.length,
    seconds: Number(((performance.now() - started) / 1000).toFixed(3)),
  });
}

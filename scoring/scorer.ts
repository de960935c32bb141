import type { Crop, Scheme } from "../model/image/crop-types.js";
import type { CropCount } from "../model/image/crops.js";
import { cropPlan, cropsForCount, schemeCropIndices } from "../model/image/crops.js";
import type { Engine, ModelInfo } from "../model/engine.js";
import { NUM_CLASSES } from "../model/engine.js";
import { ConfigurationError } from "../model/errors.js";
import { cropVerdicts, predictImage, restrictRows, schemesForCount, topKEntries } from "../model/predict.js";
import { uniqueCropWindows } from "../model/image/sampling.js";
import { CropBatcher, type Pending } from "./crop-batcher.js";
import type { ImageInput } from "./image-input.js";
import { prefetchReads } from "./prefetch.js";
import { messageOf, prepareImage, type Prepared } from "./prepare-image.js";
import type { ResultRecord, SchemeProbability, SchemeTop5 } from "./records.js";
import { encodePositions } from "./statistics.js";

export type { ImageInput } from "./image-input.js";
export { httpStatusOf } from "./prepare-image.js";

export interface ScorerOptions {
  /** The models, in --model order; more than one makes an ensemble. */
  models: { engine: Engine; info: ModelInfo }[];
  /** Crops computed per image: 1 yields scheme "1", 10 yields "1" and "10", 144 all three. */
  crops: CropCount;
  /** First synset name per class index, for top5 entries. */
  classNames: readonly string[];
  /** Rotate by EXIF orientation: false for validation, true for the drop folder. */
  applyExifOrientation: boolean;
  /** Pixel limit per image. Default: decode.ts's DEFAULT_MAX_PIXELS (100 million). */
  maxPixels?: number;
  /**
   * Class subset (indices, ascending; scoring/class-subset.ts): each crop's softmax is
   * restricted to it and renormalised before averaging, and top-5 lists hold only its classes.
   * Default: all 1000 classes.
   */
  classes?: readonly number[] | undefined;
  /**
   * Crops per engine call, packed across images. Default: 16. Measured with onnxruntime on the
   * rewritten BVLC graph (bench/, 2 cores): crops/s flat from 8 to 48 within the noise, while
   * peak RSS grows about 20 MB per crop (0.6 GB at 16, 1.2 GB at 48); the tfjs pool splits a
   * call of 16 into 8 per worker.
   */
  batchCrops?: number;
  /** Images read and decoded ahead while the engine runs. Default: 3. */
  lookAhead?: number;
  /**
   * Inputs whose `read()` is started ahead of decoding, so an S3 object is already here when
   * the decoder wants it; bounds both the requests in flight and the encoded bytes held.
   * Default: 8. Values below `lookAhead` are raised to it.
   */
  readAhead?: number;
}

/** Default of `ScorerOptions.batchCrops`. */
export const DEFAULT_BATCH_CROPS = 16;
/** Default of `ScorerOptions.lookAhead`. */
export const DEFAULT_LOOK_AHEAD = 3;
/** Default of `ScorerOptions.readAhead`. */
export const DEFAULT_READ_AHEAD = 8;

function validate(options: ScorerOptions): void {
  if (options.models.length === 0) throw new ConfigurationError("scoring needs at least one model");
  if (options.classNames.length !== NUM_CLASSES) {
    throw new ConfigurationError(`expected ${NUM_CLASSES} class names, got ${options.classNames.length}`);
  }
  const batch = options.batchCrops ?? DEFAULT_BATCH_CROPS;
  if (!Number.isInteger(batch) || batch < 1) throw new ConfigurationError(`batch must be a positive integer, got ${batch}`);
  const ahead = options.lookAhead ?? DEFAULT_LOOK_AHEAD;
  if (!Number.isInteger(ahead) || ahead < 1) throw new ConfigurationError(`lookAhead must be a positive integer, got ${ahead}`);
  const classes = options.classes;
  if (classes !== undefined && (classes.length < 2 || classes.some((c, i) => !Number.isInteger(c) || c < 0 || c >= NUM_CLASSES || (i > 0 && c <= (classes[i - 1] as number))))) {
    throw new ConfigurationError(`a class subset must hold 2 or more class indices 0..${NUM_CLASSES - 1}, ascending, each once`);
  }
  const reads = options.readAhead ?? DEFAULT_READ_AHEAD;
  if (!Number.isInteger(reads) || reads < 1) throw new ConfigurationError(`readAhead must be a positive integer, got ${reads}`);
}

/** What a run computes and reports, fixed once per scoreImages call. */
interface RecordPlan {
  readonly computed: number[];
  readonly schemes: Scheme[];
  readonly schemeCrops: Partial<Record<Scheme, number[]>>;
  readonly classNames: readonly string[];
  readonly models: number;
  readonly positions: boolean;
  readonly classes: readonly number[] | undefined;
}

/** The record of an image whose every window is classified: top-5 per scheme, per model, positions. */
function recordOf(pending: Pending, plan: RecordPlan): ResultRecord {
  if (plan.classes !== undefined) {
    for (const values of pending.probabilities) restrictRows(values, values.length / NUM_CLASSES, NUM_CLASSES, plan.classes);
  }
  const { ensemble, perModel } = predictImage(pending.probabilities, NUM_CLASSES, plan.computed, plan.schemeCrops, pending.rowOf);
  const top5 = (means: Partial<Record<Scheme, Float64Array>>): SchemeTop5 => {
    const out: SchemeTop5 = {};
    for (const scheme of plan.schemes) out[scheme] = topKEntries(means[scheme] as Float64Array, plan.classNames, 5, plan.classes);
    return out;
  };
  // The labelled class's probability, read from the very means top5 ranks, for NLL.
  const labelProbability = (means: Partial<Record<Scheme, Float64Array>>): { labelProbability?: SchemeProbability } => {
    const label = pending.label;
    if (label === null) return {};
    const out: SchemeProbability = {};
    for (const scheme of plan.schemes) out[scheme] = (means[scheme] as Float64Array)[label] as number;
    return { labelProbability: out };
  };
  const verdicts =
    plan.positions && pending.label !== null ? cropVerdicts(pending.probabilities, NUM_CLASSES, pending.rowOf, pending.label) : undefined;
  return {
    key: pending.key,
    label: pending.label,
    width: pending.width,
    height: pending.height,
    top5: top5(ensemble),
    ...labelProbability(ensemble),
    ...(plan.models > 1 ? { models: perModel.map((means) => ({ top5: top5(means), ...labelProbability(means) })) } : {}),
    ...(verdicts !== undefined ? { positions: encodePositions(verdicts.top1, verdicts.top5) } : {}),
  };
}

/** A decoded image as the batcher takes it; a size the crop plan refuses is the image's error. */
function pendingOf(prepared: Extract<Prepared, { image: unknown }>, computed: readonly number[], models: number): Pending | { key: string; error: string } {
  const { image } = prepared;
  try {
    const plan = cropPlan(image.width, image.height);
    const { unique, indexOf } = uniqueCropWindows(computed.map((i) => plan[i] as Crop));
    return {
      key: prepared.key,
      label: prepared.label,
      width: image.width,
      height: image.height,
      image,
      windows: unique,
      rowOf: indexOf,
      nextWindow: 0,
      windowsDone: 0,
      probabilities: Array.from({ length: models }, () => new Float32Array(unique.length * NUM_CLASSES)),
    };
  } catch (error) {
    return { key: prepared.key, error: messageOf(error) };
  }
}

/**
 * Reads and decodes up to `lookAhead` inputs ahead of the one the batcher takes, with
 * `readAhead` reads started ahead of those, in input order.
 */
function readAheadOf(inputs: AsyncIterable<ImageInput> | Iterable<ImageInput>, options: ScorerOptions) {
  const lookAhead = options.lookAhead ?? DEFAULT_LOOK_AHEAD;
  const source = prefetchReads(inputs, Math.max(lookAhead, options.readAhead ?? DEFAULT_READ_AHEAD));
  const ahead: Promise<Prepared>[] = [];
  let exhausted = false;
  return {
    async next(): Promise<Prepared | undefined> {
      while (!exhausted && ahead.length < lookAhead + 1) {
        const next = await source.next();
        if (next.done) exhausted = true;
        else {
          const prepared = prepareImage(next.value, options);
          // A fault may reject it before its turn; it is rethrown when awaited in order.
          prepared.catch(() => undefined);
          ahead.push(prepared);
        }
      }
      return ahead.shift();
    },
    async close(): Promise<void> {
      await source.return(undefined);
    },
  };
}

/**
 * Scores images with one model or an ensemble and yields exactly one record per input, in
 * input order. Only an image's own fault becomes `{ key, error }`: bytes that do not decode
 * (ImageDecodeError), a listed key that is gone (MissingObjectError), a size the crop plan
 * refuses. Everything else rejects out of the generator and ends the run, and what was already
 * yielded stands for a resume: a failed read (a StorageError naming the key, the original on
 * `cause`), an engine failure, or outputs that are not finite (ModelOutputError naming the
 * model file; nothing from that engine call is yielded).
 *
 * Crops of consecutive images are packed into engine calls of `batchCrops`; each image is
 * sampled once per distinct preprocess/layout among the models, straight into the batch, and
 * its pixels are dropped as soon as its last window is sampled. The engine's run is
 * asynchronous (onnxruntime on its own threads), so the next batch is sampled into a second
 * buffer while it runs; up to `lookAhead` images are decoded (in sharp's threads) and
 * `readAhead` inputs read ahead meanwhile, so memory stays flat whatever the number of images.
 */
export async function* scoreImages(
  inputs: AsyncIterable<ImageInput> | Iterable<ImageInput>,
  options: ScorerOptions,
): AsyncGenerator<ResultRecord> {
  validate(options);
  const computed = cropsForCount(options.crops);
  const schemes = schemesForCount(options.crops);
  const schemeCrops: Partial<Record<Scheme, number[]>> = {};
  for (const scheme of schemes) schemeCrops[scheme] = schemeCropIndices(scheme);
  const plan: RecordPlan = {
    computed,
    schemes,
    schemeCrops,
    classNames: options.classNames,
    models: options.models.length,
    positions: options.crops === 144,
    classes: options.classes,
  };
  // Records leave in input order: a failed image waits behind images still in the batch.
  const order: { record?: ResultRecord }[] = [];
  const done = new Map<Pending, { record?: ResultRecord }>();
  const batcher = new CropBatcher(options.models, options.batchCrops ?? DEFAULT_BATCH_CROPS, (pending) => {
    (done.get(pending) as { record?: ResultRecord }).record = recordOf(pending, plan);
    done.delete(pending);
  });
  function* ready(): Generator<ResultRecord> {
    while (order[0]?.record !== undefined) yield (order.shift() as { record: ResultRecord }).record;
  }
  const reads = readAheadOf(inputs, options);
  try {
    for (let prepared = await reads.next(); prepared !== undefined; prepared = await reads.next()) {
      const pending = "error" in prepared ? prepared : pendingOf(prepared, computed, options.models.length);
      if ("error" in pending) {
        order.push({ record: { key: pending.key, error: pending.error } });
      } else {
        const slot = {};
        order.push(slot);
        done.set(pending, slot);
        await batcher.pack(pending);
      }
      yield* ready();
    }
    await batcher.flush();
    await batcher.settle();
    yield* ready();
  } finally {
    // A consumer that stops early must not leave a call running on an engine it may dispose.
    await batcher.drain();
    await reads.close();
  }
}

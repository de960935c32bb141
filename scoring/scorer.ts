import type { Crop, Scheme } from "../model/crop-types.js";
import type { CropCount } from "../model/crops.js";
import { cropPlan, cropsForCount, schemeCropIndices } from "../model/crops.js";
import type { DecodedImage } from "../model/decode.js";
import { decodeImage } from "../model/decode.js";
import type { Engine, InputLayout, ModelInfo } from "../model/engine.js";
import { NUM_CLASSES } from "../model/engine.js";
import { ConfigurationError, MissingObjectError, ModelOutputError, StorageError, isImageFault } from "../model/errors.js";
import { ensembleMean, labelRank, schemeMeans, schemesForCount, topKEntries } from "../model/predict.js";
import type { Preprocess } from "../model/preprocess.js";
import { CROP_VALUES, sampleCrops, uniqueCropWindows } from "../model/sampling.js";
import type { ImageInput } from "./image-input.js";
import { prefetchReads } from "./prefetch.js";

export type { ImageInput } from "./image-input.js";
import type { ResultRecord, SchemeTop5 } from "./records.js";
import { encodePositions } from "./statistics.js";

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

type Prepared = { key: string; label: number | null; image: DecodedImage } | { key: string; error: string };

/** Models that read identically sampled crops share one sampling pass. */
interface SamplingGroup {
  readonly preprocess: Preprocess;
  readonly layout: InputLayout;
  readonly models: number[];
  /**
   * Two batch buffers: the engine reads one while the next batch is sampled into the other,
   * so at most two batches of crops exist whatever the number of images.
   */
  readonly buffers: [Float32Array, Float32Array];
}

/** An image in flight: its windows still to sample and each model's probabilities so far. */
interface Pending {
  readonly key: string;
  readonly label: number | null;
  readonly width: number;
  readonly height: number;
  image: DecodedImage | undefined;
  /** Distinct sampling windows of the computed crops (coinciding windows are classified once). */
  readonly windows: Crop[];
  /** Row in `probabilities` of each computed crop. */
  readonly rowOf: number[];
  nextWindow: number;
  windowsDone: number;
  /** Per model: windows x NUM_CLASSES. */
  readonly probabilities: Float32Array[];
  record: ResultRecord | undefined;
}

/** One stretch of a batch: windows [from, to) of an image at batch position `at`. */
interface Segment {
  readonly pending: Pending;
  readonly from: number;
  readonly to: number;
  readonly at: number;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The HTTP status and error code behind a storage failure (the AWS SDK puts them on the error
 * it throws, which storage wraps as `cause`), e.g. "HTTP 403 AccessDenied"; undefined when
 * there is none, as for a local file.
 */
export function httpStatusOf(error: unknown): string | undefined {
  for (let at: unknown = error, depth = 0; at !== undefined && at !== null && depth < 8; depth++) {
    const status = (at as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
    if (typeof status === "number") {
      const code = (at as { Code?: unknown }).Code ?? (at as { name?: unknown }).name;
      const named = typeof code === "string" && code !== "" && code !== "Error" && code !== String(status);
      return named ? `HTTP ${status} ${code}` : `HTTP ${status}`;
    }
    at = (at as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * A read that failed for any reason but the key being gone: a storage fault (denied, throttled,
 * timed out, reset), never the image's own fault, so it fails the run or batch instead of
 * becoming a record. The original error stays on `cause`.
 */
function readFault(key: string, error: unknown): StorageError {
  const message = messageOf(error);
  const status = httpStatusOf(error);
  const detail = status !== undefined && !message.includes(status) ? `${message} (${status})` : message;
  return new StorageError(`cannot read image ${key}: ${detail}`, { cause: error });
}

/**
 * Reads and decodes one input. Only the image's own faults (bytes that do not decode, a listed
 * key that is gone) become its error record; a failed read is a StorageError naming the key,
 * and anything else from the decoder is rethrown as it is.
 */
async function prepareImage(input: ImageInput, options: ScorerOptions): Promise<Prepared> {
  let bytes: Uint8Array;
  try {
    bytes = await input.read();
  } catch (error) {
    // A fixed sentence, not the storage's text (which names a local absolute path), so the
    // record is the same on every machine.
    if (error instanceof MissingObjectError) return { key: input.key, error: `${input.key}: not found (listed, but gone when read)` };
    if (isImageFault(error)) return { key: input.key, error: messageOf(error) };
    throw readFault(input.key, error);
  }
  try {
    const image = await decodeImage(bytes, {
      source: input.key,
      applyExifOrientation: options.applyExifOrientation,
      ...(options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {}),
    });
    return { key: input.key, label: input.label, image };
  } catch (error) {
    if (isImageFault(error)) return { key: input.key, error: messageOf(error) };
    throw error;
  }
}

/**
 * One pass over an engine call's output: a value that is not finite (NaN, infinite) means the
 * model is broken, not the image, so the run stops before anything of this batch is recorded.
 */
function assertFinite(out: Float32Array, info: ModelInfo, batch: readonly Segment[]): void {
  for (let i = 0; i < out.length; i++) {
    if (Number.isFinite(out[i])) continue;
    const crop = Math.floor(i / NUM_CLASSES);
    const segment = batch.find(({ from, to, at }) => crop >= at && crop < at + to - from);
    throw new ModelOutputError(
      `model ${info.file} (sha256 ${info.sha256}) gave ${String(out[i])} for class ${i % NUM_CLASSES} ` +
        `on a crop of ${segment?.pending.key ?? "an image"}; a model's outputs must be finite probabilities`,
    );
  }
}

function validate(options: ScorerOptions): void {
  if (options.models.length === 0) throw new ConfigurationError("scoring needs at least one model (--model FILE.onnx)");
  if (options.classNames.length !== NUM_CLASSES) {
    throw new ConfigurationError(`expected ${NUM_CLASSES} class names, got ${options.classNames.length}`);
  }
  const batch = options.batchCrops ?? DEFAULT_BATCH_CROPS;
  if (!Number.isInteger(batch) || batch < 1) throw new ConfigurationError(`batch must be a positive integer, got ${batch}`);
  const ahead = options.lookAhead ?? DEFAULT_LOOK_AHEAD;
  if (!Number.isInteger(ahead) || ahead < 1) throw new ConfigurationError(`lookAhead must be a positive integer, got ${ahead}`);
  const reads = options.readAhead ?? DEFAULT_READ_AHEAD;
  if (!Number.isInteger(reads) || reads < 1) throw new ConfigurationError(`readAhead must be a positive integer, got ${reads}`);
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
  const batchCrops = options.batchCrops ?? DEFAULT_BATCH_CROPS;
  const lookAhead = options.lookAhead ?? DEFAULT_LOOK_AHEAD;
  const readAhead = Math.max(lookAhead, options.readAhead ?? DEFAULT_READ_AHEAD);
  const { models, classNames } = options;
  const computed = cropsForCount(options.crops);
  const schemes = schemesForCount(options.crops);
  const schemeCrops: Partial<Record<Scheme, number[]>> = {};
  for (const scheme of schemes) schemeCrops[scheme] = schemeCropIndices(scheme);

  const groups = new Map<string, SamplingGroup>();
  models.forEach(({ engine }, i) => {
    const id = JSON.stringify([engine.preprocess, engine.inputLayout]);
    let group = groups.get(id);
    if (!group) {
      group = {
        preprocess: engine.preprocess,
        layout: engine.inputLayout,
        models: [],
        buffers: [new Float32Array(batchCrops * CROP_VALUES), new Float32Array(batchCrops * CROP_VALUES)],
      };
      groups.set(id, group);
    }
    group.models.push(i);
  });

  const finalize = (pending: Pending): ResultRecord => {
    const perModel = pending.probabilities.map((values) =>
      schemeMeans(values, NUM_CLASSES, computed, schemeCrops, pending.rowOf),
    );
    const top5 = (means: Partial<Record<Scheme, Float64Array>>): SchemeTop5 => {
      const out: SchemeTop5 = {};
      for (const scheme of schemes) out[scheme] = topKEntries(means[scheme] as Float64Array, classNames, 5);
      return out;
    };
    const ensemble: Partial<Record<Scheme, Float64Array>> = {};
    for (const scheme of schemes) {
      ensemble[scheme] = ensembleMean(perModel.map((means) => means[scheme] as Float64Array));
    }
    const positions =
      options.crops === 144 && pending.label !== null ? positionVerdicts(pending, pending.label) : undefined;
    return {
      key: pending.key,
      label: pending.label,
      width: pending.width,
      height: pending.height,
      top5: top5(ensemble),
      ...(models.length > 1 ? { models: perModel.map((means) => ({ top5: top5(means) })) } : {}),
      ...(positions !== undefined ? { positions } : {}),
    };
  };

  /**
   * Each of the 144 positions judged alone (the models' mean at that position), so a run can
   * report which crops matter at two bits per position per image instead of keeping the
   * 144 x 1000 probabilities.
   */
  const positionVerdicts = (pending: Pending, label: number): string => {
    const top1: boolean[] = [];
    const top5: boolean[] = [];
    const mean = new Float64Array(NUM_CLASSES);
    for (let position = 0; position < computed.length; position++) {
      const row = pending.rowOf[position] as number;
      mean.fill(0);
      for (const values of pending.probabilities) {
        for (let c = 0; c < NUM_CLASSES; c++) mean[c] = (mean[c] as number) + (values[row * NUM_CLASSES + c] as number);
      }
      // Divide as ensembleMean does, so position (256, center, center) judges exactly as scheme "1".
      for (let c = 0; c < NUM_CLASSES; c++) mean[c] = (mean[c] as number) / pending.probabilities.length;
      const rank = labelRank(mean, label);
      top1.push(rank === 0);
      top5.push(rank < 5);
    }
    return encodePositions(top1, top5);
  };

  // Records leave in input order: a failed image waits behind images still in the batch.
  const order: { key: string; pending?: Pending; record?: ResultRecord }[] = [];
  function* ready(): Generator<ResultRecord> {
    while (order.length > 0) {
      const head = order[0] as (typeof order)[number];
      const record = head.record ?? head.pending?.record;
      if (!record) return;
      order.shift();
      yield record;
    }
  }

  let segments: Segment[] = [];
  let filled = 0;
  /** Which of each group's two buffers is being filled. */
  let side: 0 | 1 = 0;
  /** The engine call on the other buffer, if one is running. */
  let inflight: Promise<void> | undefined;

  const classifyBatch = async (batch: Segment[], count: number, buffer: 0 | 1): Promise<void> => {
    for (const group of groups.values()) {
      for (const m of group.models) {
        const { engine, info } = models[m] as ScorerOptions["models"][number];
        const out = await engine.classify(group.buffers[buffer].subarray(0, count * CROP_VALUES), count);
        assertFinite(out, info, batch);
        for (const { pending, from, to, at } of batch) {
          const rows = out.subarray(at * NUM_CLASSES, (at + to - from) * NUM_CLASSES);
          (pending.probabilities[m] as Float32Array).set(rows, from * NUM_CLASSES);
        }
      }
    }
    for (const { pending, from, to } of batch) {
      pending.windowsDone += to - from;
      if (pending.windowsDone === pending.windows.length) pending.record = finalize(pending);
    }
  };

  /** Waits for the running engine call; its failure ends the run here. */
  const settle = async (): Promise<void> => {
    const running = inflight;
    inflight = undefined;
    if (running) await running;
  };

  /** Hands the filled buffer to the engine and switches to the other one. */
  const runBatch = async (): Promise<void> => {
    if (filled === 0) return;
    // The other buffer is free only once its call has returned.
    await settle();
    const running = classifyBatch(segments, filled, side);
    // Marked handled now; settle() still rethrows a failure to the generator.
    running.catch(() => undefined);
    inflight = running;
    segments = [];
    filled = 0;
    side = side === 0 ? 1 : 0;
  };

  /** Samples the image's remaining windows into the batch, running the engine whenever it fills. */
  const pack = async (pending: Pending): Promise<void> => {
    while (pending.nextWindow < pending.windows.length) {
      const from = pending.nextWindow;
      const to = Math.min(pending.windows.length, from + batchCrops - filled);
      const crops = pending.windows.slice(from, to);
      for (const group of groups.values()) {
        sampleCrops(
          pending.image as DecodedImage,
          crops,
          { preprocess: group.preprocess, layout: group.layout },
          group.buffers[side],
          filled * CROP_VALUES,
        );
      }
      segments.push({ pending, from, to, at: filled });
      filled += to - from;
      pending.nextWindow = to;
      if (pending.nextWindow === pending.windows.length) pending.image = undefined;
      if (filled === batchCrops) await runBatch();
    }
  };

  const source = prefetchReads(inputs, readAhead);
  const ahead: Promise<Prepared>[] = [];
  let exhausted = false;
  const refill = async (): Promise<void> => {
    while (!exhausted && ahead.length < lookAhead) {
      const next = await source.next();
      if (next.done) exhausted = true;
      else {
        const prepared = prepareImage(next.value, options);
        // A fault may reject it before its turn; it is rethrown when awaited in order.
        prepared.catch(() => undefined);
        ahead.push(prepared);
      }
    }
  };

  try {
    await refill();
    while (ahead.length > 0) {
      const prepared = await (ahead.shift() as Promise<Prepared>);
      await refill();
      if ("error" in prepared) {
        order.push({ key: prepared.key, record: { key: prepared.key, error: prepared.error } });
      } else {
        const { image } = prepared;
        let pending: Pending;
        try {
          const plan = cropPlan(image.width, image.height);
          const { unique, indexOf } = uniqueCropWindows(computed.map((i) => plan[i] as Crop));
          pending = {
            key: prepared.key,
            label: prepared.label,
            width: image.width,
            height: image.height,
            image,
            windows: unique,
            rowOf: indexOf,
            nextWindow: 0,
            windowsDone: 0,
            probabilities: models.map(() => new Float32Array(unique.length * NUM_CLASSES)),
            record: undefined,
          };
        } catch (error) {
          // A size the crop plan refuses is this image's problem, not the run's.
          order.push({ key: prepared.key, record: { key: prepared.key, error: messageOf(error) } });
          yield* ready();
          continue;
        }
        order.push({ key: pending.key, pending });
        await pack(pending);
      }
      yield* ready();
    }
    await runBatch();
    await settle();
    yield* ready();
  } finally {
    // A consumer that stops early must not leave a call running on an engine it may dispose.
    await inflight?.catch(() => undefined);
    await source.return(undefined);
  }
}

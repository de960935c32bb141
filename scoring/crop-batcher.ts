import type { Crop } from "../model/image/crop-types.js";
import type { DecodedImage } from "../model/image/decode.js";
import { takesWindows } from "../model/window-engine.js";
import type { Engine, InputLayout, ModelInfo } from "../model/engine.js";
import { NUM_CLASSES } from "../model/engine.js";
import { ModelOutputError } from "../model/errors.js";
import type { Preprocess } from "../model/preprocess.js";
import { CROP_VALUES, sampleCrops } from "../model/image/sampling.js";

/** A model the batcher runs: its engine, and what it is for messages. */
export interface BatchModel {
  readonly engine: Engine;
  readonly info: ModelInfo;
}

/** An image in flight: its windows still to sample and each model's probabilities so far. */
export interface Pending {
  readonly key: string;
  readonly label: number | null;
  readonly width: number;
  readonly height: number;
  /** The decoded pixels, dropped as soon as the last window is sampled. */
  image: DecodedImage | undefined;
  /** Distinct sampling windows of the computed crops (coinciding windows are classified once). */
  readonly windows: Crop[];
  /** Row in `probabilities` of each computed crop. */
  readonly rowOf: number[];
  nextWindow: number;
  windowsDone: number;
  /** Per model: windows x NUM_CLASSES. */
  readonly probabilities: Float32Array[];
}

/**
 * Models that read identically sampled crops share one sampling pass; models whose engines cut
 * their own crops (model/tfjs/device-crops.ts) form one group that gets images and windows instead.
 */
interface SamplingGroup {
  readonly preprocess: Preprocess;
  readonly layout: InputLayout;
  readonly models: number[];
  /**
   * Two batch buffers: the engine reads one while the next batch is sampled into the other,
   * so at most two batches of crops exist whatever the number of images. Empty for the
   * engines that take windows.
   */
  readonly buffers: [Float32Array, Float32Array] | undefined;
}

/** One stretch of a batch: windows [from, to) of an image at batch position `at`. */
interface Segment {
  readonly pending: Pending;
  readonly from: number;
  readonly to: number;
  readonly at: number;
  /** The pixels, for engines that cut their own crops (held until the batch is classified). */
  readonly image: DecodedImage;
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

/** Groups models by the crops they read (preprocess and layout), each with two batch buffers. */
function samplingGroups(models: readonly BatchModel[], batchCrops: number): SamplingGroup[] {
  const groups = new Map<string, SamplingGroup>();
  models.forEach(({ engine }, i) => {
    const windows = takesWindows(engine);
    const id = windows ? "windows" : JSON.stringify([engine.preprocess, engine.inputLayout]);
    let group = groups.get(id);
    if (!group) {
      const buffers: [Float32Array, Float32Array] | undefined = windows
        ? undefined
        : [new Float32Array(batchCrops * CROP_VALUES), new Float32Array(batchCrops * CROP_VALUES)];
      group = { preprocess: engine.preprocess, layout: engine.inputLayout, models: [], buffers };
      groups.set(id, group);
    }
    group.models.push(i);
  });
  return [...groups.values()];
}

/**
 * Packs the crops of consecutive images into engine calls of `batchCrops`. Each image is
 * sampled once per sampling group, straight into the batch; the engine runs asynchronously
 * (onnxruntime on its own threads), so the next batch is sampled into the second buffer while
 * the first is classified. `onComplete` is called for an image once every window of it is
 * classified by every model.
 */
export class CropBatcher {
  private readonly groups: SamplingGroup[];
  private segments: Segment[] = [];
  private filled = 0;
  /** Which of each group's two buffers is being filled. */
  private side: 0 | 1 = 0;
  /** The engine call on the other buffer, if one is running. */
  private inflight: Promise<void> | undefined;

  constructor(
    private readonly models: readonly BatchModel[],
    private readonly batchCrops: number,
    private readonly onComplete: (pending: Pending) => void,
  ) {
    this.groups = samplingGroups(models, batchCrops);
  }

  /** Samples the image's remaining windows into the batch, running the engine whenever it fills. */
  async pack(pending: Pending): Promise<void> {
    while (pending.nextWindow < pending.windows.length) {
      const from = pending.nextWindow;
      const to = Math.min(pending.windows.length, from + this.batchCrops - this.filled);
      const crops = pending.windows.slice(from, to);
      const image = pending.image as DecodedImage;
      for (const { preprocess, layout, buffers } of this.groups) {
        if (buffers) sampleCrops(image, crops, { preprocess, layout }, buffers[this.side], this.filled * CROP_VALUES);
      }
      this.segments.push({ pending, from, to, at: this.filled, image });
      this.filled += to - from;
      pending.nextWindow = to;
      if (pending.nextWindow === pending.windows.length) pending.image = undefined;
      if (this.filled === this.batchCrops) await this.flush();
    }
  }

  /** Hands the filled buffer to the engine and switches to the other one. */
  async flush(): Promise<void> {
    if (this.filled === 0) return;
    // The other buffer is free only once its call has returned.
    await this.settle();
    const running = this.classify(this.segments, this.filled, this.side);
    // Marked handled now; settle() still rethrows a failure to the caller.
    running.catch(() => undefined);
    this.inflight = running;
    this.segments = [];
    this.filled = 0;
    this.side = this.side === 0 ? 1 : 0;
  }

  /** Waits for the running engine call; its failure (an engine error, non-finite output) rejects here. */
  async settle(): Promise<void> {
    const running = this.inflight;
    this.inflight = undefined;
    if (running) await running;
  }

  /** Waits for a running call without rethrowing: for a consumer that stops early. */
  async drain(): Promise<void> {
    await this.inflight?.catch(() => undefined);
  }

  private async classify(batch: Segment[], count: number, buffer: 0 | 1): Promise<void> {
    for (const group of this.groups) {
      for (const m of group.models) {
        const { engine, info } = this.models[m] as BatchModel;
        const out =
          group.buffers === undefined && takesWindows(engine)
            ? await engine.classifyWindows(batch.map(({ image, pending, from, to }) => ({ image, crops: pending.windows.slice(from, to) })))
            : await engine.classify((group.buffers as [Float32Array, Float32Array])[buffer].subarray(0, count * CROP_VALUES), count);
        assertFinite(out, info, batch);
        for (const { pending, from, to, at } of batch) {
          const rows = out.subarray(at * NUM_CLASSES, (at + to - from) * NUM_CLASSES);
          (pending.probabilities[m] as Float32Array).set(rows, from * NUM_CLASSES);
        }
      }
    }
    for (const { pending, from, to } of batch) {
      pending.windowsDone += to - from;
      if (pending.windowsDone === pending.windows.length) this.onComplete(pending);
    }
  }
}

import * as tf from "@tensorflow/tfjs-core";
import { selectBackend, type BackendPreference } from "./backend.js";
import { NUM_CLASSES, type Engine } from "../engine.js";
import { ModelFormatError } from "../errors.js";
import { loadGoogLeNetWeights } from "../onnx/googlenet-recognition.js";
import { buildGoogLeNet, type GoogLeNetModel } from "./googlenet.js";
import { preprocessFor, type Flavour, type Preprocess } from "../preprocess.js";
import { CROP_SIDE } from "../image/crop-types.js";
import { DeviceCropper } from "./device-crops.js";
import type { ImageWindows, WindowEngine } from "../window-engine.js";

export interface TfjsEngineOptions {
  /** The path or URL the model came from, for messages. */
  readonly source: string;
  /** tfjs backend. Default: "auto" (tensorflow GPU, tensorflow CPU, wasm, cpu; the first that loads). */
  readonly backend?: BackendPreference;
  /**
   * Most crops per forward pass; larger calls are split. Bounds memory (about 10 MB of
   * activations per crop at the widest stage). Default: 16.
   */
  readonly maxBatch?: number;
  /** Where the backend choice is logged. Default: one line on stderr. */
  readonly log?: (line: string) => void;
  /**
   * Whether the engine cuts its own crops from uploaded images (`classifyWindows`) instead of
   * taking crops sampled on the host. Default: only on native TensorFlow ("tensorflow", a GPU
   * when tfjs-node-gpu loads), where it spares the host the sampling; on wasm and cpu the
   * cutting is far slower than the host sampler (bench: deviceCutCropsPerSec).
   */
  readonly cutOnDevice?: boolean;
}

const DEFAULT_MAX_BATCH = 16;

class TfjsEngine implements Engine {
  readonly engine = "tfjs" as const;
  readonly inputLayout = "nhwc" as const;
  readonly preprocess: Preprocess;
  private model: GoogLeNetModel | undefined;

  constructor(
    readonly backend: string,
    readonly flavour: Flavour,
    model: GoogLeNetModel,
    protected readonly maxBatch: number,
  ) {
    this.model = model;
    this.preprocess = preprocessFor(flavour);
  }

  async classify(input: Float32Array, count: number): Promise<Float32Array> {
    const model = await this.ready();
    const perCrop = CROP_SIDE * CROP_SIDE * 3;
    if (!Number.isInteger(count) || count < 0 || input.length !== count * perCrop) {
      throw new RangeError(`classify: expected ${count} crops of ${CROP_SIDE}x${CROP_SIDE}x3 = ${count * perCrop} values, got ${input.length}`);
    }
    const out = new Float32Array(count * NUM_CLASSES);
    for (let start = 0; start < count; start += this.maxBatch) {
      const n = Math.min(this.maxBatch, count - start);
      const probabilities = await model.probabilities(input.subarray(start * perCrop, (start + n) * perCrop), n);
      out.set(probabilities, start * NUM_CLASSES);
    }
    return out;
  }

  async dispose(): Promise<void> {
    this.model?.dispose();
    this.model = undefined;
  }

  /** The model, with tfjs on this engine's backend: the weights live where they were made, and another engine may have switched it. */
  protected async ready(): Promise<GoogLeNetModel> {
    if (!this.model) throw new Error("tfjs engine used after dispose()");
    if (tf.getBackend() !== this.backend) await tf.setBackend(this.backend);
    return this.model;
  }
}

/**
 * The tfjs engine that takes images and windows: each image is uploaded once and its crops cut
 * on the backend (model/tfjs/device-crops.ts), at most `maxBatch` crops per forward pass.
 */
class TfjsWindowEngine extends TfjsEngine implements WindowEngine {
  private cropper: DeviceCropper | undefined;

  async classifyWindows(batch: readonly ImageWindows[]): Promise<Float32Array> {
    const model = await this.ready();
    // Made on first use, on the engine's backend, where its constants must live.
    this.cropper ??= new DeviceCropper(this.preprocess, "nhwc");
    const total = batch.reduce((sum, { crops }) => sum + crops.length, 0);
    const out = new Float32Array(total * NUM_CLASSES);
    let written = 0;
    for (const part of splitWindows(batch, this.maxBatch)) {
      const crops = this.cropper.cut(part);
      try {
        const probabilities = await model.probabilitiesOf(crops);
        out.set(probabilities, written);
        written += probabilities.length;
      } finally {
        crops.dispose();
      }
    }
    return out;
  }

  override async dispose(): Promise<void> {
    this.cropper?.dispose();
    this.cropper = undefined;
    await super.dispose();
  }
}

/** `batch` in consecutive parts of at most `limit` crops, an image's windows split where needed. */
function* splitWindows(batch: readonly ImageWindows[], limit: number): Generator<ImageWindows[]> {
  let part: ImageWindows[] = [];
  let size = 0;
  for (const { image, crops } of batch) {
    for (let from = 0; from < crops.length; ) {
      const take = Math.min(limit - size, crops.length - from);
      part.push({ image, crops: crops.slice(from, from + take) });
      size += take;
      from += take;
      if (size === limit) {
        yield part;
        part = [];
        size = 0;
      }
    }
  }
  if (size > 0) yield part;
}

/**
 * Builds GoogLeNet in TensorFlow.js from ONNX bytes (either flavour) on the chosen backend.
 *
 * @throws ModelFormatError when the graph is not a GoogLeNet of a known flavour or does not
 *   classify ImageNet's 1000 classes from 224x224 crops.
 * @throws BackendUnavailableError when an explicitly named backend cannot run here.
 */
export async function createTfjsEngine(modelBytes: Uint8Array, options: TfjsEngineOptions): Promise<Engine> {
  const { source } = options;
  const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer, got ${maxBatch}`);
  const weights = loadGoogLeNetWeights(modelBytes, source);
  if (weights.classifier.shape[1] !== NUM_CLASSES) {
    throw new ModelFormatError(`${source}: the classifier has ${weights.classifier.shape[1]} outputs; ImageNet models here have ${NUM_CLASSES}`);
  }
  if (weights.inputSize !== CROP_SIDE) {
    throw new ModelFormatError(`${source}: the input is ${weights.inputSize}x${weights.inputSize}; the crops are ${CROP_SIDE}x${CROP_SIDE}`);
  }
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const { backend } = await selectBackend(options.backend ?? "auto", { log });
  const cutOnDevice = options.cutOnDevice ?? backend === "tensorflow";
  if (cutOnDevice) log(`googlenet-eval: tfjs cuts the crops on the ${backend} backend (each image uploaded once)`);
  const Kind = cutOnDevice ? TfjsWindowEngine : TfjsEngine;
  return new Kind(backend, weights.flavour, buildGoogLeNet(weights), maxBatch);
}

import * as tf from "@tensorflow/tfjs-core";
import { selectBackend, type BackendPreference } from "./backend.js";
import { NUM_CLASSES, type Engine } from "./engine.js";
import { ModelFormatError } from "./errors.js";
import { loadGoogLeNetWeights } from "./googlenet-recognition.js";
import { buildGoogLeNet, type GoogLeNetModel } from "./googlenet.js";
import { preprocessFor, type Flavour, type Preprocess } from "./preprocess.js";
import { CROP_SIDE } from "./crop-types.js";

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
    private readonly maxBatch: number,
  ) {
    this.model = model;
    this.preprocess = preprocessFor(flavour);
  }

  async classify(input: Float32Array, count: number): Promise<Float32Array> {
    const model = this.model;
    if (!model) throw new Error("tfjs engine used after dispose()");
    const perCrop = CROP_SIDE * CROP_SIDE * 3;
    if (!Number.isInteger(count) || count < 0 || input.length !== count * perCrop) {
      throw new RangeError(`classify: expected ${count} crops of ${CROP_SIDE}x${CROP_SIDE}x3 = ${count * perCrop} values, got ${input.length}`);
    }
    // The weights live on the backend they were made on; another engine may have switched it.
    if (tf.getBackend() !== this.backend) await tf.setBackend(this.backend);
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
  const { backend } = await selectBackend(options.backend ?? "auto", options.log ? { log: options.log } : {});
  return new TfjsEngine(backend, weights.flavour, buildGoogLeNet(weights), maxBatch);
}

import type { Flavour, Preprocess } from "./preprocess.js";

/** Number of ImageNet classes every supported model outputs. */
export const NUM_CLASSES = 1000;

export type EngineName = "tfjs" | "onnxruntime";
export const ENGINE_NAMES: readonly EngineName[] = ["tfjs", "onnxruntime"];

/** Memory layout of a batch of crops handed to an engine. */
export type InputLayout = "nhwc" | "nchw";

/**
 * A loaded model ready to classify batches of crops. Implementations stay private to their
 * files; callers get plain arrays and never dispose tensors.
 */
export interface Engine {
  readonly engine: EngineName;
  /** The tfjs backend in use ("tensorflow", "wasm", "cpu"), or "cpu" for onnxruntime on CPU. */
  readonly backend: string;
  readonly flavour: Flavour;
  /** The layout `classify` expects its input in. */
  readonly inputLayout: InputLayout;
  /** The input convention the crops must be sampled with. */
  readonly preprocess: Preprocess;
  /**
   * Softmax probabilities for `count` crops of 224x224x3 preprocessed values laid out as
   * `inputLayout`. Returns `count * NUM_CLASSES` values; a logits model is softmaxed here.
   */
  classify(input: Float32Array, count: number): Promise<Float32Array>;
  /** Frees native sessions or tensors. Safe to call twice. */
  dispose(): Promise<void>;
}

/** Facts about a model file, as summary.json reports them. */
export interface ModelInfo {
  /** The path or URL the model was loaded from, as the user gave it. */
  readonly file: string;
  readonly sha256: string;
  readonly flavour: Flavour;
}

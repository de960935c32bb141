import type { Crop } from "./image/crop-types.js";
import type { DecodedImage } from "./image/decode.js";
import type { Engine } from "./engine.js";

/*
 * Engines that cut their own crops, without TensorFlow.js: the scorer and the engine meter
 * check for them on every run, and an onnxruntime run must not load tfjs to do so.
 */

/** Consecutive windows of one image in a batch, as the scorer packs them. */
export interface ImageWindows {
  readonly image: DecodedImage;
  /** Crops of `cropPlan(image.width, image.height)`, in batch order. */
  readonly crops: readonly Crop[];
}

/**
 * An engine that takes decoded images and crop windows instead of sampled crops, and cuts the
 * crops where it runs (a GPU): the host then only reads, decodes and averages.
 */
export interface WindowEngine extends Engine {
  /**
   * Softmax probabilities for every crop of `batch`, segment after segment, crop after crop:
   * `total crops * NUM_CLASSES` values, as `classify` would give for the same crops sampled by
   * `sampleCrops`.
   */
  classifyWindows(batch: readonly ImageWindows[]): Promise<Float32Array>;
}

/** Whether an engine cuts its own crops (the scorer then hands it images and windows). */
export function takesWindows(engine: Engine): engine is WindowEngine {
  return typeof (engine as Partial<WindowEngine>).classifyWindows === "function";
}


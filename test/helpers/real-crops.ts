import * as ort from "onnxruntime-node";
import sharp from "sharp";
import type { Preprocess } from "../../model/preprocess.js";

export const SAMPLES = "../shared/imagenet/samples";
export const MODELS = "../shared/models";
const SIDE = 224;

/**
 * Real photos squashed to 224x224 by sharp (the project's own sampler is tested elsewhere) and
 * preprocessed for a flavour, in both layouts: NHWC for tfjs, NCHW for onnxruntime.
 */
export async function realCrops(files: readonly string[], preprocess: Preprocess): Promise<{ nhwc: Float32Array; nchw: Float32Array }> {
  const plane = SIDE * SIDE;
  const nhwc = new Float32Array(files.length * plane * 3);
  const nchw = new Float32Array(files.length * plane * 3);
  for (const [k, file] of files.entries()) {
    const rgb = await sharp(file).resize(SIDE, SIDE, { fit: "fill" }).removeAlpha().raw().toBuffer();
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        const sample = rgb[i * 3 + (preprocess.channelOrder === "rgb" ? c : 2 - c)] as number;
        const value = sample * (preprocess.scale[c] as number) + (preprocess.offset[c] as number);
        nhwc[(k * plane + i) * 3 + c] = value;
        nchw[(k * 3 + c) * plane + i] = value;
      }
    }
  }
  return { nhwc, nchw };
}

/** Row-wise softmax in float64, for a logits output. */
export function softmaxRows(values: Float32Array, classes: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let row = 0; row < values.length / classes; row++) {
    const slice = values.subarray(row * classes, (row + 1) * classes);
    const max = Math.max(...slice);
    let sum = 0;
    for (const v of slice) sum += Math.exp(v - max);
    slice.forEach((v, j) => (out[row * classes + j] = Math.exp(v - max) / sum));
  }
  return out;
}

/** onnxruntime-node running the ONNX file as it is: the reference for the tfjs network. */
export async function onnxruntimeProbabilities(model: string | Uint8Array, nchw: Float32Array, count: number, softmaxed: boolean): Promise<Float32Array> {
  const session = typeof model === "string" ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  try {
    const [inputName] = session.inputNames;
    const [outputName] = session.outputNames;
    const results = await session.run({ [inputName as string]: new ort.Tensor("float32", nchw, [count, 3, SIDE, SIDE]) });
    const output = results[outputName as string]?.data as Float32Array;
    return softmaxed ? Float32Array.from(output) : softmaxRows(output, output.length / count);
  } finally {
    await session.release();
  }
}

/** Indices of the k highest values of one row, ties to the lower index. */
export function topK(values: Float32Array, row: number, classes: number, k: number): number[] {
  const slice = Array.from(values.subarray(row * classes, (row + 1) * classes));
  return slice
    .map((v, i) => [v, i] as const)
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map(([, i]) => i);
}

export function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

import * as ort from "onnxruntime-node";
import { CROP_SIDE } from "../../image/crop-types.js";
import { NUM_CLASSES } from "../../engine.js";
import { rowsAreDistributions, softmaxRows } from "../../predict.js";
import type { Preprocess } from "../../preprocess.js";

/**
 * The largest difference an edited graph's probabilities may have from the graph as stored,
 * relative to the largest probability: the bound test/unit/ort-layout.test.ts holds the LRN
 * rewrite and the layout edits to against onnxruntime's own LRN (float rounding gives ~1e-7).
 */
export const PROBE_TOLERANCE = 1e-5;

const PLANE = CROP_SIDE * CROP_SIDE;

/** A small deterministic generator (mulberry32): the probe must be the same on every host. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One 224x224 RGB picture (0..255, interleaved) of the "dead leaves" kind: opaque discs of
 * power-law radii, each of one colour with a little shading, stacked at random, with fine grain
 * on top.
 *
 * Why this picture: it is the standard synthetic stand-in for a photograph (occluding objects
 * of every size give it a photograph's 1/f spectrum, sharp edges and flat regions), so the
 * first layers see edges and textures of the size they respond to and the LRNs normalise values
 * of a photograph's range; random noise would leave most of conv1's filters near zero. It is
 * computed, not shipped: no image file in the package, no decoder at load.
 */
function deadLeaves(random: () => number): Uint8ClampedArray {
  const rgb = new Uint8ClampedArray(PLANE * 3);
  const shade = (): [number, number, number] => {
    // Photographs' channels move together: a grey level and a smaller colour cast.
    const grey = 20 + random() * 215;
    return [grey + (random() - 0.5) * 90, grey + (random() - 0.5) * 60, grey + (random() - 0.5) * 90];
  };
  const background = shade();
  for (let i = 0; i < PLANE; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = background[c] as number;
  for (let disc = 0; disc < 300; disc++) {
    // Radii from 3 to 120 pixels with density ~ r^-3 (inverse transform of the power law).
    const radius = 1 / Math.sqrt(1 / 9 - random() * (1 / 9 - 1 / 14400));
    const cx = random() * CROP_SIDE;
    const cy = random() * CROP_SIDE;
    const colour = shade();
    const tilt = (random() - 0.5) * 1.5;
    for (let y = Math.max(0, Math.floor(cy - radius)); y < Math.min(CROP_SIDE, Math.ceil(cy + radius)); y++) {
      for (let x = Math.max(0, Math.floor(cx - radius)); x < Math.min(CROP_SIDE, Math.ceil(cx + radius)); x++) {
        const dx = x - cx;
        const dy = y - cy;
        if (dx * dx + dy * dy > radius * radius) continue;
        const light = 1 + (tilt * (dx - dy)) / (2 * radius);
        for (let c = 0; c < 3; c++) rgb[(y * CROP_SIDE + x) * 3 + c] = (colour[c] as number) * light;
      }
    }
  }
  for (let i = 0; i < rgb.length; i++) rgb[i] = (rgb[i] as number) + (random() - 0.5) * 12;
  return rgb;
}

/**
 * `count` probe crops, NCHW, preprocessed as the engine's flavour wants: each a different
 * dead-leaves picture, the same on every host and every run.
 */
export function probeCrops(count: number, preprocess: Preprocess): Float32Array {
  const nchw = new Float32Array(count * 3 * PLANE);
  for (let crop = 0; crop < count; crop++) {
    const rgb = deadLeaves(seeded(0x9e3779b9 + crop));
    for (let c = 0; c < 3; c++) {
      const source = preprocess.channelOrder === "rgb" ? c : 2 - c;
      const scale = preprocess.scale[c] as number;
      const offset = preprocess.offset[c] as number;
      const plane = nchw.subarray((crop * 3 + c) * PLANE, (crop * 3 + c + 1) * PLANE);
      for (let i = 0; i < PLANE; i++) plane[i] = (rgb[i * 3 + source] as number) * scale + offset;
    }
  }
  return nchw;
}

/** The largest difference, relative to the reference's largest magnitude (as the tests measure). */
export function relativeDifference(actual: Float32Array, reference: Float32Array): number {
  if (actual.length !== reference.length) return Infinity;
  let scale = 0;
  let largest = 0;
  for (let i = 0; i < reference.length; i++) {
    const expected = reference[i] as number;
    scale = Math.max(scale, Math.abs(expected));
    const difference = Math.abs((actual[i] as number) - expected);
    // NaN counts as the largest difference there is.
    largest = Number.isNaN(difference) ? Infinity : Math.max(largest, difference);
  }
  return scale > 0 ? largest / scale : largest;
}

/** The output an engine reads: the one with 1000 classes, else the first. */
export function classifierOutput(session: ort.InferenceSession): string | undefined {
  const output = session.outputMetadata.find((meta) => meta.isTensor && meta.shape[meta.shape.length - 1] === NUM_CLASSES) ?? session.outputMetadata[0];
  return output?.name;
}

/** The batch size of the graph's input when it is fixed (some exporters fix it), else undefined. */
export function fixedBatchOf(session: ort.InferenceSession): number | undefined {
  const input = session.inputMetadata[0];
  const n = input?.isTensor ? input.shape[0] : undefined;
  return typeof n === "number" && n > 0 ? n : undefined;
}

/** One session's probabilities for the probe: its classifier output, softmaxed unless it is already. */
export async function probeProbabilities(session: ort.InferenceSession, crops: Float32Array, count: number): Promise<Float32Array> {
  const input = session.inputNames[0];
  const output = classifierOutput(session);
  if (input === undefined || output === undefined) throw new Error("the graph has no input or no output");
  const results = await session.run({ [input]: new ort.Tensor("float32", crops, [count, 3, CROP_SIDE, CROP_SIDE]) }, [output]);
  const values = results[output]?.data;
  if (!(values instanceof Float32Array)) throw new Error(`output ${output} is not float32`);
  const rows = values.length / NUM_CLASSES;
  if (!Number.isInteger(rows)) return values;
  return rowsAreDistributions(values, rows, NUM_CLASSES) ? Float32Array.from(values) : softmaxRows(values, rows, NUM_CLASSES);
}

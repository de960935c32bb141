import type { ImageWindows, WindowEngine } from "../model/window-engine.js";
import type { Engine } from "../model/engine.js";
import { NUM_CLASSES } from "../model/engine.js";
import type { InputLayout } from "../model/engine.js";
import type { Flavour } from "../model/preprocess.js";
import { preprocessFor } from "../model/preprocess.js";

/**
 * An engine that answers at once with the same fixed distribution for every crop, so a scoring
 * run measures only the host's side of it (read, decode, crop plan, sampling, averaging,
 * records): the feeder ceiling a GPU engine can be fed at. The distribution is not uniform, so
 * top-5 ranking and the per-position verdicts do their real work. With `windows`, it takes
 * images and windows (a WindowEngine, as an engine that cuts crops on its device), so the host
 * does no sampling at all.
 */
export function createNullEngine(
  options: { flavour?: Flavour; layout?: InputLayout; backend?: string; windows?: boolean } = {},
): (Engine | WindowEngine) & { readonly cropsSeen: () => number } {
  const flavour = options.flavour ?? "bvlc";
  const row = new Float32Array(NUM_CLASSES);
  let sum = 0;
  for (let c = 0; c < NUM_CLASSES; c++) {
    row[c] = Math.exp(Math.sin(c * 12.9898) * 4);
    sum += row[c] as number;
  }
  for (let c = 0; c < NUM_CLASSES; c++) row[c] = (row[c] as number) / sum;
  let rows = new Float32Array(0);
  let seen = 0;
  const answer = (count: number): Float32Array => {
    if (rows.length < count * NUM_CLASSES) {
      rows = new Float32Array(count * NUM_CLASSES);
      for (let k = 0; k < count; k++) rows.set(row, k * NUM_CLASSES);
    }
    seen += count;
    return rows.subarray(0, count * NUM_CLASSES);
  };
  const engine = {
    engine: "tfjs" as const,
    backend: options.backend ?? "null",
    flavour,
    inputLayout: options.layout ?? "nhwc",
    preprocess: preprocessFor(flavour),
    async classify(input: Float32Array, count: number): Promise<Float32Array> {
      if (input.length !== count * 224 * 224 * 3) throw new RangeError(`null engine: ${input.length} values for ${count} crops`);
      return answer(count);
    },
    async dispose(): Promise<void> {},
    cropsSeen: () => seen,
  };
  if (options.windows !== true) return engine;
  return {
    ...engine,
    async classifyWindows(batch: readonly ImageWindows[]): Promise<Float32Array> {
      return answer(batch.reduce((sum, { crops }) => sum + crops.length, 0));
    },
  };
}

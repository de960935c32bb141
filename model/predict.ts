import type { Scheme } from "./image/crop-types.js";
import { SCHEMES } from "./image/crop-types.js";
import type { CropCount } from "./image/crops.js";
import { ConfigurationError, ModelOutputError } from "./errors.js";

export type { CropCount };

/** Crops per image a run can compute, as a list for messages and validation. */
export const CROP_COUNTS: readonly CropCount[] = [1, 10, 144];

/** One class of a top-k list: its index and mean probability. */
export interface Ranked {
  readonly index: number;
  readonly probability: number;
}

/**
 * The schemes one pass over `crops` crops yields. Every scheme is a subset of the 144, so a run
 * reports every scheme no larger than what it computed (../shared/PROTOCOL.md, "Averaging").
 */
export function schemesForCount(crops: CropCount): Scheme[] {
  if (!CROP_COUNTS.includes(crops)) {
    throw new ConfigurationError(`unknown crop count ${String(crops)}; use one of: ${CROP_COUNTS.join(", ")}`);
  }
  return SCHEMES.filter((scheme) => Number(scheme) <= crops);
}

/**
 * Softmax of each row of `values`, numerically stable (max subtracted, sums in float64).
 * Returns a new array; `values` is left alone.
 */
export function softmaxRows(values: ArrayLike<number>, rows: number, classes: number): Float32Array {
  const out = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, values[base + c] as number);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp((values[base + c] as number) - max);
    for (let c = 0; c < classes; c++) out[base + c] = Math.exp((values[base + c] as number) - max) / sum;
  }
  return out;
}

/**
 * Restricts each row of a `rows x classes` probability array to the classes in `subset`, in
 * place: those are divided by their sum (in float64), the rest set to 0. For a softmax row this
 * is exactly the softmax of the logits with the other classes masked out (exp(z_c) / sum over
 * the subset), the rule ImageNet-A and -R are scored by; it is applied per crop, before any
 * averaging, so the mean over crops and models is a mean of restricted distributions.
 *
 * @throws ModelOutputError when a row gives the whole subset probability 0 (every class of the
 *   subset underflowed): no distribution over the subset can be recovered from it.
 */
export function restrictRows(values: Float32Array, rows: number, classes: number, subset: readonly number[]): void {
  const keep = new Uint8Array(classes);
  for (const c of subset) keep[c] = 1;
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    let sum = 0;
    for (const c of subset) sum += values[base + c] as number;
    if (!(sum > 0)) {
      throw new ModelOutputError(`crop ${r}: the ${subset.length} classes of the subset have total probability ${sum}; cannot renormalise over them`);
    }
    for (let c = 0; c < classes; c++) values[base + c] = keep[c] === 1 ? (values[base + c] as number) / sum : 0;
  }
}

/**
 * Whether every row looks like a probability distribution (non-negative, sums to 1 within
 * `tolerance`). Logits essentially never pass: a thousand raw scores would all have to be
 * non-negative and sum to one.
 */
export function rowsAreDistributions(
  values: ArrayLike<number>,
  rows: number,
  classes: number,
  tolerance = 1e-3,
): boolean {
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < classes; c++) {
      const v = values[r * classes + c] as number;
      if (!(v >= 0)) return false;
      sum += v;
    }
    if (Math.abs(sum - 1) > tolerance) return false;
  }
  return true;
}

/**
 * Mean over the chosen rows of a `rows x classes` probability array, accumulated in float64
 * so 144 crops of small probabilities do not lose their low bits.
 *
 * @param rows positions of the rows to average (not crop-plan indices)
 */
export function meanOfRows(values: ArrayLike<number>, classes: number, rows: readonly number[]): Float64Array {
  if (rows.length === 0) throw new RangeError("cannot average over zero rows");
  const sum = new Float64Array(classes);
  for (const row of rows) {
    const base = row * classes;
    if (row < 0 || base + classes > values.length) {
      throw new RangeError(`row ${row} is outside an array of ${values.length / classes} rows`);
    }
    for (let c = 0; c < classes; c++) sum[c] = (sum[c] as number) + (values[base + c] as number);
  }
  for (let c = 0; c < classes; c++) sum[c] = (sum[c] as number) / rows.length;
  return sum;
}

/**
 * A model's prediction per scheme from ONE pass: `values` holds the probabilities of the crops
 * the run computed, in the order of `computed` (crop-plan indices, 0..143); each scheme averages
 * the rows of its own crops.
 *
 * @param schemeCrops crop-plan indices per scheme, e.g. from crops.ts `schemeCropIndices`
 * @param rowOfPosition row of `values` holding `computed[p]`, when crops whose windows coincide
 *   share one row (crops.ts `uniqueCropWindows`); default: row p. A shared row still counts once
 *   per crop, as the protocol's mean over crops does.
 */
export function schemeMeans(
  values: ArrayLike<number>,
  classes: number,
  computed: readonly number[],
  schemeCrops: Partial<Record<Scheme, readonly number[]>>,
  rowOfPosition?: readonly number[],
): Partial<Record<Scheme, Float64Array>> {
  const rowOf = new Map(computed.map((cropIndex, p) => [cropIndex, rowOfPosition ? (rowOfPosition[p] as number) : p]));
  const out: Partial<Record<Scheme, Float64Array>> = {};
  for (const scheme of SCHEMES) {
    const crops = schemeCrops[scheme];
    if (!crops) continue;
    const rows = crops.map((cropIndex) => {
      const row = rowOf.get(cropIndex);
      if (row === undefined) {
        throw new RangeError(`scheme ${scheme} needs crop ${cropIndex}, which this run did not compute`);
      }
      return row;
    });
    out[scheme] = meanOfRows(values, classes, rows);
  }
  return out;
}

/** Mean of several models' predictions (the ensemble), in float64. */
export function ensembleMean(predictions: readonly ArrayLike<number>[]): Float64Array {
  const first = predictions[0];
  if (!first) throw new RangeError("an ensemble needs at least one model");
  const out = new Float64Array(first.length);
  for (const prediction of predictions) {
    if (prediction.length !== first.length) {
      throw new RangeError(`predictions differ in length: ${prediction.length} vs ${first.length}`);
    }
    for (let c = 0; c < out.length; c++) out[c] = (out[c] as number) + (prediction[c] as number);
  }
  for (let c = 0; c < out.length; c++) out[c] = (out[c] as number) / predictions.length;
  return out;
}

/**
 * The k classes of highest probability, best first; equal probabilities rank the lower class
 * index first (../shared/PROTOCOL.md), so results do not depend on sort stability.
 *
 * @param among the classes that may rank, ascending (a class subset); default: all
 */
export function topK(probabilities: ArrayLike<number>, k: number, among?: readonly number[]): Ranked[] {
  const best: Ranked[] = [];
  // Only the subset's classes may rank, even where the probabilities of both are 0 (subsets are
  // ascending, so index order and the tie rule hold).
  const count = among ? among.length : probabilities.length;
  for (let i = 0; i < count; i++) {
    const index = among ? (among[i] as number) : i;
    const probability = probabilities[index] as number;
    // Scanning in index order and inserting only ahead of strictly smaller values keeps ties
    // in index order.
    if (best.length === k && !(probability > (best[k - 1] as Ranked).probability)) continue;
    let at = best.length;
    while (at > 0 && probability > (best[at - 1] as Ranked).probability) at--;
    best.splice(at, 0, { index, probability });
    if (best.length > k) best.pop();
  }
  return best;
}

/** Top-k as results.jsonl stores it: `[class, probability, first synset name]`. */
export function topKEntries(
  probabilities: ArrayLike<number>,
  classNames: readonly string[],
  k = 5,
  among?: readonly number[],
): [number, number, string][] {
  return topK(probabilities, k, among).map(({ index, probability }) => [index, probability, classNames[index] ?? String(index)]);
}

/**
 * How many classes rank ahead of `label` under the top-k rule (higher probability, or equal
 * probability and a lower index): 0 means top-1, under 5 means top-5. Counting beats sorting
 * when only the label's place matters, as for the 144 per-position verdicts of every image.
 *
 * @throws ModelOutputError when any probability is NaN: every comparison with NaN is false, so
 *   a NaN label would rank 0 (a top-1 hit) and a NaN rival would never rank ahead of it.
 */
export function labelRank(probabilities: ArrayLike<number>, label: number): number {
  const own = probabilities[label] as number;
  let ahead = 0;
  for (let index = 0; index < probabilities.length; index++) {
    const probability = probabilities[index] as number;
    if (Number.isNaN(probability)) {
      throw new ModelOutputError(`probability of class ${index} is NaN; cannot rank label ${label} among the classes`);
    }
    if (probability > own || (probability === own && index < label)) ahead++;
  }
  if (own === undefined) throw new RangeError(`label ${label} is outside ${probabilities.length} classes`);
  return ahead;
}

/** One image's prediction under each scheme: the ensemble's means and each model's. */
export interface ImagePrediction {
  /** The ensemble's mean per scheme (the one model's, for a single model). */
  readonly ensemble: Partial<Record<Scheme, Float64Array>>;
  /** Each model's mean per scheme, in model order. */
  readonly perModel: Partial<Record<Scheme, Float64Array>>[];
}

/**
 * Averages one image's crop probabilities as the protocol says: per model over each scheme's
 * crops, then over the models.
 *
 * @param probabilities per model, one row of `classes` values per distinct window
 * @param computed the protocol indices of the crops computed, in order
 * @param rowOf the row of `probabilities` of each computed crop (coinciding windows share one)
 */
export function predictImage(
  probabilities: readonly ArrayLike<number>[],
  classes: number,
  computed: readonly number[],
  schemeCrops: Partial<Record<Scheme, readonly number[]>>,
  rowOf: readonly number[],
): ImagePrediction {
  const perModel = probabilities.map((values) => schemeMeans(values, classes, computed, schemeCrops, rowOf));
  const ensemble: Partial<Record<Scheme, Float64Array>> = {};
  for (const scheme of SCHEMES) {
    if (schemeCrops[scheme] === undefined) continue;
    ensemble[scheme] = ensembleMean(perModel.map((means) => means[scheme] as Float64Array));
  }
  return { ensemble, perModel };
}

/**
 * Each computed crop judged alone, on the models' mean at that crop: whether the label is
 * first, and whether it is among the first five. Two bits per crop per image let a run report
 * which crops matter without keeping the crops x classes probabilities.
 */
export function cropVerdicts(
  probabilities: readonly ArrayLike<number>[],
  classes: number,
  rowOf: readonly number[],
  label: number,
): { top1: boolean[]; top5: boolean[] } {
  const top1: boolean[] = [];
  const top5: boolean[] = [];
  const mean = new Float64Array(classes);
  for (const row of rowOf) {
    mean.fill(0);
    for (const values of probabilities) {
      for (let c = 0; c < classes; c++) mean[c] = (mean[c] as number) + (values[row * classes + c] as number);
    }
    // Divide as ensembleMean does, so the crop of scheme "1" judges exactly as scheme "1".
    for (let c = 0; c < classes; c++) mean[c] = (mean[c] as number) / probabilities.length;
    const rank = labelRank(mean, label);
    top1.push(rank === 0);
    top5.push(rank < 5);
  }
  return { top1, top5 };
}

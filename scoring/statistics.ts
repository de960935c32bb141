import { CROP_SIDE, SCHEMES, type CropName, type Scale, type Scheme } from "../model/image/crop-types.js";
import { cropPlan, schemeCropIndices } from "../model/image/crops.js";
import { StorageError } from "../storage/errors.js";
import {
  isFailed,
  type Calibration,
  type ClassErrors,
  type Comparison,
  type Confusion,
  type ErrorRates,
  type Interval,
  type PositionErrors,
  type RealErrorRates,
  type ResultRecord,
  type SchemeErrorRates,
  type SchemeTop5,
  type ScoredRecord,
  type Summary,
  type TopEntry,
} from "./records.js";

/** One of the 144 crop positions, without its errors. */
export interface Position {
  readonly scale: Scale;
  readonly square: PositionErrors["square"];
  readonly crop: CropName;
  readonly mirror: boolean;
}

// Positions are named as for landscape images (see PositionErrors): a portrait's top and bottom
// squares stand where a landscape's left and right do in protocol order.
const LANDSCAPE_SQUARE = { left: "left", top: "left", center: "center", right: "right", bottom: "right" } as const;

/**
 * The 144 positions in protocol order (scale, then square, then crop, then mirror), taken from
 * model/image/crops.ts's plan so the two cannot disagree; the plan's geometry plays no part.
 */
export const POSITIONS: readonly Position[] = cropPlan(CROP_SIDE, CROP_SIDE).map(({ scale, square, crop, mirror }) => ({
  scale,
  square: LANDSCAPE_SQUARE[square],
  crop,
  mirror,
}));

/** Index in POSITIONS of the 1-crop scheme's only crop: 256, center square, center crop, unmirrored. */
export const ONE_CROP_POSITION = schemeCropIndices("1")[0] as number;

/**
 * Wilson score interval for `errors` out of `n`. Chosen over the normal (Wald) interval because
 * error rates near 0 or over small classes would give Wald bounds below zero or of zero width,
 * and over a bootstrap because it is exact to compute and needs no random draws to reproduce.
 * With n = 0 nothing is known, so the interval is [0, 1].
 * @param z the normal quantile; default 1.96 (a 95% interval).
 */
export function wilsonInterval(errors: number, n: number, z = 1.96): Interval {
  // A count outside 0..n is a bug in the caller, not bad user input, hence RangeError.
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(errors) || errors < 0 || errors > n) {
    throw new RangeError(`wilsonInterval needs integers 0 <= errors <= n, got errors=${errors}, n=${n}`);
  }
  if (n === 0) return [0, 1];
  const p = errors / n;
  const z2 = z * z;
  const denominator = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denominator;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denominator;
  // The exact ends are 0 and 1 at errors = 0 and n; clamp so float rounding cannot leave them.
  return [errors === 0 ? 0 : Math.max(0, centre - half), errors === n ? 1 : Math.min(1, centre + half)];
}

/**
 * McNemar's exact test: the two-sided binomial p-value of seeing a split at least as uneven as
 * aOnly : bOnly among the aOnly + bOnly discordant images when either side is equally likely.
 * Summed in log space because binomial coefficients overflow a double beyond n of about 1000,
 * and 50,000 validation images give discordant counts in the thousands. Capped at 1.
 */
export function mcnemarExact(aOnly: number, bOnly: number): number {
  if (!Number.isInteger(aOnly) || !Number.isInteger(bOnly) || aOnly < 0 || bOnly < 0) {
    throw new RangeError(`mcnemarExact needs non-negative integer counts, got ${aOnly} and ${bOnly}`);
  }
  const n = aOnly + bOnly;
  const k = Math.min(aOnly, bOnly);
  if (n === 0 || 2 * k === n) return 1;
  // log P(X = i) for X ~ Binomial(n, 1/2), built up from i = 0; terms grow with i up to k < n/2,
  // so the last one is the largest and anchors the log-sum-exp.
  const logTerms: number[] = [-n * Math.LN2];
  for (let i = 0; i < k; i++) logTerms.push(logTerms[i]! + Math.log(n - i) - Math.log(i + 1));
  const largest = logTerms[k]!;
  let scaled = 0;
  for (const t of logTerms) scaled += Math.exp(t - largest);
  return Math.min(1, Math.exp(Math.LN2 + largest + Math.log(scaled)));
}

/**
 * The `positions` string of a record from each position's own verdicts (144 each, protocol order).
 * A position right at top-1 is right at top-5, so its character is 0, 2 or 3, never 1.
 */
export function encodePositions(top1Right: readonly boolean[], top5Right: readonly boolean[]): string {
  if (top1Right.length !== POSITIONS.length || top5Right.length !== POSITIONS.length) {
    throw new RangeError(
      `encodePositions needs ${POSITIONS.length} verdicts each, got ${top1Right.length} and ${top5Right.length}`,
    );
  }
  const impossible = top1Right.findIndex((top1, i) => top1 && !top5Right[i]);
  if (impossible >= 0) throw new RangeError(`encodePositions: position ${impossible} is right at top-1 but wrong at top-5`);
  return top1Right.map((top1, i) => String((top1 ? 1 : 0) | (top5Right[i] ? 2 : 0))).join("");
}

const POSITIONS_PATTERN = new RegExp(`^[023]{${POSITIONS.length}}$`);

/** The verdict bits of a record's `positions`, checked, with the key named when malformed. */
export function decodePositions(positions: string, key: string): { top1: boolean[]; top5: boolean[] } {
  if (!POSITIONS_PATTERN.test(positions)) {
    throw new StorageError(
      `record "${key}": positions must be ${POSITIONS.length} characters, each one of 0, 2, 3 ` +
        `(bit 1 = top-1 right, bit 2 = top-5 right; a top-1 hit is a top-5 hit, so never 1); ` +
        `got ${positions.length} characters "${positions.slice(0, 20)}${positions.length > 20 ? "..." : ""}"`,
    );
  }
  const codes = [...positions].map(Number);
  return { top1: codes.map((c) => (c & 1) !== 0), top5: codes.map((c) => (c & 2) !== 0) };
}

/** Whether a record was scored and has a label: the records error rates are counted over. */
export function isLabelled(record: ResultRecord): record is ScoredRecord & { label: number } {
  return !isFailed(record) && record.label !== null && record.label !== undefined;
}

/** How one top-5 list did on an image's label. */
export interface Verdict {
  readonly top1: boolean;
  readonly top5: boolean;
}

/** Whether a top-5 list puts `label` first (top1) and among its first five (top5). */
export function verdictOf(entries: readonly TopEntry[], label: number): Verdict {
  return { top1: entries[0]?.[0] === label, top5: entries.slice(0, 5).some((entry) => entry[0] === label) };
}

/**
 * Images judged and the errors among them. Rates and their intervals are computed from these
 * counts, so no interval is ever rebuilt from a rounded rate.
 */
export class ErrorCounts {
  n = 0;
  top1Errors = 0;
  top5Errors = 0;

  add(verdict: Verdict): void {
    this.n++;
    if (!verdict.top1) this.top1Errors++;
    if (!verdict.top5) this.top5Errors++;
  }

  /** Both error rates with their Wilson intervals; 0 with [0, 1] when nothing was judged. */
  rates(): ErrorRates {
    return {
      top1Error: this.n === 0 ? 0 : this.top1Errors / this.n,
      top5Error: this.n === 0 ? 0 : this.top5Errors / this.n,
      top1Interval: wilsonInterval(this.top1Errors, this.n),
      top5Interval: wilsonInterval(this.top5Errors, this.n),
    };
  }
}

/**
 * Single-crop errors of the 144 positions over the labelled records that carry `positions`, in
 * protocol order with Wilson intervals; undefined when no record carries them (a 1- or 10-crop
 * run), so `summary.positions = positionErrors(records)` leaves the field out.
 */
export function positionErrors(records: Iterable<ResultRecord>): PositionErrors[] | undefined {
  const counts = POSITIONS.map(() => new ErrorCounts());
  for (const record of records) {
    if (!isLabelled(record) || record.positions === undefined) continue;
    const { top1, top5 } = decodePositions(record.positions, record.key);
    counts.forEach((c, i) => c.add({ top1: top1[i] as boolean, top5: top5[i] as boolean }));
  }
  if (counts[0]?.n === 0) return undefined;
  return POSITIONS.map((position, i) => ({ ...position, ...(counts[i] as ErrorCounts).rates() }));
}

/** Options of schemeErrors. */
export interface SchemeErrorsOptions {
  /** Judge model `model`'s own top-5 (a record's `models[model]`). Default: the top-level top-5. */
  readonly model?: number;
  /**
   * Schemes every labelled record must carry (the run's computed schemes); a record without one
   * is refused. Default: none, each scheme counted over the records that carry it.
   */
  readonly require?: readonly Scheme[];
}

/**
 * Error rates with intervals per scheme over the labelled records, judged on the top-level
 * top-5 (the ensemble's, or the single model's) or on one model's own. A scheme no labelled
 * record was judged under is left out: 0/0 has no error rate.
 */
export function schemeErrors(records: Iterable<ResultRecord>, options: SchemeErrorsOptions = {}): SchemeErrorRates {
  const counts = new Map<Scheme, ErrorCounts>();
  const required = new Set(options.require ?? []);
  for (const record of records) {
    if (!isLabelled(record)) continue;
    const top5 = options.model === undefined ? record.top5 : modelTop5(record, options.model);
    for (const scheme of SCHEMES) {
      const entries = top5[scheme];
      if (entries === undefined || entries.length === 0) {
        if (!required.has(scheme)) continue;
        const whose = options.model === undefined ? "" : ` from model ${options.model + 1}`;
        throw new StorageError(`record "${record.key}": no top-5${whose} for scheme ${scheme}, which the run computed`);
      }
      const c = counts.get(scheme) ?? new ErrorCounts();
      c.add(verdictOf(entries, record.label));
      counts.set(scheme, c);
    }
  }
  const rates: SchemeErrorRates = {};
  for (const scheme of SCHEMES) {
    const c = counts.get(scheme);
    if (c) rates[scheme] = c.rates();
  }
  return rates;
}

function modelTop5(record: ScoredRecord, modelIndex: number): SchemeTop5 {
  const own = record.models?.[modelIndex]?.top5;
  if (own) return own;
  throw new StorageError(
    `record "${record.key}": no top-5 for model ${modelIndex + 1} (it lists ${record.models?.length ?? 0} models); ` +
      "were the records written with another list of models?",
  );
}

/**
 * The summary with every interval it lacks (older summaries carry none), computed from error
 * counts taken again from the run's records, never from a rate times a count. A scheme the
 * records do not hold gets [0, 1]: nothing is known about it.
 */
export function addIntervals(summary: Summary, records: readonly ResultRecord[]): Summary {
  const complete = (rates: SchemeErrorRates): boolean =>
    Object.values(rates).every((r) => r === undefined || (r.top1Interval !== undefined && r.top5Interval !== undefined));
  if ([summary.schemes, ...summary.models.map((m) => m.schemes)].every(complete)) return summary;
  const withIntervals = (rates: SchemeErrorRates, model?: number): SchemeErrorRates => {
    if (complete(rates)) return rates;
    const counted = schemeErrors(records, model === undefined ? {} : { model });
    const out: SchemeErrorRates = {};
    for (const scheme of SCHEMES) {
      const r = rates[scheme];
      if (!r) continue;
      const c = counted[scheme];
      out[scheme] = {
        ...r,
        top1Interval: r.top1Interval ?? c?.top1Interval ?? wilsonInterval(0, 0),
        top5Interval: r.top5Interval ?? c?.top5Interval ?? wilsonInterval(0, 0),
      };
    }
    return out;
  };
  // One model's own rates are the top-level ones; its records carry no `models`.
  const single = summary.models.length === 1;
  return {
    ...summary,
    schemes: withIntervals(summary.schemes),
    models: summary.models.map((m, i) => ({ ...m, schemes: withIntervals(m.schemes, single ? undefined : i) })),
  };
}

type Metric = Comparison["metric"];
const METRICS: readonly Metric[] = ["top1", "top5"];

/** A classifier as compared: its name and how to read its top-5 for a scheme from a record. */
interface Contender {
  readonly name: string;
  top5(record: ScoredRecord): readonly TopEntry[] | undefined;
}

function compare(records: readonly ScoredRecord[], a: Contender, b: Contender, metric: Metric): Comparison {
  let aOnly = 0;
  let bOnly = 0;
  let images = 0;
  for (const record of records) {
    const entriesA = a.top5(record);
    const entriesB = b.top5(record);
    if (!entriesA || !entriesB) continue;
    const va = verdictOf(entriesA, record.label as number);
    const vb = verdictOf(entriesB, record.label as number);
    images++;
    if (va[metric] && !vb[metric]) aOnly++;
    if (vb[metric] && !va[metric]) bOnly++;
  }
  return { a: a.name, b: b.name, metric, aOnly, bOnly, pValue: mcnemarExact(aOnly, bOnly), images };
}

/** Scheme pairs, more crops first, in the order a reader asks: 144 vs 1, 144 vs 10, 10 vs 1. */
const SCHEME_PAIRS: readonly [Scheme, Scheme][] = [
  ["144", "1"],
  ["144", "10"],
  ["10", "1"],
];

/**
 * McNemar comparisons between the schemes present, on the top-level (ensemble's) top-5, for
 * top-1 and top-5; `a` is the scheme with more crops, so aOnly counts the images it fixed.
 */
export function schemeComparisons(records: Iterable<ResultRecord>, schemes: readonly Scheme[]): Comparison[] {
  const labelled = [...records].filter(isLabelled);
  const out: Comparison[] = [];
  for (const [a, b] of SCHEME_PAIRS) {
    if (!schemes.includes(a) || !schemes.includes(b)) continue;
    for (const metric of METRICS) {
      out.push(compare(labelled, { name: a, top5: (r) => r.top5[a] }, { name: b, top5: (r) => r.top5[b] }, metric));
    }
  }
  return out;
}

/** Name of the ensemble in model comparisons. */
export const ENSEMBLE = "ensemble";

/**
 * McNemar comparisons, per scheme present and metric, between the ensemble and each model
 * (a = "ensemble") and between every pair of models (in --model order); empty for one model.
 * Models are named by `modelFiles`, in --model order, as summary.json's `models[].file`.
 */
export function modelComparisons(
  records: Iterable<ResultRecord>,
  modelFiles: readonly string[],
  schemes: readonly Scheme[],
): Comparison[] {
  if (modelFiles.length < 2) return [];
  const labelled = [...records].filter(isLabelled);
  for (const record of labelled) {
    if (record.models?.length !== modelFiles.length) {
      throw new StorageError(
        `record "${record.key}": ${record.models?.length ?? 0} per-model top-5 lists for ${modelFiles.length} models ` +
          `(${modelFiles.join(", ")}); were the records written with another list of models?`,
      );
    }
  }
  const out: Comparison[] = [];
  for (const scheme of SCHEMES.filter((s) => schemes.includes(s))) {
    const model = (i: number): Contender => ({ name: modelFiles[i]!, top5: (r) => r.models?.[i]?.top5[scheme] });
    const pairs: [Contender, Contender][] = modelFiles.map((_, i) => [
      { name: ENSEMBLE, top5: (r: ScoredRecord) => r.top5[scheme] },
      model(i),
    ]);
    for (let i = 0; i < modelFiles.length; i++) {
      for (let j = i + 1; j < modelFiles.length; j++) pairs.push([model(i), model(j)]);
    }
    for (const [a, b] of pairs) {
      for (const metric of METRICS) out.push({ ...compare(labelled, a, b, metric), scheme });
    }
  }
  return out;
}

/** Options of classErrors. */
export interface ClassErrorsOptions {
  /** Scheme whose top-level top-5 is judged. Default: the largest scheme any record carries. */
  readonly scheme?: Scheme;
  /** Class names by index; a class they leave out takes the name the records' top-5 lists give it. Default: those names. */
  readonly classNames?: readonly string[];
  /** How many confusions to keep per class. Default: 3. */
  readonly confusions?: number;
}

/** The name every top-5 entry in the records gives each class index. */
export function namesFromRecords(records: Iterable<ResultRecord>): Map<number, string> {
  const names = new Map<number, string>();
  for (const record of records) {
    if (isFailed(record)) continue;
    const lists = [record.top5, ...(record.models ?? []).map((m) => m.top5)];
    for (const top5 of lists) {
      for (const entries of Object.values(top5)) {
        for (const [index, , name] of entries ?? []) if (!names.has(index)) names.set(index, name);
      }
    }
  }
  return names;
}

/**
 * Accuracy per true class over the labelled records, in class-index order, with each class's
 * most frequent top-1 predictions among its top-1 errors (ties to the lower class index).
 */
export function classErrors(records: Iterable<ResultRecord>, options: ClassErrorsOptions = {}): ClassErrors[] {
  const all = [...records];
  const labelled = all.filter(isLabelled);
  const scheme = options.scheme ?? [...SCHEMES].reverse().find((s) => labelled.some((r) => r.top5[s] !== undefined));
  if (scheme === undefined) return [];
  let found: Map<number, string> | undefined;
  // The records' names are read only when the given names leave a class out.
  const nameOf = (index: number): string | null =>
    options.classNames?.[index] ?? (found ??= namesFromRecords(all)).get(index) ?? null;
  const keep = options.confusions ?? 3;

  const byClass = new Map<number, { counts: ErrorCounts; predicted: Map<number, number> }>();
  for (const record of labelled) {
    const entries = record.top5[scheme];
    if (!entries) continue;
    const v = verdictOf(entries, record.label);
    const c = byClass.get(record.label) ?? { counts: new ErrorCounts(), predicted: new Map<number, number>() };
    c.counts.add(v);
    const predicted = entries[0]?.[0];
    if (!v.top1 && predicted !== undefined) c.predicted.set(predicted, (c.predicted.get(predicted) ?? 0) + 1);
    byClass.set(record.label, c);
  }
  return [...byClass.entries()]
    .sort(([a], [b]) => a - b)
    .map(([index, c]) => {
      const confusions: Confusion[] = [...c.predicted.entries()]
        .sort(([ia, na], [ib, nb]) => nb - na || ia - ib)
        .slice(0, keep)
        .map(([predicted, count]) => ({ class: predicted, name: nameOf(predicted), count }));
      return {
        class: index,
        name: nameOf(index),
        images: c.counts.n,
        top1Error: c.counts.top1Errors / c.counts.n,
        top5Error: c.counts.top5Errors / c.counts.n,
        confusions,
      };
    });
}

/** Judges a top-5 list against a ReaL list: right when the prediction is in the list. */
function realVerdict(entries: readonly TopEntry[], classes: readonly number[]): Verdict {
  const first = entries[0]?.[0];
  return {
    top1: first !== undefined && classes.includes(first),
    top5: entries.slice(0, 5).some((entry) => classes.includes(entry[0])),
  };
}

/** The ReaL labels statistics need: the list of a key, or undefined when the key has none. */
export interface RealLookup {
  lookup(key: string): readonly number[] | undefined;
}

/**
 * ReaL errors per scheme over the scored records whose key has a ReaL list, judged on the
 * top-level top-5 or model `model`'s own. The original label plays no part. An empty list
 * leaves the image out of numerator and denominator alike and counts it in leftOut; a scheme
 * no record with a list carries is left out. Intervals: 95% Wilson, as for the original labels.
 */
export function realErrors(
  records: Iterable<ResultRecord>,
  real: RealLookup,
  options: { readonly model?: number } = {},
): Partial<Record<Scheme, RealErrorRates>> {
  const counts = new Map<Scheme, { errors: ErrorCounts; leftOut: number }>();
  for (const record of records) {
    if (isFailed(record)) continue;
    const classes = real.lookup(record.key);
    if (classes === undefined) continue;
    const top5 = options.model === undefined ? record.top5 : modelTop5(record, options.model);
    for (const scheme of SCHEMES) {
      const entries = top5[scheme];
      if (entries === undefined || entries.length === 0) continue;
      const c = counts.get(scheme) ?? { errors: new ErrorCounts(), leftOut: 0 };
      if (classes.length === 0) c.leftOut++;
      else c.errors.add(realVerdict(entries, classes));
      counts.set(scheme, c);
    }
  }
  const out: Partial<Record<Scheme, RealErrorRates>> = {};
  for (const scheme of SCHEMES) {
    const c = counts.get(scheme);
    if (!c) continue;
    const rates = c.errors.rates();
    out[scheme] = {
      top1Error: rates.top1Error,
      top5Error: rates.top5Error,
      top1Interval: rates.top1Interval as Interval,
      top5Interval: rates.top5Interval as Interval,
      leftOut: c.leftOut,
    };
  }
  return out;
}

/**
 * Probabilities below this count as this in NLL, so one image whose labelled class underflowed
 * to 0 in float32 softmax adds at most -ln(1e-12) = 27.63 nats instead of making the mean
 * infinite. The floor is applied to the stored (averaged) probability, never to a crop's.
 */
export const NLL_FLOOR = 1e-12;

/** Confidence bins of the expected calibration error: 15 of equal width, the common default. */
export const ECE_BINS = 15;

/** One confidence bin: (lower, upper], its images, their mean top-1 probability and top-1 accuracy. */
export interface CalibrationBin {
  readonly lower: number;
  readonly upper: number;
  readonly images: number;
  /** Mean top-1 probability of its images; 0 when it has none. */
  readonly confidence: number;
  /** Share of its images whose top-1 is the label; 0 when it has none. */
  readonly accuracy: number;
}

/** NLL, ECE and the bins a reliability diagram draws, for one scheme. */
export interface CalibrationDetail extends Calibration {
  readonly images: number;
  readonly bins: readonly CalibrationBin[];
}

/**
 * The bin of a top-1 probability: bin b (0-based) holds (b/15, (b+1)/15], as Guo et al. 2017
 * and the usual implementations compare against the bin edges; a probability of exactly 0
 * (impossible for a top-1 of a softmax) goes to the first. Compared against the edges
 * themselves so that p = b/15 lands in bin b-1 whatever p*15 rounds to.
 */
export function calibrationBin(p: number): number {
  let b = Math.min(ECE_BINS - 1, Math.max(0, Math.ceil(p * ECE_BINS) - 1));
  while (b > 0 && p <= b / ECE_BINS) b--;
  while (b < ECE_BINS - 1 && p > (b + 1) / ECE_BINS) b++;
  return b;
}

/** Calibration per scheme, or why there is none. */
export interface CalibrationResult {
  readonly schemes: Partial<Record<Scheme, CalibrationDetail>>;
  /** Set when labelled records lack labelProbability, which NLL needs; then `schemes` is empty. */
  readonly missing?: string;
}

/**
 * NLL and top-label ECE (15 equal-width bins, L1: the sum over bins of |accuracy - mean
 * confidence| weighted by the bin's share of images) per scheme over the labelled records,
 * judged on the top-level probabilities or model `model`'s own. Confidence is the top-1
 * probability from top5, correctness its class being the label; NLL reads labelProbability.
 * All or nothing: when any labelled record lacks labelProbability for a scheme (results
 * written before it was kept, resumed or aggregated beside newer ones), no scheme is reported
 * and `missing` says how many, so figures over a part of the images never pass for the run's.
 */
export function calibrationErrors(records: Iterable<ResultRecord>, options: { readonly model?: number } = {}): CalibrationResult {
  const sums = new Map<Scheme, { n: number; nll: number; bins: { n: number; confidence: number; right: number }[] }>();
  let labelled = 0;
  let lacking = 0;
  for (const record of records) {
    if (!isLabelled(record)) continue;
    labelled++;
    const top5 = options.model === undefined ? record.top5 : modelTop5(record, options.model);
    const probabilities = options.model === undefined ? record.labelProbability : record.models?.[options.model]?.labelProbability;
    let complete = true;
    for (const scheme of SCHEMES) {
      const entries = top5[scheme];
      if (entries === undefined || entries.length === 0) continue;
      const p = probabilities?.[scheme];
      if (typeof p !== "number" || !Number.isFinite(p)) {
        complete = false;
        continue;
      }
      const s = sums.get(scheme) ?? { n: 0, nll: 0, bins: Array.from({ length: ECE_BINS }, () => ({ n: 0, confidence: 0, right: 0 })) };
      const [predicted, confidence] = entries[0] as TopEntry;
      const bin = s.bins[calibrationBin(confidence)] as { n: number; confidence: number; right: number };
      s.n++;
      s.nll -= Math.log(Math.max(p, NLL_FLOOR));
      bin.n++;
      bin.confidence += confidence;
      if (predicted === record.label) bin.right++;
      sums.set(scheme, s);
    }
    if (!complete) lacking++;
  }
  if (lacking > 0) {
    const whose = options.model === undefined ? "" : ` (model ${options.model + 1})`;
    return {
      schemes: {},
      missing:
        `${lacking} of ${labelled} labelled records carry no labelProbability${whose} (written before it was kept), ` +
        "so NLL and ECE are not reported; score those images again into a new output folder to have them",
    };
  }
  const schemes: Partial<Record<Scheme, CalibrationDetail>> = {};
  for (const scheme of SCHEMES) {
    const s = sums.get(scheme);
    if (!s) continue;
    const bins = s.bins.map((b, i) => ({
      lower: i / ECE_BINS,
      upper: (i + 1) / ECE_BINS,
      images: b.n,
      confidence: b.n === 0 ? 0 : b.confidence / b.n,
      accuracy: b.n === 0 ? 0 : b.right / b.n,
    }));
    const ece = bins.reduce((sum, b) => sum + (b.images / s.n) * Math.abs(b.accuracy - b.confidence), 0);
    schemes[scheme] = { nll: s.nll / s.n, ece, images: s.n, bins };
  }
  return { schemes };
}

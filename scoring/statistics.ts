import { CROP_NAMES, SCALES, SCHEMES, type CropName, type Scale, type Scheme } from "../model/crop-types.js";
import { StorageError } from "../model/errors.js";
import {
  isFailed,
  type ClassErrors,
  type Comparison,
  type Confusion,
  type ErrorRates,
  type Interval,
  type PositionErrors,
  type ResultRecord,
  type SchemeErrorRates,
  type SchemeTop5,
  type ScoredRecord,
  type Summary,
  type TopEntry,
} from "./records.js";

/** Square names of a position, in protocol order (landscape names; see PositionErrors). */
export const POSITION_SQUARES = ["left", "center", "right"] as const;

/** One of the 144 crop positions, without its errors. */
export interface Position {
  readonly scale: Scale;
  readonly square: (typeof POSITION_SQUARES)[number];
  readonly crop: CropName;
  readonly mirror: boolean;
}

/** The 144 positions in protocol order: scale, then square, then crop, then mirror. */
export const POSITIONS: readonly Position[] = SCALES.flatMap((scale) =>
  POSITION_SQUARES.flatMap((square) =>
    CROP_NAMES.flatMap((crop) => [false, true].map((mirror) => ({ scale, square, crop, mirror }))),
  ),
);

/** Index in POSITIONS of the 1-crop scheme's only crop: 256, center square, center crop, unmirrored. */
export const ONE_CROP_POSITION = POSITIONS.findIndex(
  (p) => p.scale === 256 && p.square === "center" && p.crop === "center" && !p.mirror,
);

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

/** The `positions` string of a record from each position's own verdicts (144 each, protocol order). */
export function encodePositions(top1Right: readonly boolean[], top5Right: readonly boolean[]): string {
  if (top1Right.length !== POSITIONS.length || top5Right.length !== POSITIONS.length) {
    throw new RangeError(
      `encodePositions needs ${POSITIONS.length} verdicts each, got ${top1Right.length} and ${top5Right.length}`,
    );
  }
  return top1Right.map((top1, i) => String((top1 ? 1 : 0) | (top5Right[i] ? 2 : 0))).join("");
}

const POSITIONS_PATTERN = new RegExp(`^[0-3]{${POSITIONS.length}}$`);

/** The verdict bits of a record's `positions`, checked, with the key named when malformed. */
export function decodePositions(positions: string, key: string): { top1: boolean[]; top5: boolean[] } {
  if (!POSITIONS_PATTERN.test(positions)) {
    throw new StorageError(
      `record "${key}": positions must be ${POSITIONS.length} characters, each one of 0, 1, 2, 3 ` +
        `(bit 1 = top-1 right, bit 2 = top-5 right); got ${positions.length} characters "${positions.slice(0, 20)}${positions.length > 20 ? "..." : ""}"`,
    );
  }
  const codes = [...positions].map(Number);
  return { top1: codes.map((c) => (c & 1) !== 0), top5: codes.map((c) => (c & 2) !== 0) };
}

function isLabelled(record: ResultRecord): record is ScoredRecord & { label: number } {
  return !isFailed(record) && record.label !== null && record.label !== undefined;
}

/** Both rates of `top1Errors` and `top5Errors` out of `n`, with their Wilson intervals. */
export function errorRates(top1Errors: number, top5Errors: number, n: number): ErrorRates {
  return {
    top1Error: n === 0 ? 0 : top1Errors / n,
    top5Error: n === 0 ? 0 : top5Errors / n,
    top1Interval: wilsonInterval(top1Errors, n),
    top5Interval: wilsonInterval(top5Errors, n),
  };
}

/** Whether a top-5 list puts `label` first (top1) and anywhere (top5). */
function verdict(entries: readonly TopEntry[] | undefined, label: number): { top1: boolean; top5: boolean } | undefined {
  if (!entries) return undefined;
  return { top1: entries[0]?.[0] === label, top5: entries.slice(0, 5).some((e) => e[0] === label) };
}

/**
 * Single-crop errors of the 144 positions over the labelled records that carry `positions`, in
 * protocol order with Wilson intervals; undefined when no record carries them (a 1- or 10-crop
 * run), so `summary.positions = positionErrors(records)` leaves the field out.
 */
export function positionErrors(records: Iterable<ResultRecord>): PositionErrors[] | undefined {
  const top1Errors = new Array<number>(POSITIONS.length).fill(0);
  const top5Errors = new Array<number>(POSITIONS.length).fill(0);
  let n = 0;
  for (const record of records) {
    if (!isLabelled(record) || record.positions === undefined) continue;
    const { top1, top5 } = decodePositions(record.positions, record.key);
    n++;
    for (let i = 0; i < POSITIONS.length; i++) {
      if (!top1[i]) top1Errors[i]!++;
      if (!top5[i]) top5Errors[i]!++;
    }
  }
  if (n === 0) return undefined;
  return POSITIONS.map((position, i) => ({ ...position, ...errorRates(top1Errors[i]!, top5Errors[i]!, n) }));
}

/**
 * Error rates with intervals per scheme for the records' top-level top-5 (the ensemble's, or
 * the single model's), or for model `modelIndex`'s own when given.
 */
export function schemeErrors(records: Iterable<ResultRecord>, modelIndex?: number): SchemeErrorRates {
  const counts = new Map<Scheme, { n: number; top1: number; top5: number }>();
  for (const record of records) {
    if (!isLabelled(record)) continue;
    const top5 = modelTop5(record, modelIndex);
    for (const scheme of SCHEMES) {
      const v = verdict(top5[scheme], record.label);
      if (!v) continue;
      const c = counts.get(scheme) ?? { n: 0, top1: 0, top5: 0 };
      c.n++;
      if (!v.top1) c.top1++;
      if (!v.top5) c.top5++;
      counts.set(scheme, c);
    }
  }
  const rates: SchemeErrorRates = {};
  for (const scheme of SCHEMES) {
    const c = counts.get(scheme);
    if (c) rates[scheme] = errorRates(c.top1, c.top5, c.n);
  }
  return rates;
}

function modelTop5(record: ScoredRecord, modelIndex: number | undefined): SchemeTop5 {
  if (modelIndex === undefined) return record.top5;
  const own = record.models?.[modelIndex]?.top5;
  // A single-model run stores no `models`; its top-level top-5 is that model's own.
  if (own) return own;
  if (modelIndex === 0 && record.models === undefined) return record.top5;
  throw new StorageError(
    `record "${record.key}": no top-5 for model ${modelIndex} (it lists ${record.models?.length ?? 0} models); ` +
      "were the records written with a different --model list?",
  );
}

/**
 * Intervals for every error rate of a summary that lacks them, from its `labelled` count; rates
 * are exact fractions of that count, so the error counts are recovered by rounding.
 */
export function addIntervals(summary: Summary): Summary {
  const n = summary.labelled;
  const withIntervals = (rates: SchemeErrorRates): SchemeErrorRates => {
    const out: SchemeErrorRates = {};
    for (const scheme of SCHEMES) {
      const r = rates[scheme];
      if (!r) continue;
      out[scheme] = {
        ...r,
        top1Interval: r.top1Interval ?? wilsonInterval(Math.round(r.top1Error * n), n),
        top5Interval: r.top5Interval ?? wilsonInterval(Math.round(r.top5Error * n), n),
      };
    }
    return out;
  };
  return {
    ...summary,
    schemes: withIntervals(summary.schemes),
    models: summary.models.map((m) => ({ ...m, schemes: withIntervals(m.schemes) })),
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
    const label = record.label as number;
    const va = verdict(a.top5(record), label);
    const vb = verdict(b.top5(record), label);
    if (!va || !vb) continue;
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
          `(${modelFiles.join(", ")}); were the records written with a different --model list?`,
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
  /** Class names by index. Default: the names the records' top-5 lists give each class. */
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
  const found = options.classNames ? undefined : namesFromRecords(all);
  const nameOf = (index: number): string | null => options.classNames?.[index] ?? found?.get(index) ?? null;
  const keep = options.confusions ?? 3;

  const byClass = new Map<number, { images: number; top1: number; top5: number; predicted: Map<number, number> }>();
  for (const record of labelled) {
    const v = verdict(record.top5[scheme], record.label);
    if (!v) continue;
    const c = byClass.get(record.label) ?? { images: 0, top1: 0, top5: 0, predicted: new Map<number, number>() };
    c.images++;
    if (!v.top5) c.top5++;
    if (!v.top1) {
      c.top1++;
      const predicted = record.top5[scheme]?.[0]?.[0];
      if (predicted !== undefined) c.predicted.set(predicted, (c.predicted.get(predicted) ?? 0) + 1);
    }
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
        images: c.images,
        top1Error: c.top1 / c.images,
        top5Error: c.top5 / c.images,
        confusions,
      };
    });
}

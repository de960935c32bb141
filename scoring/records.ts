import type { CropName, Scale, Scheme } from "../model/image/crop-types.js";

/** One top-5 entry as results.jsonl stores it: class index, mean probability, first synset name. */
export type TopEntry = [classIndex: number, probability: number, name: string];

/** Top-5 per computed scheme ("1" and "10", or all three with 144 crops). */
export type SchemeTop5 = Partial<Record<Scheme, TopEntry[]>>;

/** One probability per computed scheme. */
export type SchemeProbability = Partial<Record<Scheme, number>>;

/** A scored image: one line of results.jsonl (../shared/PROTOCOL.md). */
export interface ScoredRecord {
  key: string;
  label: number | null;
  width: number;
  height: number;
  /** The ensemble's top-5 (the single model's when only one). */
  top5: SchemeTop5;
  /**
   * The labelled class's mean probability per computed scheme (the ensemble's; the single
   * model's when only one), as averaged for top5, unrounded: what NLL needs and the top-5 cannot
   * give. Present only on labelled records; records written before this field existed lack it,
   * and then the summary reports no calibration (statistics.ts calibrationErrors) rather than
   * one over part of the images.
   */
  labelProbability?: SchemeProbability;
  /** Each model's own top-5 (and labelProbability when labelled), in --model order; present only for an ensemble. */
  models?: { top5: SchemeTop5; labelProbability?: SchemeProbability }[];
  /**
   * How each of the 144 crop positions did on its own (the ensemble's probabilities at that
   * position): 144 characters in protocol order (scale, square, crop, mirror), each '0'..'3'
   * with bit 1 = the position's top-1 was right and bit 2 = its top-5 was right. Present only
   * for labelled images in 144-crop runs; see scoring/statistics.ts encodePositions.
   */
  positions?: string;
}

/** An image that could not be scored: it stays in the results, never silently dropped. */
export interface FailedRecord {
  key: string;
  error: string;
}

export type ResultRecord = ScoredRecord | FailedRecord;

export function isFailed(record: ResultRecord): record is FailedRecord {
  return "error" in record;
}

/** A 95% interval [low, high] for an error rate, as fractions in [0, 1]. */
export type Interval = [low: number, high: number];

export interface ErrorRates {
  top1Error: number;
  top5Error: number;
  /** Wilson score 95% interval of top1Error over the images it counts; absent in older summaries. */
  top1Interval?: Interval;
  /** Wilson score 95% interval of top5Error over the images it counts; absent in older summaries. */
  top5Interval?: Interval;
  /** Errors against the ReaL labels (PROTOCOL.md), when any scored image has a ReaL entry. */
  real?: RealErrorRates;
  /** Calibration of the averaged probabilities, when every labelled record carries labelProbability. */
  calibration?: Calibration;
}

/**
 * Errors against the ReaL labels: a prediction is right when it is in the image's list; images
 * whose list is empty are left out of both numerator and denominator and counted in leftOut.
 * Intervals are 95% Wilson score intervals, as for the original labels.
 */
export interface RealErrorRates {
  top1Error: number;
  top5Error: number;
  top1Interval: Interval;
  top5Interval: Interval;
  leftOut: number;
}

/**
 * nll: mean of -ln max(p, statistics.ts NLL_FLOOR) over labelled images, p the labelled
 * class's averaged probability; ece: top-label expected calibration error over 15 equal-width
 * confidence bins, L1 (statistics.ts calibrationErrors).
 */
export interface Calibration {
  nll: number;
  ece: number;
}

export type SchemeErrorRates = Partial<Record<Scheme, ErrorRates>>;

/** summary.json (../shared/PROTOCOL.md, "Interfaces the checks read"). */
export interface Summary {
  images: number;
  scored: number;
  failed: number;
  labelled: number;
  /** The ensemble's (or single model's) error rates per computed scheme. */
  schemes: SchemeErrorRates;
  models: { file: string; sha256: string; flavour?: string; schemes: SchemeErrorRates }[];
  failedKeys: string[];
  /** Single-crop error of each of the 144 positions, in protocol order; only with --crops 144. */
  positions?: PositionErrors[];
  /** Paired McNemar comparisons between schemes and between models on the same images. */
  comparisons?: Comparison[];
  /** Accuracy per true class, in class-index order. */
  perClass?: readonly ClassErrors[];
  /** Facts about the run that produced the numbers; each field only when known. */
  run?: RunFacts;
  /**
   * Present when the built-in ILSVRC 2012 validation labels labelled images (no label file was
   * given and keys are named ILSVRC2012_val_NNNNNNNN.*): the file and how many images.
   */
  builtInLabels?: { file: string; images: number };
  /** Present when ReaL labels applied to any scored image: where they came from and to how many images (left-out ones included). */
  realLabels?: { source: string; images: number };
  /** Why no scheme has `calibration` although images are labelled (records from before labelProbability). */
  calibrationMissing?: string;
}

/**
 * One crop position of the 144. Squares are named as for landscape images: on a portrait
 * image "left" is the top square and "right" the bottom one (the same place in protocol order).
 */
export interface PositionErrors extends ErrorRates {
  scale: Scale;
  square: "left" | "center" | "right";
  crop: CropName;
  mirror: boolean;
}

/**
 * McNemar's exact test of two classifiers on the same images: aOnly counts the images only A
 * got right, bOnly those only B got right; pValue is two-sided (binomial on aOnly + bOnly).
 */
export interface Comparison {
  /** A scheme name ("144") or, with `scheme`, a model file or "ensemble". */
  a: string;
  b: string;
  metric: "top1" | "top5";
  aOnly: number;
  bOnly: number;
  pValue: number;
  /** Labelled images both were scored on. */
  images?: number;
  /** Present when a and b are models: the crop scheme both were compared under. */
  scheme?: Scheme;
}

/** A predicted class and how often the top-1 prediction fell on it for a class's wrong images. */
export interface Confusion {
  class: number;
  name: string | null;
  count: number;
}

export interface ClassErrors {
  class: number;
  /** First synset name, or null when nothing names the class. */
  name: string | null;
  images: number;
  top1Error: number;
  top5Error: number;
  /** The most frequent top-1 predictions among this class's top-1 errors, most frequent first. */
  confusions?: Confusion[];
}

/** What ran and how fast; the report shows whatever is present. */
export interface RunFacts {
  /** Images this run scored or failed (an earlier, resumed run's are not counted). */
  images?: number;
  engine?: string;
  backend?: string;
  wallSeconds?: number;
  cropsPerSecond?: number;
  /** ISO 8601 start time. */
  startedAt?: string;
  models?: { file: string; sha256?: string; flavour?: string }[];
}

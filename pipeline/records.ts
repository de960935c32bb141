import type { Scheme } from "../model/crop-types.js";

/** One top-5 entry as results.jsonl stores it: class index, mean probability, first synset name. */
export type TopEntry = [classIndex: number, probability: number, name: string];

/** Top-5 per computed scheme ("1" and "10", or all three with 144 crops). */
export type SchemeTop5 = Partial<Record<Scheme, TopEntry[]>>;

/** A scored image: one line of results.jsonl (../shared/PROTOCOL.md). */
export interface ScoredRecord {
  key: string;
  label: number | null;
  width: number;
  height: number;
  /** The ensemble's top-5 (the single model's when only one). */
  top5: SchemeTop5;
  /** Each model's own top-5, in --model order; present only for an ensemble. */
  models?: { top5: SchemeTop5 }[];
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

export interface ErrorRates {
  top1Error: number;
  top5Error: number;
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
}

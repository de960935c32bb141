import { NUM_CLASSES } from "../model/engine.js";
import { ConfigurationError } from "../model/errors.js";
import type { ResultRecord } from "./records.js";
import { isFailed } from "./records.js";

/**
 * The label check: after the first labelled images of a run, whether a known mix-up of label
 * spaces explains the model's top-1 predictions far better than the labels as given. Hours of
 * GPU spent on a run whose labels are off by one are the most common waste in bulk ImageNet
 * scoring; a working model reveals it within a few hundred images.
 */

/** Where plan stores the diagnosis, beside manifest.json; aggregate puts it in report.html. */
export const LABEL_CHECK_FILE = "label-check.json";

/** Labelled, scored images the check waits for before it decides (all of them, when fewer). */
export const LABEL_CHECK_IMAGES = 200;

/**
 * One-sided significance level of the sign test per remapping. With five remappings tried, the
 * chance that labels which are as good as a remapping still trip the check is at most 5e-6; labels
 * that are right are far better than any remapping, so in practice it is nil.
 */
export const LABEL_CHECK_ALPHA = 1e-6;

/**
 * Distinct classes among the images only a remapping explains. A model that answers one class
 * for everything (an untrained or broken one) on a folder of one class could otherwise make a
 * shift look right by chance; a real mix-up shows up across many classes.
 */
export const LABEL_CHECK_MIN_CLASSES = 5;

/** A known way labels end up in another label space than the model's outputs. */
export interface Remapping {
  /** Short id, as stored in label-check.json. */
  readonly id: string;
  /** What the mix-up is, for the message. */
  readonly description: string;
  /** The class the model would output for an image given `label`, if the mix-up happened; null when none. */
  map(label: number): number | null;
}

/** "0".."999" in the order a string sort of folder names gives: 0, 1, 10, 100, 101, ... */
const STRING_ORDER: readonly number[] = Array.from({ length: NUM_CLASSES }, (_, i) => i).sort((a, b) =>
  String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0,
);
const STRING_RANK: readonly number[] = (() => {
  const rank = new Array<number>(NUM_CLASSES);
  STRING_ORDER.forEach((folder, position) => (rank[folder] = position));
  return rank;
})();

/**
 * The remappings the check tries: the fixed ones, then `learned` (the devkit-id remapping, which
 * scoring/devkit-ids.ts learns from the built-in validation labels, as meta.mat's order is not
 * shipped). Ties in the test go to the earlier, so a learned mapping that is only a shift by one
 * is named as the shift.
 */
export function knownRemappings(learned: readonly Remapping[] = []): Remapping[] {
  const remappings: Remapping[] = [
    {
      id: "minus-one",
      description: "labels one too high (1-based class ids: given n is class n-1)",
      map: (label) => (label >= 1 ? label - 1 : null),
    },
    {
      id: "plus-one",
      description: "labels one too low (given n is class n+1)",
      map: (label) => (label + 1 < NUM_CLASSES ? label + 1 : null),
    },
    {
      id: "folders-as-strings",
      description: 'labels numbered by folder names "0".."999" sorted as strings (given n is the folder at place n of "0", "1", "10", "100", ...)',
      map: (label) => STRING_ORDER[label] ?? null,
    },
    {
      id: "model-folders-as-strings",
      description: 'class indices of a model trained on folders "0".."999" sorted as strings (given n is output at the place of "n" in that order)',
      map: (label) => STRING_RANK[label] ?? null,
    },
  ];
  remappings.push(...learned);
  return remappings;
}

/** One labelled, scored image as the check sees it. */
export interface CheckedImage {
  readonly label: number;
  /** The model's (or ensemble's) top-1 class. */
  readonly top1: number;
}

/** How one remapping fared against the labels as given. */
export interface RemappingScore {
  readonly id: string;
  readonly description: string;
  /** Top-1 hits under the remapping. */
  readonly hits: number;
  /** Images the remapping explains and the given labels do not, and the reverse. */
  readonly onlyRemapped: number;
  readonly onlyGiven: number;
  /** Distinct classes (as remapped) among the `onlyRemapped` images. */
  readonly classes: number;
  /** One-sided exact sign test: P(X >= onlyRemapped), X ~ Binomial(onlyRemapped + onlyGiven, 1/2). */
  readonly pValue: number;
}

/** The check's verdict, as label-check.json stores it and the report shows it. */
export interface LabelDiagnosis {
  readonly images: number;
  readonly givenHits: number;
  readonly alpha: number;
  readonly minClasses: number;
  /** The remapping with the most hits. */
  readonly best: RemappingScore | null;
  /** The remapping that explains the predictions far better than the labels as given, if any. */
  readonly winner: RemappingScore | null;
}

/** ln(k!) by summing logs: n is a few hundred at most here. */
function logFactorials(n: number): Float64Array {
  const out = new Float64Array(n + 1);
  for (let k = 1; k <= n; k++) out[k] = (out[k - 1] as number) + Math.log(k);
  return out;
}

/** P(X >= k) for X ~ Binomial(n, 1/2), summed in log space so large n does not underflow. */
export function binomialUpperTail(k: number, n: number): number {
  if (k <= 0) return 1;
  if (k > n) return 0;
  const lf = logFactorials(n);
  let sum = 0;
  for (let i = k; i <= n; i++) sum += Math.exp((lf[n] as number) - (lf[i] as number) - (lf[n - i] as number) - n * Math.LN2);
  return Math.min(1, sum);
}

function scoreRemapping(images: readonly CheckedImage[], remapping: Remapping): RemappingScore {
  let hits = 0;
  let onlyRemapped = 0;
  let onlyGiven = 0;
  const classes = new Set<number>();
  for (const { label, top1 } of images) {
    const mapped = remapping.map(label);
    const given = top1 === label;
    const other = mapped !== null && top1 === mapped;
    if (other) hits++;
    if (other && !given) {
      onlyRemapped++;
      classes.add(mapped);
    }
    if (given && !other) onlyGiven++;
  }
  return {
    id: remapping.id,
    description: remapping.description,
    hits,
    onlyRemapped,
    onlyGiven,
    classes: classes.size,
    pValue: binomialUpperTail(onlyRemapped, onlyRemapped + onlyGiven),
  };
}

/**
 * Compares top-1 hits under each remapping with hits under the labels as given, pairwise per
 * image (McNemar's exact test, one-sided): a remapping wins when its p-value is at most
 * {@link LABEL_CHECK_ALPHA} and the images it alone explains span at least
 * {@link LABEL_CHECK_MIN_CLASSES} classes. Low accuracy alone never wins: a model near chance
 * has few hits under any mapping, so no p-value gets small.
 */
export function diagnoseLabels(images: readonly CheckedImage[], remappings: readonly Remapping[] = knownRemappings()): LabelDiagnosis {
  const givenHits = images.filter(({ label, top1 }) => label === top1).length;
  const scores = remappings.map((remapping) => scoreRemapping(images, remapping));
  const best = scores.reduce<RemappingScore | null>((a, b) => (a === null || b.hits > a.hits ? b : a), null);
  const winners = scores
    .filter((score) => score.pValue <= LABEL_CHECK_ALPHA && score.classes >= LABEL_CHECK_MIN_CLASSES && score.hits > givenHits)
    .sort((a, b) => a.pValue - b.pValue);
  return { images: images.length, givenHits, alpha: LABEL_CHECK_ALPHA, minClasses: LABEL_CHECK_MIN_CLASSES, best, winner: winners[0] ?? null };
}

const percent = (hits: number, images: number): string => `${((100 * hits) / Math.max(images, 1)).toFixed(1)}%`;

/** One line for logs and the report: what was checked and what it found. */
export function describeDiagnosis(diagnosis: LabelDiagnosis): string {
  const { images, givenHits, best, winner } = diagnosis;
  const given = `labels as given: top-1 ${percent(givenHits, images)} (${givenHits} of ${images})`;
  if (winner !== null) {
    return (
      `label check: ${given}; ${winner.description}: ${percent(winner.hits, images)} (${winner.hits} of ${images}), ` +
      `one-sided exact sign test p = ${winner.pValue.toExponential(1)} (threshold ${diagnosis.alpha.toExponential(0)})`
    );
  }
  const runnerUp = best === null ? "" : `; best remapping (${best.id}): ${percent(best.hits, images)} (${best.hits} of ${images})`;
  return `label check passed on ${images} labelled image(s): ${given}${runnerUp}`;
}

/**
 * A run whose labels a known remapping explains far better than the labels as given: a bad
 * setting (the label file), so it exits as one.
 */
export class LabelMismatchError extends ConfigurationError {
  constructor(
    message: string,
    readonly diagnosis: LabelDiagnosis,
  ) {
    super(message);
    this.name = "LabelMismatchError";
  }
}

/** The error for a diagnosis with a winner; `what` says what was stopped or refused. */
export function mismatchError(diagnosis: LabelDiagnosis, what: string): LabelMismatchError {
  return new LabelMismatchError(
    `${describeDiagnosis(diagnosis)}. ${what}: the labels do not match the model's class order. ` +
      `Fix the label file (or its label space), or turn the label check off to run anyway`,
    diagnosis,
  );
}

/** The top-1 class of a record under its largest scheme (the most accurate, so the most telling). */
export function checkedImageOf(record: ResultRecord): CheckedImage | undefined {
  if (isFailed(record) || record.label === null) return undefined;
  const schemes = Object.keys(record.top5).sort((a, b) => Number(b) - Number(a));
  const first = record.top5[schemes[0] as keyof typeof record.top5]?.[0];
  return first === undefined ? undefined : { label: record.label, top1: first[0] };
}

/**
 * Gathers the first {@link LABEL_CHECK_IMAGES} labelled, scored records of a run and decides
 * once, either when it has them or at the end of the run.
 */
export class LabelCheck {
  private readonly images: CheckedImage[] = [];
  private decided: LabelDiagnosis | undefined;

  constructor(
    private readonly remappings: readonly Remapping[] = knownRemappings(),
    private readonly wanted = LABEL_CHECK_IMAGES,
  ) {}

  /** Adds a record; returns the diagnosis when this record completes the sample. */
  add(record: ResultRecord): LabelDiagnosis | undefined {
    if (this.decided !== undefined) return undefined;
    const image = checkedImageOf(record);
    if (image === undefined) return undefined;
    this.images.push(image);
    return this.images.length >= this.wanted ? this.decide() : undefined;
  }

  /** The diagnosis over what was gathered, if not decided yet (a run with fewer labelled images). */
  finish(): LabelDiagnosis | undefined {
    if (this.decided !== undefined || this.images.length === 0) return undefined;
    return this.decide();
  }

  get diagnosis(): LabelDiagnosis | undefined {
    return this.decided;
  }

  private decide(): LabelDiagnosis {
    this.decided = diagnoseLabels(this.images, this.remappings);
    return this.decided;
  }
}

import type { Synsets } from "../model/synsets.js";
import type { ValidationLabels } from "./imagenet-validation.js";
import { readBuiltInValidationLabels, validationNumber } from "./imagenet-validation.js";
import type { Remapping } from "./label-check.js";
import { knownRemappings } from "./label-check.js";

/**
 * The devkit-id remapping of the label check, learned rather than looked up: the ILSVRC 2012
 * devkit numbers classes 1..1000 by ILSVRC2012_ID (its meta.mat order, not sorted WNIDs), and
 * meta.mat is not shipped here. For images named ILSVRC2012_val_NNNNNNNN the built-in validation
 * labels say which sorted-WNID class each one is, so the given labels of those images show which
 * class each given id stands for. A label file in devkit ids then learns a permutation; a right
 * label file learns the identity and adds nothing.
 */

/** What the given labels of validation-named images stand for, by the built-in labels. */
export interface LearnedIds {
  /** For each given id seen on a validation-named image, the class the built-in labels give it most often. */
  readonly classOf: ReadonlyMap<number, number>;
  /** Validation-named images with both a given and a built-in label: what the mapping was learned from. */
  readonly images: number;
}

/**
 * Learns given id -> class from the keys with a validation name and both labels (`labels` are
 * the given ones, in key order). The class an id
 * stands for is the one the built-in labels give its images most often (ties to the lower
 * class): a devkit label file is one permutation throughout, so any disagreement is a stray
 * line, which one vote should not turn into a mapping.
 */
export function learnIds(keys: readonly string[], labels: readonly (number | null)[], builtIn: ValidationLabels): LearnedIds {
  const votes = new Map<number, Map<number, number>>();
  let images = 0;
  keys.forEach((key, index) => {
    const n = validationNumber(key);
    const given = labels[index] ?? null;
    const truth = n === undefined ? null : builtIn.labelOf(n);
    if (given === null || truth === null) return;
    images++;
    const counts = votes.get(given) ?? new Map<number, number>();
    counts.set(truth, (counts.get(truth) ?? 0) + 1);
    votes.set(given, counts);
  });
  const classOf = new Map<number, number>();
  for (const [given, counts] of votes) {
    let best: [number, number] | undefined;
    for (const [truth, count] of counts) {
      if (best === undefined || count > best[1] || (count === best[1] && truth < best[0])) best = [truth, count];
    }
    classOf.set(given, (best as [number, number])[0]);
  }
  return { classOf, images };
}

/**
 * The devkit-id remapping for a learned mapping, or undefined when it is the identity (the
 * labels agree with the built-in ones: there is nothing to try). A shift by one learns a shift;
 * the check then names the shift, which comes first and ties with this one.
 */
export function devkitRemapping(learned: LearnedIds): Remapping | undefined {
  if ([...learned.classOf].every(([given, truth]) => given === truth)) return undefined;
  return {
    id: "devkit-ids",
    description:
      `labels in the devkit's ids (ILSVRC2012_ID order, as in ILSVRC2012_validation_ground_truth.txt), not sorted-WNID indices ` +
      `(given n is the class the built-in validation labels give the images labelled n; learned from ${learned.images} image(s) named ILSVRC2012_val_*)`,
    map: (label) => learned.classOf.get(label) ?? null,
  };
}

/**
 * The remappings a run's label check tries: the known ones, and the devkit-id one when any key
 * has a validation name and its given labels disagree with the built-in ones. `labels` are the
 * given labels in key order; `synsets` the run's classes, through which the built-in WNIDs are
 * read (so a run over another class list learns in its own indices).
 */
export async function remappingsFor(keys: readonly string[], labels: readonly (number | null)[], synsets: Synsets): Promise<Remapping[]> {
  if (!keys.some((key) => validationNumber(key) !== undefined)) return knownRemappings();
  const learned = learnIds(keys, labels, await readBuiltInValidationLabels(synsets));
  const devkit = devkitRemapping(learned);
  return knownRemappings(devkit === undefined ? [] : [devkit]);
}

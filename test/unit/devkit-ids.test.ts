import { describe, expect, it } from "vitest";
import { devkitRemapping, learnIds } from "../../scoring/devkit-ids.js";
import type { ValidationLabels } from "../../scoring/imagenet-validation.js";
import { diagnoseLabels, knownRemappings } from "../../scoring/label-check.js";

/** Built-in labels written out by hand: val 1 is class 65, val 2 class 970, val 3 class 65, val 4 class 7. */
const BUILT_IN: ValidationLabels = {
  source: "by hand",
  labelOf: (n) => ({ 1: 65, 2: 970, 3: 65, 4: 7 })[n] ?? null,
};

const val = (n: number): string => `ILSVRC2012_val_${String(n).padStart(8, "0")}.JPEG`;

describe("the devkit-id mapping, learned from the built-in validation labels", () => {
  it("maps each given id to the built-in class of its images; other names and unlabelled keys teach nothing", () => {
    // Prepare: ids 490 and 361 (the devkit's ids of val 1 and 2, as its ground-truth file starts) on three images.
    const keys = [val(1), val(2), val(3), "n01440764_tench.JPEG", val(4)];
    const labels = [490, 361, 490, 12, null];
    // Act
    const learned = learnIds(keys, labels, BUILT_IN);
    // Assess: 490 -> 65 (vals 1 and 3), 361 -> 970; the tench and unlabelled val 4 are not counted.
    expect([...learned.classOf].sort(([a], [b]) => a - b)).toEqual([
      [361, 970],
      [490, 65],
    ]);
    expect(learned.images).toBe(3);
  });

  it("takes the class most of an id's images have, so one stray line does not decide", () => {
    // Prepare: id 5 on vals 1, 3 (class 65) and 4 (class 7).
    const learned = learnIds([val(1), val(3), val(4)], [5, 5, 5], BUILT_IN);
    // Assess: two votes for 65, one for 7.
    expect(learned.classOf.get(5)).toBe(65);
  });

  it("adds no remapping when the given labels are the built-in ones", () => {
    const learned = learnIds([val(1), val(2)], [65, 970], BUILT_IN);
    expect(devkitRemapping(learned)).toBeUndefined();
  });
});

describe("the label check with a learned devkit-id remapping", () => {
  // 30 images of 30 classes, 3c for c = 0..29; given ids are a permutation written out here:
  // class 3c has id 999 - 3c. Nothing but the pairs is used, so any permutation is as good.
  const classes = Array.from({ length: 30 }, (_, i) => 3 * i);
  const learned = {
    classOf: new Map(classes.map((c) => [999 - c, c])),
    images: 30,
  };

  it("wins when the model's top-1 are the learned classes (onlyRemapped 30, onlyGiven 0, p = 2^-30)", () => {
    // Prepare: the model is right on every image; the labels are the devkit ids.
    const images = classes.map((c) => ({ label: 999 - c, top1: c }));
    // Act
    const diagnosis = diagnoseLabels(images, knownRemappings([devkitRemapping(learned)!]));
    // Assess
    expect(diagnosis.winner?.id).toBe("devkit-ids");
    expect(diagnosis.winner?.hits).toBe(30);
    expect(diagnosis.winner?.pValue).toBeCloseTo(2 ** -30, 15);
    expect(diagnosis.givenHits).toBe(0);
  });

  it("does not win when the model's top-1 are the given labels themselves", () => {
    const images = classes.map((c) => ({ label: 999 - c, top1: 999 - c }));
    expect(diagnoseLabels(images, knownRemappings([devkitRemapping(learned)!])).winner).toBeNull();
  });

  it("a mapping that is a shift by one ties with minus-one, and the check names the shift", () => {
    // Prepare: labels one too high, so the learned mapping is n -> n - 1 on these ids.
    const shift = { classOf: new Map(classes.map((c) => [c + 1, c])), images: 30 };
    const images = classes.map((c) => ({ label: c + 1, top1: c }));
    // Act
    const diagnosis = diagnoseLabels(images, knownRemappings([devkitRemapping(shift)!]));
    // Assess
    expect(diagnosis.winner?.id).toBe("minus-one");
    expect(diagnosis.best?.id).toBe("minus-one");
  });
});

import { describe, expect, it } from "vitest";
import type { ModelInfo } from "../../model/engine.js";
import { LabelFileError } from "../../model/errors.js";
import { readBuiltInSynsets } from "../../model/synsets.js";
import { parseLabels } from "../../scoring/labels.js";
import {
  loadBuiltInValidationLabels,
  parseRealLabels,
  readBuiltInRealLabels,
  validationLabelOf,
  validationNumber,
} from "../../scoring/imagenet-validation.js";
import type { ResultRecord, ScoredRecord, TopEntry } from "../../scoring/records.js";
import { headerDifferences, type RunHeader } from "../../scoring/run-header.js";
import { calibrationBin, calibrationErrors, realErrors } from "../../scoring/statistics.js";
import { formatTable3, summarize } from "../../scoring/summary.js";

const MODEL: ModelInfo = { file: "models/a.onnx", sha256: "a".repeat(64), flavour: "bvlc" };
const MODEL_B: ModelInfo = { file: "models/b.onnx", sha256: "b".repeat(64), flavour: "bvlc" };

/** A top-5 list from [class, probability] pairs, padded with classes 900.. at probability 0.001. */
function top(...pairs: [number, number][]): TopEntry[] {
  const entries: TopEntry[] = pairs.map(([c, p]) => [c, p, `class ${c}`]);
  for (let i = entries.length; i < 5; i++) entries.push([900 + i, 0.001, `class ${900 + i}`]);
  return entries;
}

// The ReaL lists these keys look up in the shipped real.json (../shared/imagenet/README.md):
// val 1 -> [] (left out), val 2 -> [970, 795], val 4 -> [809]; checked in the last describe.
const RECORDS: ResultRecord[] = [
  {
    key: "shard-0.tar/ILSVRC2012_val_00000002.JPEG",
    label: 970,
    width: 500,
    height: 375,
    // Scheme 1: original top-1 wrong (795), ReaL top-1 right (795 is in [970, 795]).
    top5: { "1": top([795, 0.6], [970, 0.2]), "10": top([970, 0.7], [795, 0.2]) },
    labelProbability: { "1": 0.2, "10": 0.7 },
  },
  {
    key: "ILSVRC2012_val_00000001.jpeg",
    label: 65,
    width: 500,
    height: 375,
    top5: { "1": top([65, 0.9]), "10": top([65, 0.95]) },
    labelProbability: { "1": 0.9, "10": 0.95 },
  },
  {
    key: "val/ILSVRC2012_val_00000004.png",
    label: 809,
    width: 500,
    height: 375,
    // Scheme 1: 809 is nowhere in the top-5 and its probability underflowed to 0: the NLL floor.
    top5: { "1": top([1, 0.5], [2, 0.3]), "10": top([809, 0.3], [1, 0.2]) },
    labelProbability: { "1": 0, "10": 0.3 },
  },
  {
    key: "photo.jpg",
    label: 7,
    width: 500,
    height: 375,
    top5: { "1": top([7, 0.55]), "10": top([7, 0.45]) },
    labelProbability: { "1": 0.55, "10": 0.45 },
  },
  { key: "ILSVRC2012_val_00000005.JPEG", error: "not an image" },
];

const REAL = { source: "test", lookup: (key: string) => ({ 1: [], 2: [970, 795], 4: [809] })[validationNumber(key) ?? 0] as number[] | undefined };

/*
 * Expected figures computed outside the code, with python3 (command and output):
 *   python3 /tmp/beyond_expect.py, which is:
 *     wilson(e, n, z=1.96): p=e/n; d=1+z*z/n; c=(p+z*z/(2*n))/d; h=z*sqrt(p*(1-p)/n+z*z/(4*n*n))/d; [c-h, c+h] (0 / 1 at the ends)
 *     ece(rows): bins (k/15, (k+1)/15] found with fractions.Fraction, sum of len(b)/N * |acc_b - conf_b|
 *     nll(ps): mean of -log(max(p, 1e-12))
 *   real 1/2 [0.09452865480086614, 0.9054713451991339]  0/2 [0, 0.6576280471103807]
 *   scheme1  nll 7.485914136194024  ece 0.18749999999999997   (confidences 0.6 wrong, 0.9 right, 0.5 wrong, 0.55 right)
 *   scheme10 nll 0.6026121847174977 ece 0.4                   (0.7, 0.95, 0.3, 0.45, all right)
 * By hand: ReaL scheme 1 judges val 2 (right at top-1 and top-5) and val 4 (wrong at both), val 1 left out:
 * 1/2 and 1/2; scheme 10: val 2 and val 4 right: 0/2. ECE scheme 1: 0.6 and 0.55 share bin (8/15, 9/15]
 * (accuracy 1/2, confidence 0.575, gap 0.075, weight 2/4), 0.9 alone (gap 0.1), 0.5 alone (gap 0.5):
 * (0.15 + 0.1 + 0.5) / 4 = 0.1875.
 */
describe("ReaL errors", () => {
  it("judges a prediction right when it is in the list, leaves empty lists out of both counts", () => {
    // Act
    const real = realErrors(RECORDS, REAL);

    // Assess
    expect(real["1"]?.top1Error).toBe(0.5);
    expect(real["1"]?.top5Error).toBe(0.5);
    expect(real["1"]?.leftOut).toBe(1);
    expect(real["1"]?.top1Interval[0]).toBeCloseTo(0.09452865480086614, 12);
    expect(real["1"]?.top1Interval[1]).toBeCloseTo(0.9054713451991339, 12);
    expect(real["10"]).toMatchObject({ top1Error: 0, top5Error: 0, leftOut: 1 });
    expect(real["10"]?.top5Interval[0]).toBe(0);
    expect(real["10"]?.top5Interval[1]).toBeCloseTo(0.6576280471103807, 12);
  });
});

describe("calibration", () => {
  it("computes NLL with the 1e-12 floor and 15-bin top-label ECE per scheme", () => {
    // Act
    const { schemes, missing } = calibrationErrors(RECORDS);

    // Assess
    expect(missing).toBeUndefined();
    expect(schemes["1"]?.nll).toBeCloseTo(7.485914136194024, 12);
    expect(schemes["1"]?.ece).toBeCloseTo(0.1875, 12);
    expect(schemes["10"]?.nll).toBeCloseTo(0.6026121847174977, 12);
    expect(schemes["10"]?.ece).toBeCloseTo(0.4, 12);
    expect(schemes["1"]?.bins[8]).toMatchObject({ images: 2, accuracy: 0.5 });
  });

  it("puts a confidence on a bin edge k/15 in the bin below it, (lower, upper]", () => {
    for (let k = 1; k <= 15; k++) expect(calibrationBin(k / 15)).toBe(k - 1);
    for (let k = 1; k < 15; k++) expect(calibrationBin(k / 15 + 1e-9)).toBe(k);
    expect(calibrationBin(0.001)).toBe(0);
  });

  it("reports nothing, and says why, when one labelled record lacks labelProbability (written before it)", () => {
    // Prepare: an old record beside new ones, as a resume or an aggregate of mixed batches gives.
    const { labelProbability: _, ...old } = RECORDS[3] as ScoredRecord;
    const mixed = [...RECORDS.slice(0, 3), old];

    // Act
    const summary = summarize(mixed, [MODEL], 10, { real: REAL });

    // Assess
    expect(summary.schemes["1"]?.calibration).toBeUndefined();
    expect(summary.schemes["10"]?.calibration).toBeUndefined();
    expect(summary.calibrationMissing).toMatch(/^1 of 4 labelled records carry no labelProbability/);
    expect(formatTable3(summary)).toMatch(/calibration: 1 of 4 labelled records/);
    // ReaL needs only the top-5, so it is still there.
    expect(summary.schemes["1"]?.real?.top1Error).toBe(0.5);
  });
});

describe("summarize with ReaL and calibration", () => {
  it("puts real and calibration beside each scheme's errors, and the table prints them after the original columns", () => {
    // Act
    const summary = summarize(RECORDS, [MODEL], 10, { real: REAL, builtInLabels: { file: "labels.txt", images: 3 } });
    const lines = formatTable3(summary).split("\n");

    // Assess
    expect(Object.keys(summary.schemes["1"]?.real ?? {}).sort()).toEqual(
      ["leftOut", "top1Error", "top1Interval", "top5Error", "top5Interval"],
    );
    expect(summary.schemes["1"]?.calibration?.nll).toBeCloseTo(7.485914136194024, 12);
    expect(summary.models[0]?.schemes["10"]?.calibration?.ece).toBeCloseTo(0.4, 12);
    expect(summary.realLabels).toEqual({ source: "test", images: 3 });
    expect(summary.builtInLabels).toEqual({ file: "labels.txt", images: 3 });
    expect(lines[1]).toMatch(/top-5 error\s+ReaL top-1\s+ReaL top-5\s+NLL\s+ECE$/);
    // Original scheme 1: top-1 wrong for val 2 and val 4 of 4 labelled -> 50.00%; top-5: val 4 -> 25.00%.
    expect(lines[2]?.split(/\s+/)).toEqual(["1", "1", "a.onnx", "50.00%", "25.00%", "50.00%", "50.00%", "7.4859", "18.75%"]);
    expect(lines.join("\n")).toMatch(/labels: built-in .* for 3 images/);
  });

  it("gives each model of an ensemble its own ReaL errors and calibration from its own top-5 and probability", () => {
    // Prepare: model 2 puts 1 first at 0.8 and gives the label 0.1 (by hand: -ln 0.1 = 2.302585092994046).
    const record: ScoredRecord = {
      ...(RECORDS[0] as ScoredRecord),
      top5: { "1": top([970, 0.5]) },
      labelProbability: { "1": 0.5 },
      models: [
        { top5: { "1": top([970, 0.9]) }, labelProbability: { "1": 0.9 } },
        { top5: { "1": top([1, 0.8], [970, 0.1]) }, labelProbability: { "1": 0.1 } },
      ],
    };

    // Act
    const summary = summarize([record], [MODEL, MODEL_B], 1, { real: REAL });

    // Assess
    expect(summary.models[1]?.schemes["1"]?.real).toMatchObject({ top1Error: 1, top5Error: 0, leftOut: 0 });
    expect(summary.models[1]?.schemes["1"]?.calibration?.nll).toBeCloseTo(2.302585092994046, 12);
    // One image, wrong at 0.8: |0 - 0.8|.
    expect(summary.models[1]?.schemes["1"]?.calibration?.ece).toBeCloseTo(0.8, 12);
    expect(summary.schemes["1"]?.real?.top1Error).toBe(0);
  });
});

describe("ImageNet validation names and the shipped data", () => {
  it.each([
    ["ILSVRC2012_val_00000001.JPEG", 1],
    ["ILSVRC2012_img_val.tar/ILSVRC2012_val_00050000.jpeg", 50000],
    ["a/b/ILSVRC2012_val_00000123.PnG", 123],
    ["x\\ILSVRC2012_val_00000007.webp", 7],
    ["ILSVRC2012_val_00000001.JPEG.txt", undefined],
    ["ILSVRC2012_val_0000001.JPEG", undefined],
    ["my_ILSVRC2012_val_00000001.JPEG", undefined],
    ["ILSVRC2012_val_00000001", undefined],
    ["ILSVRC2012_val_00000000.JPEG", undefined],
  ])("%s -> %s", (key, n) => {
    expect(validationNumber(key)).toBe(n);
  });

  it("labels val 1 and 2 as the README says (65, 970), through synset_words order", async () => {
    const { labels } = await loadBuiltInValidationLabels(await readBuiltInSynsets());
    expect(validationLabelOf(labels, "ILSVRC2012_val_00000001.JPEG")).toBe(65);
    expect(validationLabelOf(labels, "t.tar/ILSVRC2012_val_00000002.JPEG")).toBe(970);
    expect(validationLabelOf(labels, "ILSVRC2012_val_00050001.JPEG")).toBeNull();
    expect(validationLabelOf(labels, "photo.jpg")).toBeNull();
  });

  it("reads the shipped real.json: val 1 [] and val 2 [970, 795], as the README says", async () => {
    const real = await readBuiltInRealLabels();
    expect(real.lookup("ILSVRC2012_val_00000001.JPEG")).toEqual([]);
    expect(real.lookup("ILSVRC2012_val_00000002.JPEG")).toEqual([970, 795]);
    expect(real.lookup("ILSVRC2012_val_00000004.JPEG")).toEqual([809]);
    expect(real.lookup("photo.jpg")).toBeUndefined();
  });

  it("refuses a real.json that is not a list of lists of class indices, naming the element", () => {
    expect(() => parseRealLabels("[[1], [2, 1000]]", "bad.json")).toThrow(/bad\.json: element 1 \(ILSVRC2012_val_00000002\)/);
    expect(() => parseRealLabels("{}", "bad.json")).toThrow(LabelFileError);
  });

  it("points the devkit ground-truth refusal at the built-in labels", () => {
    expect(() => parseLabels("490\n361\n171\n", { source: "ILSVRC2012_validation_ground_truth.txt" })).toThrow(
      /Leave --labels out instead: images named ILSVRC2012_val_NNNNNNNN\.\* get the built-in ILSVRC 2012 validation labels/,
    );
  });

  it("refuses to resume a run with built-in labels into one without them", () => {
    const base: RunHeader = {
      version: 1,
      models: [{ file: "a.onnx", sha256: "a".repeat(64) }],
      crops: 1,
      exifOrientation: false,
      maxPixels: 1,
      preprocess: null,
      labels: null,
      synsetsSha256: "c".repeat(64),
    };
    const withBuiltIn: RunHeader = { ...base, builtInLabels: { file: "x.txt", sha256: "d".repeat(64), images: 5 } };
    expect(headerDifferences(base, withBuiltIn).map((d) => d.field)).toEqual(["builtInLabels.sha256"]);
    expect(headerDifferences(withBuiltIn, { ...withBuiltIn, builtInLabels: { file: "y", sha256: "d".repeat(64), images: 9 } })).toEqual([]);
  });
});

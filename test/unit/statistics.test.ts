import { describe, expect, it } from "vitest";
import { schemeCropIndices } from "../../model/image/crops.js";
import { StorageError } from "../../storage/errors.js";
import type { Interval, ResultRecord, ScoredRecord, Summary, TopEntry } from "../../scoring/records.js";
import {
  ONE_CROP_POSITION,
  POSITIONS,
  addIntervals,
  classErrors,
  decodePositions,
  encodePositions,
  mcnemarExact,
  modelComparisons,
  positionErrors,
  schemeComparisons,
  schemeErrors,
  wilsonInterval,
} from "../../scoring/statistics.js";
import { simulateRun } from "../helpers/simulated-run.js";

/** A top-5 list whose first entry is `first`, then four other classes. */
function top(first: number, ...rest: number[]): TopEntry[] {
  const others = [...rest, 990, 991, 992, 993, 994].slice(0, 4);
  return [first, ...others].map((c, i) => [c, 0.5 - i * 0.1, `class ${c}`]);
}

function scored(key: string, label: number | null, top5: ScoredRecord["top5"], extra: Partial<ScoredRecord> = {}): ScoredRecord {
  return { key, label, width: 500, height: 375, top5, ...extra };
}

describe("wilsonInterval", () => {
  // Reference values: R's prop.test(x, n, correct = FALSE)$conf.int and the closed form.
  it.each([
    { errors: 10, n: 100, lo: 0.0552, hi: 0.1744 },
    { errors: 0, n: 10, lo: 0, hi: 0.2775 },
    { errors: 10, n: 10, lo: 0.7225, hi: 1 },
    { errors: 1, n: 2, lo: 0.0945, hi: 0.9055 },
    { errors: 789, n: 10000, lo: 0.0738, hi: 0.0843 },
  ])("$errors of $n -> [$lo, $hi]", ({ errors, n, lo, hi }) => {
    // Act
    const [low, high] = wilsonInterval(errors, n);
    // Assess
    expect(low).toBeCloseTo(lo, 4);
    expect(high).toBeCloseTo(hi, 4);
  });

  it("widens with z and narrows with n", () => {
    // Act
    const z95 = wilsonInterval(30, 100);
    const z99 = wilsonInterval(30, 100, 2.576);
    const bigger = wilsonInterval(300, 1000);
    // Assess
    expect(z99[0]).toBeLessThan(z95[0]);
    expect(z99[1]).toBeGreaterThan(z95[1]);
    expect(bigger[1] - bigger[0]).toBeLessThan(z95[1] - z95[0]);
  });

  it("is [0, 1] with no images and refuses impossible counts", () => {
    expect(wilsonInterval(0, 0)).toEqual([0, 1]);
    expect(() => wilsonInterval(11, 10)).toThrow(/0 <= errors <= n/);
    expect(() => wilsonInterval(1.5, 10)).toThrow(RangeError);
  });
});

describe("mcnemarExact", () => {
  // Reference: 2 * sum(C(n, i), i <= min) / 2^n in exact integer arithmetic (Python math.comb,
  // Fraction), the same as R's binom.test(min, n, 0.5)$p.value.
  it.each([
    { aOnly: 1, bOnly: 9, p: 0.021484375 },
    { aOnly: 3, bOnly: 12, p: 0.03515625 },
    { aOnly: 0, bOnly: 5, p: 0.0625 },
    { aOnly: 31, bOnly: 9, p: 0.000679548255 },
    { aOnly: 5, bOnly: 6, p: 1 },
    { aOnly: 0, bOnly: 0, p: 1 },
  ])("aOnly=$aOnly, bOnly=$bOnly -> p=$p", ({ aOnly, bOnly, p }) => {
    // Act
    const got = mcnemarExact(aOnly, bOnly);
    // Assess
    expect(got).toBeCloseTo(p, 6);
  });

  it("is symmetric in its two counts", () => {
    for (const [a, b] of [[1, 9], [17, 40], [250, 301], [0, 3]] as const) {
      expect(mcnemarExact(a, b)).toBe(mcnemarExact(b, a));
    }
  });

  it("stays finite and right for discordant counts where binomial coefficients overflow", () => {
    // Prepare: a 50,000-image comparison can leave tens of thousands of discordant images.
    const aOnly = 20_000;
    const bOnly = 20_400;
    // Exact integer arithmetic (Python math.comb over 2^40400) gives 0.04713209701042844.
    const exact = 0.04713209701042844;
    // Act
    const p = mcnemarExact(aOnly, bOnly);
    const tiny = mcnemarExact(0, 1000);
    // Assess
    expect(Number.isFinite(p)).toBe(true);
    expect(Math.abs(p / exact - 1)).toBeLessThan(1e-9);
    // 2 * 2^-1000 exactly, far below where a naive product of powers would round to 0 or NaN.
    expect(Math.log2(tiny)).toBeCloseTo(-999, 9);
    expect(mcnemarExact(30_000, 30_000)).toBe(1);
  });
});

describe("positions", () => {
  it("lists the 144 in protocol order with the 1-crop position where model/image/crops.ts puts scheme 1", () => {
    // Assess
    expect(POSITIONS).toHaveLength(144);
    expect(POSITIONS[0]).toEqual({ scale: 256, square: "left", crop: "tl", mirror: false });
    expect(POSITIONS[1]).toEqual({ scale: 256, square: "left", crop: "tl", mirror: true });
    expect(POSITIONS[143]).toEqual({ scale: 352, square: "right", crop: "full", mirror: true });
    expect(schemeCropIndices("1")).toEqual([ONE_CROP_POSITION]);
    expect(POSITIONS[ONE_CROP_POSITION]).toEqual({ scale: 256, square: "center", crop: "center", mirror: false });
  });

  it("encodes two bits per position and decodes them back", () => {
    // Prepare
    const top1 = POSITIONS.map((_, i) => i % 3 === 0);
    const top5 = POSITIONS.map((_, i) => i % 3 === 0 || i % 2 === 0);
    // Act
    const text = encodePositions(top1, top5);
    const back = decodePositions(text, "a.jpg");
    // Assess
    expect(text).toHaveLength(144);
    expect(text.slice(0, 7)).toBe("3023203");
    expect(back).toEqual({ top1, top5 });
  });

  it.each([
    { name: "too short", text: "3".repeat(143) },
    { name: "a bad character", text: `${"3".repeat(143)}4` },
    // Top-1 right and top-5 wrong cannot happen: the first of five is among the five.
    { name: "a 1", text: `1${"3".repeat(143)}` },
  ])("names the record's key when its positions are $name", ({ text }) => {
    expect(() => decodePositions(text, "val/odd.JPEG")).toThrow(StorageError);
    expect(() => decodePositions(text, "val/odd.JPEG")).toThrow(
      /record "val\/odd.JPEG": positions must be 144 characters, each one of 0, 2, 3/,
    );
  });

  it("refuses to encode a position right at top-1 and wrong at top-5", () => {
    const top1 = POSITIONS.map((_, i) => i === 5);
    const top5 = POSITIONS.map(() => false);
    expect(() => encodePositions(top1, top5)).toThrow(/position 5 is right at top-1 but wrong at top-5/);
  });

  it("position (256, center, center, unmirrored) has exactly scheme 1's errors on records scored consistently", async () => {
    // Prepare: records scored from simulated softmax outputs the way the scorer averages them.
    const run = await simulateRun({ images: 80, unlabelled: 3, failedKeys: ["broken.jpg"], models: 2, crops: 144, seed: 7 });
    // Act
    const positions = positionErrors(run.records);
    const schemes = schemeErrors(run.records);
    // Assess
    expect(positions).toHaveLength(144);
    const one = positions![ONE_CROP_POSITION]!;
    expect(one.top1Error).toBe(schemes["1"]!.top1Error);
    expect(one.top5Error).toBe(schemes["1"]!.top5Error);
    expect(one.top5Interval).toEqual(schemes["1"]!.top5Interval);
    // Not a degenerate run: positions differ, so the equality above says something.
    expect(new Set(positions!.map((p) => p.top5Error)).size).toBeGreaterThan(5);
    expect(schemes["1"]!.top5Error).toBeGreaterThan(0);
  });

  it("is absent without positions (1- and 10-crop runs)", async () => {
    const run = await simulateRun({ images: 10, models: 1, crops: 10 });
    expect(positionErrors(run.records)).toBeUndefined();
  });
});

describe("comparisons", () => {
  // Prepare: four labelled images with known verdicts under each scheme, one unlabelled, one failed.
  const records: ResultRecord[] = [
    // 144 right, 1 wrong at top-1 and top-5: fixed by 144.
    scored("a", 7, { "1": top(1), "10": top(7), "144": top(7) }),
    // 144 right at top-1, 1 right only at top-5: fixed by 144 at top-1 only.
    scored("b", 7, { "1": top(2, 7), "10": top(2, 7), "144": top(7) }),
    // 144 wrong, 1 right: broken by 144 at both.
    scored("c", 5, { "1": top(5), "10": top(5), "144": top(3) }),
    // Both right: concordant.
    scored("d", 4, { "1": top(4), "10": top(4), "144": top(4) }),
    scored("e", null, { "1": top(1), "10": top(1), "144": top(9) }),
    { key: "f", error: "cannot decode" },
  ];

  it("counts, per scheme pair and metric, the images only one side got right", () => {
    // Act
    const comparisons = schemeComparisons(records, ["1", "10", "144"]);
    // Assess
    const find = (a: string, b: string, metric: string) => comparisons.find((c) => c.a === a && c.b === b && c.metric === metric);
    expect(comparisons.map((c) => `${c.a}v${c.b}:${c.metric}`)).toEqual([
      "144v1:top1", "144v1:top5", "144v10:top1", "144v10:top5", "10v1:top1", "10v1:top5",
    ]);
    expect(find("144", "1", "top1")).toMatchObject({ aOnly: 2, bOnly: 1, images: 4, pValue: 1 });
    expect(find("144", "1", "top5")).toMatchObject({ aOnly: 1, bOnly: 1, images: 4 });
    expect(find("10", "1", "top1")).toMatchObject({ aOnly: 1, bOnly: 0 });
    expect(find("144", "10", "top5")).toMatchObject({ aOnly: 0, bOnly: 1, pValue: 1 });
  });

  it("compares only the schemes the run computed", () => {
    expect(schemeComparisons(records, ["1", "10"]).map((c) => `${c.a}v${c.b}`)).toEqual(["10v1", "10v1"]);
  });

  it("compares the ensemble with each model and the models with each other", () => {
    // Prepare
    const withModels: ResultRecord[] = [
      scored("a", 7, { "1": top(7) }, { models: [{ top5: { "1": top(7) } }, { top5: { "1": top(3) } }] }),
      scored("b", 7, { "1": top(7) }, { models: [{ top5: { "1": top(1) } }, { top5: { "1": top(7) } }] }),
      scored("c", 2, { "1": top(3) }, { models: [{ top5: { "1": top(2) } }, { top5: { "1": top(4) } }] }),
    ];
    // Act
    const comparisons = modelComparisons(withModels, ["m0.onnx", "m1.onnx"], ["1"]);
    // Assess
    const top1 = comparisons.filter((c) => c.metric === "top1");
    expect(top1.map((c) => [c.a, c.b, c.scheme, c.aOnly, c.bOnly])).toEqual([
      ["ensemble", "m0.onnx", "1", 1, 1],
      ["ensemble", "m1.onnx", "1", 1, 0],
      ["m0.onnx", "m1.onnx", "1", 2, 1],
    ]);
    expect(modelComparisons(withModels, ["m0.onnx"], ["1"])).toEqual([]);
    expect(() => modelComparisons(withModels, ["m0.onnx", "m1.onnx", "m2.onnx"], ["1"])).toThrow(
      /record "a": 2 per-model top-5 lists for 3 models/,
    );
  });
});

describe("per class and intervals", () => {
  it("counts per-class errors and the most frequent top-1 confusions", () => {
    // Prepare
    const records: ResultRecord[] = [
      scored("a", 7, { "1": top(7), "10": top(3, 7) }),
      scored("b", 7, { "1": top(7), "10": top(3) }),
      scored("c", 7, { "1": top(7), "10": top(2, 7) }),
      scored("d", 7, { "1": top(7), "10": top(7) }),
      scored("e", 2, { "1": top(7), "10": top(2) }),
    ];
    // Act
    const classes = classErrors(records, { classNames: Object.assign([], { 2: "two", 3: "three", 7: "seven" }) });
    // Assess: judged under the largest scheme present, "10".
    expect(classes).toEqual([
      { class: 2, name: "two", images: 1, top1Error: 0, top5Error: 0, confusions: [] },
      {
        class: 7,
        name: "seven",
        images: 4,
        top1Error: 0.75,
        top5Error: 0.25,
        confusions: [
          { class: 3, name: "three", count: 2 },
          { class: 2, name: "two", count: 1 },
        ],
      },
    ]);
  });

  it("adds the intervals an older summary lacks from the records' error counts, keeping those it has", () => {
    // Prepare: under scheme 1, 3 of 4 labelled images wrong at top-1 and 1 of 4 at top-5.
    const records: ResultRecord[] = [
      scored("a", 7, { "1": top(7) }),
      scored("b", 7, { "1": top(3, 7) }),
      scored("c", 7, { "1": top(3, 2) }),
      scored("d", 5, { "1": top(3, 5) }),
      scored("e", null, { "1": top(1) }),
      { key: "f", error: "cannot decode" },
    ];
    const kept: Interval = [0.1, 0.2];
    const bare: Summary = {
      images: 6,
      scored: 5,
      failed: 1,
      labelled: 4,
      schemes: { "1": { top1Error: 0.75, top5Error: 0.25, top5Interval: kept }, "10": { top1Error: 0, top5Error: 0 } },
      models: [{ file: "m.onnx", sha256: "0".repeat(64), schemes: { "1": { top1Error: 0.75, top5Error: 0.25 } } }],
      failedKeys: ["f"],
    };
    // Act
    const filled = addIntervals(bare, records);
    // Assess: Wilson 95% (z = 1.96) bounds worked by hand from the closed form
    // (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) in 40-digit decimal arithmetic;
    // scipy.stats.binomtest(k, n).proportion_ci(method="wilson"), with z = 1.95996, agrees to 1e-5.
    const threeOfFour = [0.300636052442637, 0.954413937355364];
    const oneOfFour = [0.045586062644636, 0.699363947557363];
    const close = (got: Interval | undefined, want: readonly number[]) => {
      expect(got).toHaveLength(2);
      got!.forEach((bound, i) => expect(bound).toBeCloseTo(want[i]!, 12));
    };
    close(filled.schemes["1"]!.top1Interval, threeOfFour);
    expect(filled.schemes["1"]!.top5Interval).toBe(kept);
    close(filled.models[0]!.schemes["1"]!.top1Interval, threeOfFour);
    close(filled.models[0]!.schemes["1"]!.top5Interval, oneOfFour);
    // No record holds scheme 10, so nothing is known about its rates.
    expect(filled.schemes["10"]).toEqual({ top1Error: 0, top5Error: 0, top1Interval: [0, 1], top5Interval: [0, 1] });
    expect(addIntervals(filled, records)).toBe(filled);
  });
});

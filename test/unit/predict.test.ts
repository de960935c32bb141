import { describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import {
  ensembleMean,
  meanOfRows,
  rowsAreDistributions,
  schemeMeans,
  schemesForCount,
  softmaxRows,
  topK,
  cropVerdicts,
  predictImage,
  topKEntries,
} from "../../model/predict.js";
import type { CropCount } from "../../model/predict.js";

describe("schemesForCount", () => {
  it.each([
    [1, ["1"]],
    [10, ["1", "10"]],
    [144, ["1", "10", "144"]],
  ] as const)("%i crops yield schemes %j", (count, expected) => {
    // Act / Assess
    expect(schemesForCount(count)).toEqual(expected);
  });

  it("refuses another count, listing the valid ones", () => {
    expect(() => schemesForCount(5 as CropCount)).toThrow(ConfigurationError);
    expect(() => schemesForCount(5 as CropCount)).toThrow(/use one of: 1, 10, 144/);
  });
});

describe("softmaxRows", () => {
  it("turns each row of logits into probabilities, stable for large values", () => {
    // Prepare: row 0 small logits, row 1 huge ones that overflow a naive exp.
    const logits = [0, Math.log(3), 1000, 1000 + Math.log(3)];

    // Act
    const probabilities = softmaxRows(logits, 2, 2);

    // Assess
    expect(Array.from(probabilities)).toEqual([
      expect.closeTo(0.25, 6),
      expect.closeTo(0.75, 6),
      expect.closeTo(0.25, 6),
      expect.closeTo(0.75, 6),
    ]);
    expect(logits[2]).toBe(1000); // input untouched
  });
});

describe("rowsAreDistributions", () => {
  it.each([
    ["probabilities", [0.2, 0.8, 0.5, 0.5], true],
    ["a row not summing to 1", [0.2, 0.8, 0.5, 0.6], false],
    ["a negative value", [1.2, -0.2, 0.5, 0.5], false],
    ["logits", [2.5, -1, 0.3, 7], false],
    ["NaN", [Number.NaN, 1, 0.5, 0.5], false],
  ] as const)("%s -> %s", (_name, values, expected) => {
    expect(rowsAreDistributions(values, 2, 2)).toBe(expected);
  });
});

describe("meanOfRows", () => {
  it("averages the chosen rows in float64", () => {
    // Prepare: 3 rows x 2 classes
    const values = [0.1, 0.9, 0.3, 0.7, 0.8, 0.2];

    // Act
    const mean = meanOfRows(values, 2, [0, 2]);

    // Assess
    expect(mean).toBeInstanceOf(Float64Array);
    expect(mean[0]).toBeCloseTo(0.45, 15);
    expect(mean[1]).toBeCloseTo(0.55, 15);
  });

  it("keeps low bits a float32 sum would lose", () => {
    // Prepare: one big and many tiny values; float32 accumulation drops the tiny ones.
    const rows = 145;
    const values = new Float32Array(rows);
    values[0] = 1;
    for (let i = 1; i < rows; i++) values[i] = 2 ** -25;
    const exact = (1 + 144 * 2 ** -25) / rows;

    // Act
    const mean = meanOfRows(values, 1, Array.from({ length: rows }, (_, i) => i));

    // Assess
    expect(mean[0]).toBe(exact);
  });

  it("refuses rows outside the array and an empty choice", () => {
    expect(() => meanOfRows([1, 2], 2, [1])).toThrow(RangeError);
    expect(() => meanOfRows([1, 2], 2, [])).toThrow(RangeError);
  });
});

describe("schemeMeans", () => {
  // 4 computed crops (crop-plan indices 3, 5, 7, 9), 2 classes; row r is [r, 10 + r].
  const computed = [3, 5, 7, 9];
  const values = [0, 10, 1, 11, 2, 12, 3, 13];

  it("averages each scheme over its own crops from one pass", () => {
    // Act
    const means = schemeMeans(values, 2, computed, { "1": [7], "10": [3, 7, 9] });

    // Assess
    expect(Array.from(means["1"] ?? [])).toEqual([2, 12]);
    expect(Array.from(means["10"] ?? [])).toEqual([(0 + 2 + 3) / 3, (10 + 12 + 13) / 3]);
    expect(means["144"]).toBeUndefined();
  });

  it("counts a row shared by coinciding windows once per crop", () => {
    // Prepare: crops 3 and 5 share row 0, crops 7 and 9 share row 1.
    const shared = [0, 10, 4, 14];

    // Act
    const means = schemeMeans(shared, 2, computed, { "10": [3, 5, 7] }, [0, 0, 1, 1]);

    // Assess
    expect(Array.from(means["10"] ?? [])).toEqual([(0 + 0 + 4) / 3, (10 + 10 + 14) / 3]);
  });

  it("refuses a scheme needing a crop the run did not compute", () => {
    expect(() => schemeMeans(values, 2, computed, { "1": [4] })).toThrow(/crop 4/);
  });
});

describe("ensembleMean", () => {
  it("averages the models' predictions", () => {
    expect(Array.from(ensembleMean([[0.2, 0.8], Float64Array.from([0.6, 0.4])]))).toEqual([
      expect.closeTo(0.4, 15),
      expect.closeTo(0.6, 15),
    ]);
  });

  it("is the model itself for one model", () => {
    expect(Array.from(ensembleMean([[0.3, 0.7]]))).toEqual([0.3, 0.7]);
  });

  it("refuses no models and mismatched lengths", () => {
    expect(() => ensembleMean([])).toThrow(RangeError);
    expect(() => ensembleMean([[1], [0.5, 0.5]])).toThrow(RangeError);
  });
});

describe("topK", () => {
  it("ranks highest first", () => {
    expect(topK([0.1, 0.5, 0.05, 0.3, 0.05], 3)).toEqual([
      { index: 1, probability: 0.5 },
      { index: 3, probability: 0.3 },
      { index: 0, probability: 0.1 },
    ]);
  });

  it.each([
    ["all equal", [0.2, 0.2, 0.2, 0.2, 0.2, 0.2], [0, 1, 2, 3, 4]],
    ["ties at the cut", [0.1, 0.3, 0.1, 0.3, 0.1, 0.1, 0.0], [1, 3, 0, 2, 4]],
    ["tie ahead of a later larger value", [0.4, 0.1, 0.4, 0.0, 0.0, 0.5], [5, 0, 2, 1, 3]],
  ])("breaks ties to the lower class index: %s", (_name, values, expected) => {
    expect(topK(values, 5).map((entry) => entry.index)).toEqual(expected);
  });

  it("returns fewer than k when there are fewer classes", () => {
    expect(topK([0.5, 0.5], 5).map((entry) => entry.index)).toEqual([0, 1]);
  });
});

describe("topKEntries", () => {
  it("gives [class, probability, name] with the first synset name", () => {
    expect(topKEntries([0.1, 0.6, 0.3], ["tench", "goldfish", "great white shark"], 2)).toEqual([
      [1, 0.6, "goldfish"],
      [2, 0.3, "great white shark"],
    ]);
  });
});

describe("predictImage and cropVerdicts", () => {
  // Two models, three classes, two windows; scheme "1" uses crop 0 and a made-up scheme uses both.
  const modelA = Float32Array.from([0.5, 0.3, 0.2, 0.1, 0.1, 0.8]);
  const modelB = Float32Array.from([0.2, 0.7, 0.1, 0.3, 0.3, 0.4]);

  it("averages each model over a scheme's crops, then over the models (float64)", () => {
    // Act
    const { ensemble, perModel } = predictImage([modelA, modelB], 3, [0, 1], { "1": [0], "10": [0, 1] }, [0, 1]);

    // Assess: by hand, (0.5+0.1)/2 = 0.3 etc., then the mean of the two models.
    expect(Array.from(perModel[0]?.["10"] ?? []).map((v) => v.toFixed(6))).toEqual(["0.300000", "0.200000", "0.500000"]);
    expect(Array.from(ensemble["1"] ?? []).map((v) => v.toFixed(6))).toEqual(["0.350000", "0.500000", "0.150000"]);
    expect(Array.from(ensemble["10"] ?? []).map((v) => v.toFixed(6))).toEqual(["0.275000", "0.350000", "0.375000"]);
    expect(ensemble["144"]).toBeUndefined();
  });

  it("judges each crop alone on the models' mean there", () => {
    // Act: label 1. Crop 0 mean [0.35, 0.5, 0.15] ranks it first; crop 1 mean [0.2, 0.2, 0.6]:
    // class 0 ties it with the lower index, class 2 beats it, so it is third.
    const verdicts = cropVerdicts([modelA, modelB], 3, [0, 1], 1);

    // Assess
    expect(verdicts).toEqual({ top1: [true, false], top5: [true, true] });
  });
});

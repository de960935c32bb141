import { describe, expect, it } from "vitest";
import type { ModelInfo } from "../../model/engine.js";
import type { FailedRecord, ResultRecord, SchemeTop5, ScoredRecord, TopEntry } from "../../scoring/records.js";
import { formatTable3, summarize } from "../../scoring/summary.js";

/** A top-5 list whose classes are `classes`, probabilities decreasing. */
function top(...classes: number[]): TopEntry[] {
  return classes.map((c, i) => [c, 0.5 - i * 0.1, `class ${c}`]);
}

function scored(key: string, label: number | null, top5: SchemeTop5, models?: SchemeTop5[]): ScoredRecord {
  return { key, label, width: 500, height: 375, top5, ...(models ? { models: models.map((m) => ({ top5: m })) } : {}) };
}

function failed(key: string): FailedRecord {
  return { key, error: `${key}: not an image` };
}

const MODEL_A: ModelInfo = { file: "models/a.onnx", sha256: "a".repeat(64), flavour: "bvlc" };
const MODEL_B: ModelInfo = { file: "models/b.onnx", sha256: "b".repeat(64), flavour: "torchvision" };

describe("summarize, one model", () => {
  // Labels: 7, 8, 9, null. Scheme 1: top-1 right for img1 only; top-5 right for img1, img2.
  // Scheme 10: top-1 right for img1 and img2; top-5 right for all three.
  const records: ResultRecord[] = [
    scored("img1.jpg", 7, { "1": top(7, 1, 2, 3, 4), "10": top(7, 1, 2, 3, 4) }),
    failed("bad.jpg"),
    scored("img2.jpg", 8, { "1": top(1, 2, 3, 4, 8), "10": top(8, 1, 2, 3, 4) }),
    scored("img3.jpg", 9, { "1": top(1, 2, 3, 4, 5), "10": top(1, 2, 9, 3, 4) }),
    scored("unlabelled.jpg", null, { "1": top(1, 2, 3, 4, 5), "10": top(1, 2, 3, 4, 5) }),
    failed("empty.jpg"),
  ];

  it("counts images and computes error rates over labelled scored images, unrounded", () => {
    // Act
    const summary = summarize(records, [MODEL_A], 10);

    // Assess
    expect(summary).toMatchObject({
      images: 6,
      scored: 4,
      failed: 2,
      labelled: 3,
      schemes: {
        "1": { top1Error: 2 / 3, top5Error: 1 / 3 },
        "10": { top1Error: 1 / 3, top5Error: 0 },
      },
      models: [
        {
          file: "models/a.onnx",
          sha256: MODEL_A.sha256,
          flavour: "bvlc",
          schemes: { "1": { top1Error: 2 / 3, top5Error: 1 / 3 }, "10": { top1Error: 1 / 3, top5Error: 0 } },
        },
      ],
      failedKeys: ["bad.jpg", "empty.jpg"],
    });
    // Wilson 95% (z = 1.96) for 2 of 3 and 0 of 3, worked by hand from the closed form in 40-digit
    // decimal arithmetic (0 of 3: [0, z²/(3 + z²)] = [0, 3.8416/6.8416]); scipy.stats.binomtest(k, n)
    // .proportion_ci(method="wilson"), with z = 1.95996, agrees to 1e-5.
    const [low, high] = summary.schemes["1"]?.top1Interval ?? [];
    expect(low).toBeCloseTo(0.207654955126488, 12);
    expect(high).toBeCloseTo(0.938509684723839, 12);
    const [zero, upper] = summary.models[0]?.schemes["10"]?.top5Interval ?? [];
    expect(zero).toBe(0);
    expect(upper).toBeCloseTo(0.561506080449018, 12);
    expect(summary.comparisons?.map((c) => [c.a, c.b, c.metric])).toEqual([
      ["10", "1", "top1"],
      ["10", "1", "top5"],
    ]);
    expect(summary.positions).toBeUndefined();
  });

  it("survives a JSON round trip as plain numbers", () => {
    const summary = summarize(records, [MODEL_A], 10);
    expect(JSON.parse(JSON.stringify(summary))).toEqual(summary);
  });

  it("refuses a record missing a scheme the run computed", () => {
    expect(() => summarize([scored("x.jpg", 1, { "1": top(1, 2, 3, 4, 5) })], [MODEL_A], 10)).toThrow(/x\.jpg.*scheme 10/);
  });

  it("reports no error rates when nothing is labelled", () => {
    // Act
    const summary = summarize([scored("u.jpg", null, { "1": top(1) }), failed("f.jpg")], [MODEL_A], 1);

    // Assess
    expect(summary.labelled).toBe(0);
    expect(summary.schemes).toEqual({});
    expect(formatTable3(summary)).toMatch(/no scored image has a label/);
  });
});

describe("summarize, ensemble", () => {
  it("reports the ensemble at the top and each model from its own top5", () => {
    // Prepare: label 3 everywhere; ensemble right on both, model A right on one, model B on none.
    const records = [
      scored("1.jpg", 3, { "1": top(3, 0, 1, 2, 4) }, [{ "1": top(3, 0, 1, 2, 4) }, { "1": top(0, 1, 2, 4, 5) }]),
      scored("2.jpg", 3, { "1": top(3, 0, 1, 2, 4) }, [{ "1": top(0, 3, 1, 2, 4) }, { "1": top(0, 1, 2, 4, 3) }]),
    ];

    // Act
    const summary = summarize(records, [MODEL_A, MODEL_B], 1);

    // Assess
    expect(summary.schemes).toMatchObject({ "1": { top1Error: 0, top5Error: 0 } });
    expect(summary.models.map((m) => m.schemes["1"])).toMatchObject([
      { top1Error: 0.5, top5Error: 0 },
      { top1Error: 1, top5Error: 0.5 },
    ]);
    expect(summary.models.map((m) => m.file)).toEqual(["models/a.onnx", "models/b.onnx"]);
  });

  it("refuses an ensemble record without per-model top5", () => {
    expect(() => summarize([scored("1.jpg", 3, { "1": top(3) })], [MODEL_A, MODEL_B], 1)).toThrow(/1\.jpg.*model 1/);
  });
});

describe("formatTable3", () => {
  it("prints one row per model and scheme, then the ensemble, errors in percent", () => {
    // Prepare
    const summary = summarize(
      [scored("1.jpg", 3, { "1": top(3), "10": top(3) }, [{ "1": top(0), "10": top(3) }, { "1": top(3), "10": top(0) }])],
      [MODEL_A, MODEL_B],
      10,
    );

    // Act
    const lines = formatTable3(summary).split("\n");

    // Assess
    expect(lines[0]).toBe("images 1, scored 1, failed 0, labelled 1");
    expect(lines[1]).toMatch(/^models\s+crops\s+model\s+top-1 error\s+top-5 error$/);
    // Rows only: notes (where labels came from, calibration) follow them.
    expect(lines.slice(2, 8).map((line) => line.split(/\s+/))).toEqual([
      ["1", "1", "a.onnx", "100.00%", "100.00%"],
      ["1", "1", "b.onnx", "0.00%", "0.00%"],
      ["1", "10", "a.onnx", "0.00%", "0.00%"],
      ["1", "10", "b.onnx", "100.00%", "100.00%"],
      ["2", "1", "ensemble", "0.00%", "0.00%"],
      ["2", "10", "ensemble", "0.00%", "0.00%"],
    ]);
  });
});

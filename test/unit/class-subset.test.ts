import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { LabelFileError } from "../../model/errors.js";
import { loadEngine } from "../../model/load.js";
import { restrictRows, topK } from "../../model/predict.js";
import { readSynsets } from "../../model/synsets.js";
import { parseClassSubset } from "../../scoring/class-subset.js";
import { MODELS, SAMPLES, realCrops } from "../helpers/real-crops.js";

const SYNSETS = "../shared/imagenet/synset_words.txt";
const CLASSES = 1000;

/** Softmax over the logits with every class outside `subset` masked to -Infinity: plain JS, float64. */
function maskedSoftmax(logits: readonly number[], subset: readonly number[]): number[] {
  const masked = logits.map((z, c) => (subset.includes(c) ? z : -Infinity));
  const max = Math.max(...masked);
  const exps = masked.map((z) => Math.exp(z - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

describe("restrictRows: a crop's softmax restricted to a class subset", () => {
  it("equals the softmax of the logits masked outside the subset (small arrays, by hand)", () => {
    // Prepare: two rows of 6 logits, their full softmax (what an engine returns), subset {1, 3, 4}.
    const logits = [
      [2, -1, 0.5, 3, 1, -4],
      [-2, 7, 0, 1.5, -0.5, 2],
    ];
    const subset = [1, 3, 4];
    const probabilities = Float32Array.from(logits.flatMap((row) => maskedSoftmax(row, [0, 1, 2, 3, 4, 5])));
    // Row 0 by hand: exp(-1), exp(3), exp(1) over their sum 0.36788 + 20.08554 + 2.71828 = 23.17170.
    const byHand0 = [0, 0.36788 / 23.1717, 0, 20.08554 / 23.1717, 2.71828 / 23.1717, 0];

    // Act
    restrictRows(probabilities, 2, 6, subset);

    // Assess
    const expected = logits.flatMap((row) => maskedSoftmax(row, subset));
    probabilities.forEach((p, i) => expect(p).toBeCloseTo(expected[i] as number, 6));
    byHand0.forEach((p, i) => expect(probabilities[i]).toBeCloseTo(p, 4));
  });

  it("ranks only the subset's classes in top-k, even where probabilities are 0", () => {
    // Act / Assess: class 0 (outside) ties with nothing ranked; the subset {2, 3} gives 2 entries.
    expect(topK([0, 0, 0.25, 0.75], 5, [2, 3]).map((r) => r.index)).toEqual([3, 2]);
    expect(topK([0, 0, 0, 1], 3, [1, 2, 3]).map((r) => r.index)).toEqual([3, 1, 2]);
  });

  it("on a real model run equals onnxruntime's own logits masked by hand", async () => {
    // Prepare: the untrained torchvision GoogLeNet (its output is logits), two real photos.
    const file = `${MODELS}/torchvision-googlenet-untrained.onnx`;
    const bytes = await readFile(file);
    const photos = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG"].map((name) => `${SAMPLES}/${name}`);
    const { engine } = await loadEngine(bytes, { source: file, engine: "onnxruntime", threads: 1 });
    const subset = Array.from({ length: 200 }, (_, i) => i * 5 + 1);
    try {
      const crops = await realCrops(photos, engine.preprocess);
      expect(engine.inputLayout).toBe("nchw");

      // Act: the engine's probabilities, restricted as the scorer does.
      const probabilities = await engine.classify(crops.nchw, photos.length);
      restrictRows(probabilities, photos.length, CLASSES, subset);

      // Assess: against onnxruntime run directly on the file, its logits masked by hand.
      const session = await ort.InferenceSession.create(file);
      try {
        const input = session.inputNames[0] as string;
        const output = session.outputNames[0] as string;
        const result = await session.run({ [input]: new ort.Tensor("float32", crops.nchw, [photos.length, 3, 224, 224]) });
        const logits = Array.from(result[output]?.data as Float32Array);
        for (let row = 0; row < photos.length; row++) {
          const expected = maskedSoftmax(logits.slice(row * CLASSES, (row + 1) * CLASSES), subset);
          let worst = 0;
          expected.forEach((p, c) => (worst = Math.max(worst, Math.abs(p - (probabilities[row * CLASSES + c] as number)))));
          expect(worst).toBeLessThan(1e-6);
          expect(expected.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
        }
      } finally {
        await session.release();
      }
    } finally {
      await engine.dispose();
    }
  });
});

describe("parseClassSubset", () => {
  it("reads WNIDs and indices alike, one digest for the same classes", async () => {
    const synsets = await readSynsets(SYNSETS);
    const byWnid = parseClassSubset("n01443537\n# comment\nn01440764\n\n", synsets, "a.txt");
    const byIndex = parseClassSubset("1\n0\n1\n", synsets, "b.txt");
    expect(byWnid.indices).toEqual([0, 1]);
    expect(byIndex.sha256).toBe(byWnid.sha256);
  });

  it("names the file and line of a bad entry", async () => {
    const synsets = await readSynsets(SYNSETS);
    expect(() => parseClassSubset("0\n1000\n", synsets, "a.txt")).toThrow(
      new LabelFileError('a.txt:2: expected a WNID like n01440764 or a class index 0..999, got "1000"'),
    );
    expect(() => parseClassSubset("n99999999\n", synsets, "a.txt")).toThrow(/a\.txt:1: unknown WNID n99999999/);
  });
});

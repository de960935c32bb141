import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage } from "../../model/image/decode.js";
import type { Engine } from "../../model/engine.js";
import { NUM_CLASSES } from "../../model/engine.js";
import { ModelFormatError } from "../../model/errors.js";
import { bandGroupSizes, rewriteSlowNodes } from "../../model/ort/graph-edits/lrn-rewrite.js";
import { createOrtEngine } from "../../model/ort/engine.js";
import { topK } from "../../model/predict.js";
import { preprocessFor } from "../../model/preprocess.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";
import { decodeModel, encodeModel } from "../helpers/onnx-rewrite.js";
import { MODELS, SAMPLES, maxAbsDifference } from "../helpers/real-crops.js";

const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const bvlcBytes = readFileSync(BVLC);
const torchvisionBytes = readFileSync(`${MODELS}/torchvision-googlenet-untrained.onnx`);
/** A landscape and a portrait photo, so both square layouts of the plan are exercised. */
const PHOTOS = ["n01440764_tench.JPEG", "n01494475_hammerhead.JPEG"];

/** The 144 crops of each photo, sampled by the project's own sampler, NCHW bvlc values. */
async function sampledCrops(files: readonly string[]): Promise<Float32Array> {
  const out = new Float32Array(files.length * 144 * CROP_VALUES);
  for (const [k, file] of files.entries()) {
    const image = await decodeImage(readFileSync(`${SAMPLES}/${file}`), { source: file, applyExifOrientation: false });
    const plan = cropPlan(image.width, image.height);
    sampleCrops(image, plan, { preprocess: preprocessFor("bvlc"), layout: "nchw" }, out, k * 144 * CROP_VALUES);
  }
  return out;
}

/** Classifies in slices so the test's peak memory stays near one batch of activations. */
async function classifyAll(engine: Engine, input: Float32Array, count: number, slice = 48): Promise<Float32Array> {
  const out = new Float32Array(count * NUM_CLASSES);
  for (let start = 0; start < count; start += slice) {
    const n = Math.min(slice, count - start);
    out.set(await engine.classify(input.subarray(start * CROP_VALUES, (start + n) * CROP_VALUES), n), start * NUM_CLASSES);
  }
  return out;
}

function top5Rows(probabilities: Float32Array, count: number): number[][] {
  return Array.from({ length: count }, (_, row) =>
    topK(probabilities.subarray(row * NUM_CLASSES, (row + 1) * NUM_CLASSES), 5).map(({ index }) => index),
  );
}

function opTypes(bytes: Uint8Array): string[] {
  return (decodeModel(bytes).graph?.node ?? []).map((node) => node.opType ?? "");
}

/** The BVLC file with every LRN's beta changed, so the Pow path has a reference in onnxruntime's own LRN. */
function withBeta(beta: number): Uint8Array {
  const model = decodeModel(bvlcBytes);
  for (const node of model.graph?.node ?? []) {
    if (node.opType !== "LRN") continue;
    const attribute = node.attribute?.find((a) => a.name === "beta");
    if (attribute) attribute.f = beta;
  }
  return encodeModel(model);
}

describe("rewriteSlowNodes on the BVLC GoogLeNet, 144 sampled crops of two real photos", () => {
  const count = PHOTOS.length * 144;
  let input: Float32Array;
  let reference: Float32Array;
  let rewritten: Float32Array;

  beforeAll(async () => {
    // Prepare: the same crops through the file as stored and through the rewritten graph.
    input = await sampledCrops(PHOTOS);
    const plain = await createOrtEngine(bvlcBytes, { source: BVLC, flavour: "bvlc", rewriteSlowNodes: false, softmaxed: true });
    const fast = await createOrtEngine(bvlcBytes, { source: BVLC, flavour: "bvlc", softmaxed: true });
    try {
      // Act
      reference = await classifyAll(plain, input, count);
      rewritten = await classifyAll(fast, input, count);
    } finally {
      await plain.dispose();
      await fast.dispose();
    }
  });

  it("gives every probability within 1e-5 of onnxruntime's own LRN", () => {
    // Assess
    expect(maxAbsDifference(rewritten, reference)).toBeLessThan(1e-5);
  });

  it("gives every crop the same top-5 classes in the same order", () => {
    // Assess
    expect(top5Rows(rewritten, count)).toEqual(top5Rows(reference, count));
  });

  it("is not comparing a network with itself: the crops disagree with each other", () => {
    // Assess: a constant or broken output would pass the two checks above.
    const firsts = new Set(top5Rows(reference, count).map((classes) => classes[0]));
    expect(firsts.size).toBeGreaterThan(2);
    expect(top5Rows(reference, count)[0]?.[0]).toBe(0); // the tench's centre crops see a tench
  });
});

describe("rewriteSlowNodes graph shape", () => {
  it("replaces both LRNs of the BVLC graph by band convolutions and the square-root chain", () => {
    // Act
    const report = rewriteSlowNodes(bvlcBytes, BVLC);

    // Assess: the first LRN (64 channels, no pair of group sizes) gets one band, the second
    // (192 channels) two grouped convolutions and their Add.
    const ops = opTypes(report.bytes);
    expect(report.lrnRewritten).toBe(2);
    expect(report.lrnKept).toEqual([]);
    expect(ops).not.toContain("LRN");
    expect(ops.filter((op) => op === "Conv")).toHaveLength(opTypes(bvlcBytes).filter((op) => op === "Conv").length + 3);
    expect(ops.filter((op) => op === "Add")).toHaveLength(1);
    expect(ops.filter((op) => op === "Sqrt")).toHaveLength(4);
    expect(ops).not.toContain("Pow");
    const groups = (decodeModel(report.bytes).graph?.node ?? [])
      .filter((node) => node.opType === "Conv" && node.name?.includes("_rewritten/"))
      .map((node) => Number(node.attribute?.find((a) => a.name === "group")?.i ?? 1));
    expect(groups).toEqual([1, 4, 3]);
  });

  it("names each rewritten LRN's tensors for the layout edit", () => {
    // Act
    const report = rewriteSlowNodes(bvlcBytes, BVLC);

    // Assess: the LRNs' own input and output names, from the file as stored.
    const lrns = (decodeModel(bvlcBytes).graph?.node ?? []).filter((node) => node.opType === "LRN");
    expect(report.lrnChains.map(({ input, output, channels }) => ({ input, output, channels }))).toEqual([
      { input: lrns[0]?.input?.[0], output: lrns[0]?.output?.[0], channels: 64 },
      { input: lrns[1]?.input?.[0], output: lrns[1]?.output?.[0], channels: 192 },
    ]);
    const produced = new Set((decodeModel(report.bytes).graph?.node ?? []).flatMap((node) => node.output ?? []));
    for (const chain of report.lrnChains) {
      expect(chain.steps).toHaveLength(3); // the root, x over it, the fourth root; the second division writes the output
      for (const name of [chain.base, ...chain.steps, chain.output]) expect(produced.has(name)).toBe(true);
    }
  });

  it("returns a graph without LRN (torchvision) byte for byte", () => {
    // Act
    const report = rewriteSlowNodes(torchvisionBytes, "torchvision.onnx");

    // Assess
    expect(report.lrnRewritten).toBe(0);
    expect(report.bytes).toBe(torchvisionBytes);
  });

  it("refuses bytes that are not ONNX, naming the source", () => {
    // Act / Assess
    expect(() => rewriteSlowNodes(new Uint8Array([1, 2, 3, 4, 5]), "junk.onnx")).toThrow(ModelFormatError);
    expect(() => rewriteSlowNodes(new Uint8Array([1, 2, 3, 4, 5]), "junk.onnx")).toThrow(/junk\.onnx/);
  });
});

describe("bandGroupSizes", () => {
  /** Every (out, in) pair of an LRN window over `channels`, as ONNX defines the window. */
  function windowPairs(channels: number, size: number): [number, number][] {
    const pairs: [number, number][] = [];
    for (let out = 0; out < channels; out++) {
      for (let inp = out - Math.floor((size - 1) / 2); inp <= out + Math.ceil((size - 1) / 2); inp++) {
        if (inp >= 0 && inp < channels) pairs.push([out, inp]);
      }
    }
    return pairs;
  }

  it.each([
    [192, 5, [48, 64]],
    [96, 5, [32, 48]],
    [64, 5, undefined],
    [256, 5, undefined],
    [48, 5, undefined],
  ])("for %i channels and a window of %i gives %j", (channels, size, expected) => {
    // Act
    const sizes = bandGroupSizes(channels, size);

    // Assess: the sizes, and (when there are two) that every window pair lies inside a group
    // of one of them, so the two grouped convolutions hold the whole band.
    expect(sizes).toEqual(expected);
    if (!sizes) return;
    const [first, second] = sizes;
    const group = (channel: number, groupSize: number) => Math.floor(channel / groupSize);
    const uncovered = windowPairs(channels, size).filter(
      ([out, inp]) => group(out, first) !== group(inp, first) && group(out, second) !== group(inp, second),
    );
    expect(uncovered).toEqual([]);
    for (const groupSize of sizes) {
      expect(channels % groupSize).toBe(0);
      expect(groupSize % 16).toBe(0);
    }
  });
});

describe("rewriteSlowNodes with a beta other than 0.75 (the Pow path)", () => {
  it("matches onnxruntime's LRN on 12 sampled crops", async () => {
    // Prepare
    const file = withBeta(0.6);
    const input = (await sampledCrops(PHOTOS.slice(1))).subarray(0, 12 * CROP_VALUES);
    const plain = await createOrtEngine(file, { source: BVLC, flavour: "bvlc", rewriteSlowNodes: false, softmaxed: true });
    const report = rewriteSlowNodes(file, BVLC);
    const fast = await createOrtEngine(report.bytes, { source: BVLC, flavour: "bvlc", rewriteSlowNodes: false, softmaxed: true });
    try {
      // Act
      const reference = await plain.classify(input, 12);
      const rewritten = await fast.classify(input, 12);

      // Assess
      expect(report.lrnRewritten).toBe(2);
      expect(opTypes(report.bytes)).not.toContain("LRN");
      expect(opTypes(report.bytes).filter((op) => op === "Pow")).toHaveLength(2);
      expect(maxAbsDifference(rewritten, reference)).toBeLessThan(1e-5);
      expect(top5Rows(rewritten, 12)).toEqual(top5Rows(reference, 12));
    } finally {
      await plain.dispose();
      await fast.dispose();
    }
  });
});


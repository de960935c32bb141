import { readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { ModelFormatError } from "../../model/errors.js";
import { rewriteSlowNodes } from "../../model/ort/graph-edits/lrn-rewrite.js";
import { createCpuSession, keepLrnStepsBlocked, nchwcBlockSize } from "../../model/ort/graph-edits/layout.js";
import { preprocessFor } from "../../model/preprocess.js";
import { seededRandom } from "../helpers/onnx-rewrite.js";
import { MODELS, SAMPLES, maxAbsDifference, realCrops } from "../helpers/real-crops.js";

const { onnx } = onnxProto;
const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const SESSION: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 2,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
};

async function run(session: ort.InferenceSession, input: Float32Array, count: number): Promise<Float32Array> {
  const feeds = { [session.inputNames[0] as string]: new ort.Tensor("float32", input, [count, 3, 224, 224]) };
  const results = await session.run(feeds);
  return Float32Array.from(results[session.outputNames[0] as string]?.data as Float32Array);
}

/** The largest difference relative to the largest magnitude of the reference. */
function relativeDifference(actual: Float32Array, reference: Float32Array): number {
  let scale = 0;
  for (const value of reference) scale = Math.max(scale, Math.abs(value));
  return maxAbsDifference(actual, reference) / scale;
}

/** Whether onnxruntime lays this CPU's convolutions out in blocks at all (x86 with AVX2 or later). */
async function cpuHasBlockedLayout(): Promise<boolean> {
  const rewrite = rewriteSlowNodes(readFileSync(BVLC), BVLC);
  const { layout } = await createCpuSession(rewrite.bytes, rewrite.lrnChains, SESSION, BVLC);
  return (layout?.reordersRemoved ?? 0) > 0;
}

describe.each([
  ["all three edits (the engine's default)", {}],
  ["the block rows alone, the batch whole", { stemCropsPerPart: 0 }],
  ["the stem in parts alone, the band convolutions kept", { blockRows: false }],
] as const)("the LRN steps on onnxruntime's blocked tensors, BVLC GoogLeNet, 21 real photos: %s", (_, options) => {
  it("takes out the six reorders around the two LRNs and changes no output, for batches of 1, 5, 16 and 21", async () => {
    // Prepare: the rewritten graph as onnxruntime lays it out, and the same with the edits.
    const files = readdirSync(SAMPLES).sort().slice(0, 21).map((name) => `${SAMPLES}/${name}`);
    const { nchw } = await realCrops(files, preprocessFor("bvlc"));
    const rewrite = rewriteSlowNodes(readFileSync(BVLC), BVLC);
    const reordered = await ort.InferenceSession.create(rewrite.bytes, SESSION);
    const { session: blocked, layout } = await createCpuSession(rewrite.bytes, rewrite.lrnChains, SESSION, BVLC, undefined, options);
    try {
      for (const count of [1, 5, 16, 21]) {
        // Act: a batch of 1 or 5 leaves stem parts empty, one of 21 puts 9 crops in the last.
        const crops = nchw.subarray(0, count * 3 * 224 * 224);
        const expected = await run(reordered, crops, count);
        const actual = await run(blocked, crops, count);

        // Assess
        expect(maxAbsDifference(actual, expected)).toBeLessThanOrEqual(1e-6);
        if (count === 21) expect(new Set(Array.from({ length: count }, (_, row) => argmax(actual, row))).size).toBeGreaterThan(4);
      }
      // On this machine's x86 CPU both chains run blocked; on a CPU without the blocked layout
      // nothing is reordered, so nothing is edited.
      if (process.arch === "x64") {
        const chains = rewrite.lrnChains.map((chain) => chain.output);
        expect(layout?.blocked).toEqual(chains);
        expect(layout?.reordersRemoved).toBe(6);
        expect(layout?.kept).toEqual([]);
        expect(layout?.windowSumRows).toEqual("blockRows" in options ? [] : chains);
        // The stem ends where the network first branches, after pool2 (inception 3a's inputs).
        if ("stemCropsPerPart" in options) expect(layout?.stem).toBeUndefined();
        else expect(layout?.stem?.nodes).toBeGreaterThan(10);
      }
    } finally {
      await reordered.release();
      await blocked.release();
    }
  });
});

/** The CPU's feature flags as the kernel reports them (Linux), apart from anything onnxruntime says. */
function cpuFlags(): Set<string> | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return undefined;
  }
  const line = text.split("\n").find((entry) => entry.startsWith("flags"));
  return line === undefined ? undefined : new Set(line.slice(line.indexOf(":") + 1).trim().split(/\s+/));
}

const flags = cpuFlags();

describe("nchwcBlockSize", () => {
  // Which answer is right comes from the CPU's flags, so the test cannot pass by skipping its
  // check: MLAS lays convolutions out in blocks of 16 channels with AVX-512, 8 with AVX2, and
  // not at all on an x86 CPU without AVX2.
  it.runIf(process.arch === "x64" && flags !== undefined)(
    "finds onnxruntime's block of 8 or 16 channels on an x86 CPU with AVX2 or later, and none without",
    async () => {
      // Prepare
      const avx2 = flags?.has("avx2") === true;
      const avx512 = flags?.has("avx512f") === true;

      // Act
      const blockSize = await nchwcBlockSize(tmpdir());

      // Assess: the precondition first, so a CPU that should block and does not fails here.
      expect(await cpuHasBlockedLayout(), `onnxruntime's blocked layout with${avx2 ? "" : "out"} AVX2`).toBe(avx2);
      expect(blockSize).toBe(avx512 ? 16 : avx2 ? 8 : undefined);
    },
  );
});

function argmax(values: Float32Array, row: number): number {
  const slice = values.subarray(row * 1000, (row + 1) * 1000);
  return slice.indexOf(Math.max(...slice));
}

/**
 * A small graph around one LRN over `channels`: an 8x8/8 convolution and ReLU to 28x28, the
 * LRN (alpha large enough to change the outputs), a 1x1 convolution to 1000 and a global
 * average. With 8 channels onnxruntime pads its blocked tensors to a block of 16 (AVX-512) and
 * cannot keep the LRN's output blocked; with 96 its blocks are whole and the band is grouped.
 */
function lrnProbe(channels: number, withLrn = true): Uint8Array {
  const random = seededRandom(channels);
  const floats = (count: number, scale: number) => Float32Array.from({ length: count }, () => (random() * 2 - 1) * scale);
  const tensor = (name: string, dims: number[], values: Float32Array) => ({
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(values.buffer),
  });
  const ints = onnx.AttributeProto.AttributeType.INTS;
  const info = (name: string, dims: number[]) => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((d) => (d < 0 ? { dimParam: "N" } : { dimValue: d })) } } },
  });
  const lrnOut = withLrn ? "normed" : "features";
  const nodes = [
    { opType: "Conv", input: ["data", "w1", "b1"], output: ["conv"], attribute: [{ name: "kernel_shape", type: ints, ints: [8, 8] }, { name: "strides", type: ints, ints: [8, 8] }] },
    { opType: "Relu", input: ["conv"], output: ["features"] },
    ...(withLrn
      ? [
          {
            opType: "LRN",
            input: ["features"],
            output: ["normed"],
            attribute: [
              { name: "size", type: onnx.AttributeProto.AttributeType.INT, i: 5 },
              { name: "alpha", type: onnx.AttributeProto.AttributeType.FLOAT, f: 0.05 },
              { name: "beta", type: onnx.AttributeProto.AttributeType.FLOAT, f: 0.75 },
              { name: "bias", type: onnx.AttributeProto.AttributeType.FLOAT, f: 1 },
            ],
          },
        ]
      : []),
    { opType: "Conv", input: [lrnOut, "w2", "b2"], output: ["logits_map"], attribute: [{ name: "kernel_shape", type: ints, ints: [1, 1] }] },
    { opType: "GlobalAveragePool", input: ["logits_map"], output: ["pooled"] },
    { opType: "Flatten", input: ["pooled"], output: ["logits"] },
  ];
  return onnx.ModelProto.encode({
    irVersion: 7,
    opsetImport: [{ domain: "", version: 12 }],
    graph: {
      name: "lrn-probe",
      node: nodes,
      initializer: [
        tensor("w1", [channels, 3, 8, 8], floats(channels * 3 * 64, 0.02)),
        tensor("b1", [channels], floats(channels, 0.5)),
        tensor("w2", [1000, channels, 1, 1], floats(1000 * channels, 0.5)),
        tensor("b2", [1000], floats(1000, 0.1)),
      ],
      input: [info("data", [-1, 3, 224, 224])],
      output: [info("logits", [-1, 1000])],
    },
  }).finish();
}

// 12 channels fill no whole block of 8 (AVX2) or 16 (AVX-512), so the blocked window sum is
// padded past them on every x64 CPU and the chain is kept; 96 are whole blocks of either.
describe.each([
  [12, "kept"],
  [96, "blocked"],
] as const)("an LRN over %i channels", (channels, expectedOnX64) => {
  it(`gives onnxruntime's own LRN's outputs, the chain ${expectedOnX64}`, async () => {
    // Prepare
    const probe = lrnProbe(channels);
    const files = readdirSync(SAMPLES).sort().slice(16, 20).map((name) => `${SAMPLES}/${name}`);
    const { nchw } = await realCrops(files, preprocessFor("bvlc"));
    const rewrite = rewriteSlowNodes(probe, "probe.onnx");
    const asStored = await ort.InferenceSession.create(probe, SESSION);
    const withoutLrn = await ort.InferenceSession.create(lrnProbe(channels, false), SESSION);
    const { session, layout } = await createCpuSession(rewrite.bytes, rewrite.lrnChains, SESSION, "probe.onnx");
    try {
      // Act
      const reference = await run(asStored, nchw, files.length);
      const actual = await run(session, nchw, files.length);

      // Assess: the LRN matters here (the graph without it differs), and the rewrite with
      // the layout edit matches onnxruntime's LRN to float rounding.
      expect(rewrite.lrnRewritten).toBe(1);
      expect(relativeDifference(await run(withoutLrn, nchw, files.length), reference)).toBeGreaterThan(1e-2);
      expect(relativeDifference(actual, reference)).toBeLessThan(1e-5);
      if (process.arch === "x64" && (await cpuHasBlockedLayout())) {
        if (expectedOnX64 === "blocked") {
          expect(layout?.blocked).toEqual(["normed"]);
          expect(layout?.reordersRemoved).toBeGreaterThan(0);
          // 96 channels are 6 blocks of 16 (or 12 of 8): the window sum runs over the block rows.
          expect(layout?.windowSumRows).toEqual(["normed"]);
        } else {
          expect(layout?.blocked).toEqual([]);
          expect(layout?.kept).toHaveLength(1);
          expect(layout?.kept[0]).toMatch(/^normed: /);
        }
      }
    } finally {
      await asStored.release();
      await withoutLrn.release();
      await session.release();
    }
  });
});

describe("createCpuSession without a writable temporary folder", () => {
  it("says so in one line and runs the rewritten graph with its reorders, exactly", async () => {
    // Prepare: TMPDIR pointing nowhere, so the optimized graph cannot be saved.
    const savedTmpdir = process.env.TMPDIR;
    process.env.TMPDIR = "/nonexistent/googlenet-eval-tmp";
    const lines: string[] = [];
    const rewrite = rewriteSlowNodes(readFileSync(BVLC), BVLC);
    const files = readdirSync(SAMPLES).sort().slice(20, 22).map((name) => `${SAMPLES}/${name}`);
    const { nchw } = await realCrops(files, preprocessFor("bvlc"));
    const reordered = await ort.InferenceSession.create(rewrite.bytes, SESSION);
    try {
      // Act
      const { session, layout } = await createCpuSession(rewrite.bytes, rewrite.lrnChains, SESSION, BVLC, (line) => lines.push(line));
      const actual = await run(session, nchw, files.length);
      await session.release();

      // Assess
      expect(layout).toBeUndefined();
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/bvlc-googlenet\.onnx: the LRN steps keep onnxruntime's layout reorders \(.*nonexistent/);
      expect(maxAbsDifference(actual, await run(reordered, nchw, files.length))).toBe(0);
    } finally {
      await reordered.release();
      if (savedTmpdir === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmpdir;
    }
  });
});

describe("keepLrnStepsBlocked", () => {
  it("refuses bytes that are not ONNX, naming the source", () => {
    // Act / Assess
    expect(() => keepLrnStepsBlocked(new Uint8Array([1, 2, 3, 4, 5]), [], "junk.onnx")).toThrow(ModelFormatError);
    expect(() => keepLrnStepsBlocked(new Uint8Array([1, 2, 3, 4, 5]), [], "junk.onnx")).toThrow(/junk\.onnx/);
  });

  it("leaves a chain whose tensors are not in the graph as it is, saying why", () => {
    // Prepare: the rewritten graph before onnxruntime optimized it has no reorders at all.
    const rewrite = rewriteSlowNodes(readFileSync(BVLC), BVLC);

    // Act
    const edit = keepLrnStepsBlocked(rewrite.bytes, rewrite.lrnChains, BVLC);

    // Assess
    expect(edit.bytes).toBe(rewrite.bytes);
    expect(edit.reordersRemoved).toBe(0);
    expect(edit.kept).toHaveLength(2);
    expect(edit.kept[0]).toMatch(/is not reordered out of the blocked layout/);
  });
});

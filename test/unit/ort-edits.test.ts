import { readFileSync, readdirSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { rewriteSlowNodes } from "../../model/ort/graph-edits/lrn-rewrite.js";
import { createOrtEngine } from "../../model/ort/engine.js";
import { createCpuSession } from "../../model/ort/graph-edits/layout.js";
import { preprocessFor } from "../../model/preprocess.js";
import type { ModelProto } from "../../model/ort/graph-edits/proto-graph.js";
import { MODELS, SAMPLES, maxAbsDifference, realCrops } from "../helpers/real-crops.js";

/**
 * The load-time probe of onnxruntime's graph edits (model/ort/graph-edits/checked-session.ts) on the real BVLC
 * GoogLeNet, judged on real photos against a plain onnxruntime session of the file as stored
 * (the independent reference: no code of this project between the file and its outputs).
 * Every load here probes: a pass recorded by an earlier load (model/ort/graph-edits/probe-cache.ts)
 * would skip the very probe these tests are about.
 */
const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const bytes = readFileSync(BVLC);
const PHOTOS = readdirSync(SAMPLES).sort().filter((_, i) => i % 200 === 7).map((name) => `${SAMPLES}/${name}`);
const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 2, interOpNumThreads: 1, executionMode: "sequential", graphOptimizationLevel: "all" };

let photos: Float32Array;
let asStored: Float32Array;

/** The largest difference relative to the largest magnitude of the reference (test/unit/ort-layout.test.ts). */
function relativeDifference(actual: Float32Array, reference: Float32Array): number {
  let scale = 0;
  for (const value of reference) scale = Math.max(scale, Math.abs(value));
  return maxAbsDifference(actual, reference) / scale;
}

async function probabilities(session: ort.InferenceSession, input: Float32Array, count: number): Promise<Float32Array> {
  const results = await session.run({ [session.inputNames[0] as string]: new ort.Tensor("float32", input, [count, 3, 224, 224]) });
  // BVLC GoogLeNet ends in its own softmax (prob_1).
  return Float32Array.from(results[session.outputNames[0] as string]?.data as Float32Array);
}

beforeAll(async () => {
  photos = (await realCrops(PHOTOS, preprocessFor("bvlc"))).nchw;
  const reference = await ort.InferenceSession.create(bytes, SESSION);
  asStored = await probabilities(reference, photos, PHOTOS.length);
  await reference.release();
});

/** One initializer's values, as a view the hook can change in place. */
function floats(model: ModelProto, name: RegExp): Float32Array {
  const tensor = model.graph?.initializer?.find((candidate) => name.test(candidate.name ?? ""));
  const raw = tensor?.rawData;
  if (!raw) throw new Error(`no initializer ${String(name)} in the edited graph`);
  return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
}

/** Corruptions of what the edits produced, each as an onnxruntime upgrade could make them wrong. */
const CORRUPTIONS: [string, (model: ModelProto) => void][] = [
  [
    "one weight of the first LRN's block-row filter doubled",
    (model) => {
      const filter = floats(model, /^pool1_norm1.*\/block_rows\/filter$/);
      const first = filter.findIndex((value) => value !== 0);
      filter[first] = (filter[first] as number) * 2;
    },
  ],
  [
    "the block-row filters' lanes read the other way round (MLAS's [input lane][output lane] order swapped)",
    (model) => {
      for (const tensor of model.graph?.initializer ?? []) {
        if (!tensor.name?.endsWith("/block_rows/filter")) continue;
        const filter = floats(model, new RegExp(`^${tensor.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`));
        const lanes = Math.round(Math.sqrt(filter.length / 3));
        const copy = Float32Array.from(filter);
        for (let row = 0; row < 3; row++) {
          for (let a = 0; a < lanes; a++) for (let b = 0; b < lanes; b++) filter[(row * lanes + a) * lanes + b] = copy[(row * lanes + b) * lanes + a] as number;
        }
      }
    },
  ],
];

describe("createOrtEngine's graph edits on the CPU, BVLC GoogLeNet", () => {
  it("keeps every edit on this x64 CPU, names them in one line with the probe's difference, and scores real photos as the file does", async () => {
    // Prepare
    const lines: string[] = [];

    // Act
    const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 2, probeCache: false, log: (line) => lines.push(line) });
    const scores = await engine.classify(photos, PHOTOS.length);
    await engine.dispose();

    // Assess
    expect(lines).toHaveLength(1);
    const [line] = lines as [string];
    expect(line).toMatch(/^googlenet-eval: onnxruntime graph edits for .*bvlc-googlenet\.onnx: on: LRN rewrite \(2 LRNs\)/);
    if (process.arch === "x64") {
      expect(line).toMatch(/: on: LRN rewrite \(2 LRNs\), blocked LRN steps \(2, 6 reorders removed\), block-row window sums \(2\), stem in parts \(4 of 4 crops, \d+ nodes each, to \S+\); probe: 13 dead-leaves crops: largest relative difference \S+ from the graph as stored \(within 1e-5\)$/);
    }
    const probed = Number(/largest relative difference (\S+)/.exec(line)?.[1]);
    expect(probed).toBeLessThanOrEqual(1e-5);
    expect(relativeDifference(scores, asStored)).toBeLessThanOrEqual(1e-5);
  });

  describe.each(CORRUPTIONS)("with %s after the edits", (_, corrupt) => {
    it("drops the layout edits, says why in its one line, keeps the exact LRN rewrite, and scores real photos as the file does", async () => {
      // Prepare: the same corruption, loaded without the probe, scores the photos wrong.
      const rewrite = rewriteSlowNodes(bytes, BVLC);
      const unchecked = await createCpuSession(rewrite.bytes, rewrite.lrnChains, SESSION, BVLC, undefined, { editedGraphHook: corrupt });
      const wrong = relativeDifference(await probabilities(unchecked.session, photos, PHOTOS.length), asStored);
      await unchecked.session.release();
      const lines: string[] = [];

      // Act
      const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 2, probeCache: false, log: (line) => lines.push(line), editedGraphHook: corrupt });
      const scores = await engine.classify(photos, PHOTOS.length);
      await engine.dispose();

      // Assess
      if (process.arch !== "x64") return;
      expect(wrong).toBeGreaterThan(1e-3);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        /graph edits for .*bvlc-googlenet\.onnx: on: LRN rewrite \(2 LRNs\); off: blocked LRN steps, block-row window sums, stem in parts \(13 dead-leaves crops: largest relative difference \S+ from the graph as stored \(over 1e-5\) with them\); probe: LRN rewrite alone: largest relative difference \S+ from the graph as stored \(within 1e-5\)$/,
      );
      expect(relativeDifference(scores, asStored)).toBeLessThanOrEqual(1e-5);
    });
  });

  it("drops them when the probe cannot even run through the edited graph (a stem part's end moved), saying so", async () => {
    // Prepare: the first stem part now ends one crop early, so a crop goes missing at the concat.
    const shorten = (model: ModelProto) => {
      const end = model.graph?.initializer?.find((tensor) => tensor.name === "stem_parts/to0");
      if (!end) throw new Error("no stem_parts/to0 in the edited graph");
      end.rawData = new Uint8Array(BigInt64Array.of(3n).buffer);
    };
    const lines: string[] = [];

    // Act
    const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 2, probeCache: false, log: (line) => lines.push(line), editedGraphHook: shorten });
    const scores = await engine.classify(photos, PHOTOS.length);
    await engine.dispose();

    // Assess
    if (process.arch !== "x64") return;
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/; off: blocked LRN steps, block-row window sums, stem in parts \(13 dead-leaves crops: 12000 values where the graph as stored gives 13000 with them\); probe: LRN rewrite alone: .*within 1e-5/);
    expect(relativeDifference(scores, asStored)).toBeLessThanOrEqual(1e-5);
  });
});

describe("createOrtEngine with the graph edits turned off", () => {
  it("runs the file as stored, bit for bit, and says so in one line", async () => {
    // Prepare
    const lines: string[] = [];

    // Act
    const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 2, log: (line) => lines.push(line), graphEdits: false });
    const scores = await engine.classify(photos, PHOTOS.length);
    await engine.dispose();

    // Assess
    expect(lines).toEqual([`googlenet-eval: onnxruntime graph edits for ${BVLC}: off (turned off by the graphEdits setting: the graph runs as stored)`]);
    expect(maxAbsDifference(scores, asStored)).toBe(0);
  });
});

describe("createOrtEngine asked for CUDA", () => {
  const create = vi.spyOn(ort.InferenceSession, "create");
  afterAll(() => create.mockRestore());

  it("hands the CUDA provider the file as stored: the edits are measured on the CPU only", async () => {
    // Prepare: this host has no CUDA add-on, so the CUDA session fails and the CPU runs it;
    // the spy only records what onnxruntime was given.
    create.mockClear();

    // Act
    const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 1, device: "cuda", log: () => undefined });
    await engine.dispose();

    // Assess
    const cudaCalls = create.mock.calls.filter((call) => (call[1] as ort.InferenceSession.SessionOptions | undefined)?.executionProviders?.includes("cuda"));
    expect(cudaCalls).toHaveLength(1);
    expect(Buffer.from(cudaCalls[0]?.[0] as Uint8Array).equals(bytes)).toBe(true);
  });
});

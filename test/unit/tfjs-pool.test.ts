import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import type { Worker } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { selectBackend, type BackendPreference } from "../../model/tfjs/backend.js";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage } from "../../model/image/decode.js";
import { NUM_CLASSES, type Engine } from "../../model/engine.js";
import { ConfigurationError, ModelFormatError } from "../../model/errors.js";
import { loadEngine, nativeTensorflowLoads } from "../../model/load.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";
import { createTfjsEngine } from "../../model/tfjs/engine.js";
import { createTfjsPoolEngine } from "../../model/tfjs/pool.js";
import { tinyClassifierModel } from "../helpers/onnx-rewrite.js";
import { maxAbsDifference, MODELS, SAMPLES } from "../helpers/real-crops.js";

const ROOT = resolve(import.meta.dirname, "../..");
const quiet = (): void => undefined;
/** Two workers: the machine's core count, and enough to exercise uneven slices. */
const WORKERS = 2;
/** Plan indices of three different windows (tench is landscape): 256 left tl, 288 left center mirrored, 352 right full mirrored. */
const CROP_INDICES = [0, 45, 143];

/** Real crops through the project's own decode + plan + sampler, laid out NHWC for tfjs. */
async function sampledCrops(file: string, indices: readonly number[], engine: Engine): Promise<Float32Array> {
  const image = await decodeImage(readFileSync(file), { source: file, applyExifOrientation: false });
  const plan = cropPlan(image.width, image.height);
  const crops = indices.map((i) => plan[i] as NonNullable<(typeof plan)[number]>);
  const out = new Float32Array(crops.length * CROP_VALUES);
  sampleCrops(image, crops, { preprocess: engine.preprocess, layout: engine.inputLayout }, out);
  return out;
}

/** Largest difference between any two rows: a pool that mixed up slices could not hide behind identical rows. */
function rowSpread(probabilities: Float32Array, rows: number): number {
  let spread = 0;
  for (let a = 0; a < rows; a++) {
    for (let b = a + 1; b < rows; b++) {
      spread = Math.max(
        spread,
        maxAbsDifference(
          probabilities.subarray(a * NUM_CLASSES, (a + 1) * NUM_CLASSES),
          probabilities.subarray(b * NUM_CLASSES, (b + 1) * NUM_CLASSES),
        ),
      );
    }
  }
  return spread;
}

describe.each([
  ["bvlc", `${MODELS}/bvlc-googlenet.onnx`],
  ["torchvision", `${MODELS}/torchvision-googlenet-untrained.onnx`],
])("the tfjs worker pool on %s (%s)", (flavour, file) => {
  let inProcess: Engine;
  let pool: Engine;
  let tench: Float32Array;
  let tabby: Float32Array;

  beforeAll(async () => {
    await selectBackend("wasm", { log: quiet });
    const bytes = readFileSync(file);
    inProcess = await createTfjsEngine(bytes, { source: file, backend: "wasm", log: quiet });
    pool = await createTfjsPoolEngine(bytes, { source: file, backend: "wasm", workers: WORKERS, log: quiet });
    tench = await sampledCrops(`${SAMPLES}/n01440764_tench.JPEG`, CROP_INDICES, pool);
    tabby = await sampledCrops(`${SAMPLES}/n02123045_tabby.JPEG`, [CROP_INDICES[1] as number], pool);
  });

  afterAll(async () => {
    await pool?.dispose();
    await inProcess?.dispose();
  });

  it("describes itself as the in-process engine does", () => {
    // Assess
    expect(pool).toMatchObject({ engine: "tfjs", backend: "wasm", flavour, inputLayout: "nhwc" });
    expect(pool.preprocess).toEqual(inProcess.preprocess);
  });

  it("gives the in-process wasm engine's probabilities within 1e-6 on 3 crops split 2 + 1", async () => {
    // Act
    const expected = await inProcess.classify(tench, CROP_INDICES.length);
    const actual = await pool.classify(tench, CROP_INDICES.length);

    // Assess
    expect(actual).toHaveLength(CROP_INDICES.length * NUM_CLASSES);
    expect(maxAbsDifference(actual, expected)).toBeLessThanOrEqual(1e-6);
    expect(rowSpread(expected, CROP_INDICES.length)).toBeGreaterThan(1e-3);
  });

  it("classifies a batch smaller than the worker count", async () => {
    // Act
    const expected = await inProcess.classify(tabby, 1);
    const actual = await pool.classify(tabby, 1);

    // Assess
    expect(actual).toHaveLength(NUM_CLASSES);
    expect(maxAbsDifference(actual, expected)).toBeLessThanOrEqual(1e-6);
  });

  it("answers overlapping calls each with its own crops, and an empty batch with nothing", async () => {
    // Prepare
    const expectedTench = await inProcess.classify(tench, CROP_INDICES.length);
    const expectedTabby = await inProcess.classify(tabby, 1);

    // Act
    const [actualTench, actualTabby, empty] = await Promise.all([
      pool.classify(tench, CROP_INDICES.length),
      pool.classify(tabby, 1),
      pool.classify(new Float32Array(0), 0),
    ]);

    // Assess
    expect(maxAbsDifference(actualTench, expectedTench)).toBeLessThanOrEqual(1e-6);
    expect(maxAbsDifference(actualTabby, expectedTabby)).toBeLessThanOrEqual(1e-6);
    expect(empty).toHaveLength(0);
  });

  it("leaves the caller's input buffer intact", async () => {
    // Prepare
    const before = tench.slice();

    // Act
    await pool.classify(tench, CROP_INDICES.length);

    // Assess
    expect(tench.byteLength).toBe(before.byteLength);
    expect(maxAbsDifference(tench, before)).toBe(0);
  });

  it("refuses an input whose length does not match the count", async () => {
    // Act
    const call = pool.classify(tench, 2);

    // Assess
    await expect(call).rejects.toThrow(RangeError);
    await expect(call).rejects.toThrow(`expected 2 crops of 224x224x3 = ${2 * CROP_VALUES} values, got ${3 * CROP_VALUES}`);
  });
});

describe.each([
  ["a JPEG", "photos/tench.onnx", () => readFileSync(`${SAMPLES}/n01440764_tench.JPEG`), "tench.onnx: not an ONNX model"],
  ["an ONNX classifier that is not GoogLeNet", "models/tiny.onnx", tinyClassifierModel, "models/tiny.onnx: expected 9 inception modules"],
])("a pool given %s", (_, source, bytes, message) => {
  it("fails with the workers' ModelFormatError naming the file", async () => {
    // Act
    const start = createTfjsPoolEngine(bytes(), { source, backend: "wasm", workers: WORKERS, log: quiet });

    // Assess
    await expect(start).rejects.toThrow(ModelFormatError);
    await expect(start).rejects.toThrow(message);
  });
});

/**
 * The pool's private threads, reached around the Engine interface: a real worker is made to fail
 * here (a request the network refuses, a thread that dies) instead of mocking one.
 */
interface PoolInternals {
  readonly threads: readonly { readonly worker: Worker; run(input: Float32Array, count: number): Promise<Float32Array> }[];
}

describe("a worker that fails", () => {
  const file = `${MODELS}/bvlc-googlenet.onnx`;
  let pool: Engine;

  beforeAll(async () => {
    pool = await createTfjsPoolEngine(readFileSync(file), { source: file, backend: "wasm", workers: WORKERS, log: quiet });
  });

  afterAll(async () => {
    await pool?.dispose();
  });

  it("rejects the call with the worker's message, its error class and the model source", async () => {
    // Prepare
    const [first] = (pool as unknown as PoolInternals).threads;

    // Act
    const call = first?.run(new Float32Array(5), 1);

    // Assess
    await expect(call).rejects.toThrow(RangeError);
    await expect(call).rejects.toThrow(`${file}: tfjs pool worker 0: classify: expected 1 crops of 224x224x3 = ${CROP_VALUES} values, got 5`);
  });

  it("that has died makes every later classify reject, naming the model and the worker", async () => {
    // Prepare
    const second = (pool as unknown as PoolInternals).threads[1];
    await second?.worker.terminate();

    // Act
    const call = pool.classify(new Float32Array(WORKERS * CROP_VALUES), WORKERS);

    // Assess
    await expect(call).rejects.toThrow(`${file}: tfjs pool worker 1 exited (code 1); this pool cannot classify any more`);
  });
});

describe("loadEngine with --engine tfjs", () => {
  const file = `${MODELS}/torchvision-googlenet-untrained.onnx`;
  const cores = availableParallelism();

  /** The default: a pool when there are cores to fill and no native TensorFlow to do it. */
  const poolByDefault = async (): Promise<boolean> => cores > 1 && !(await nativeTensorflowLoads());

  const always = (value: boolean) => async (): Promise<boolean> => value;
  describe.each<[BackendPreference, number | undefined, string, () => Promise<boolean>]>([
    ["wasm", 2, "a worker pool", always(true)],
    ["wasm", 1, "the in-process engine", always(false)],
    ["cpu", 2, "a worker pool", always(true)],
    ["auto", undefined, "a worker pool without native TensorFlow, given 2+ cores", poolByDefault],
  ])("on backend %s with tfjsWorkers %s", (backend, tfjsWorkers, what, pooled) => {
    it(`runs ${what}`, async () => {
      // Prepare
      const expected = (await pooled()) ? "TfjsPoolEngine" : "TfjsEngine";

      // Act
      const { engine, info } = await loadEngine(readFileSync(file), {
        source: file,
        engine: "tfjs",
        backend,
        ...(tfjsWorkers !== undefined ? { tfjsWorkers } : {}),
      });
      await engine.dispose();

      // Assess
      expect(info.flavour).toBe("torchvision");
      // The Engine interface hides which implementation runs; the class name is the one witness.
      expect(engine.constructor.name).toBe(expected);
    });
  });

  it.each([0, 1.5, -2])("refuses tfjsWorkers %s with a ConfigurationError", async (tfjsWorkers) => {
    // Act
    const load = loadEngine(readFileSync(file), { source: file, engine: "tfjs", backend: "wasm", tfjsWorkers });

    // Assess
    await expect(load).rejects.toThrow(ConfigurationError);
    await expect(load).rejects.toThrow(`tfjs workers must be a positive integer (default: the number of cores), got ${tfjsWorkers}`);
  });
});

/**
 * A separate Node process builds a pool, classifies, and disposes (or not); whether that process
 * ends on its own shows whether the worker threads are gone: live workers keep it running.
 */
function runChild(dispose: boolean): { lines: string[]; exited: Promise<number | null>; kill: () => void; stderr: string[] } {
  const model = `${MODELS}/bvlc-googlenet.onnx`;
  const script = `
    import { readFileSync } from "node:fs";
    import { createTfjsPoolEngine } from ${JSON.stringify(`${ROOT}/model/tfjs/pool.ts`)};
    const pool = await createTfjsPoolEngine(readFileSync(${JSON.stringify(model)}), {
      source: ${JSON.stringify(model)}, backend: "wasm", workers: ${WORKERS}, log: () => undefined,
    });
    const out = await pool.classify(new Float32Array(${WORKERS} * ${CROP_VALUES}), ${WORKERS});
    console.log("classified " + out.length);
    if (${dispose}) {
      await pool.dispose();
      await pool.dispose();
      const after = await pool.classify(new Float32Array(0), 0).then(() => "resolved", (error) => error.message);
      console.log("after dispose: " + after);
    }
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const stderr: string[] = [];
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => lines.push(...chunk.split("\n").filter(Boolean)));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => stderr.push(chunk));
  const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
  return { lines, exited, stderr, kill: () => child.kill("SIGKILL") };
}

const timeout = (ms: number): Promise<"still running"> => new Promise((done) => setTimeout(() => done("still running"), ms));

describe("dispose", () => {
  it("ends the worker threads, so the process exits by itself", async () => {
    // Act
    const child = runChild(true);
    const outcome = await Promise.race([child.exited, timeout(120_000)]);
    if (outcome === "still running") child.kill();

    // Assess
    expect(outcome, child.stderr.join("")).toBe(0);
    expect(child.lines).toEqual([`classified ${WORKERS * NUM_CLASSES}`, expect.stringMatching(/^after dispose: .*used after dispose\(\)/)]);
  });

  it("is what ends them: without it the workers keep the process alive", async () => {
    // Prepare
    const child = runChild(false);
    const classified = async (): Promise<void> => {
      while (!child.lines.some((line) => line.startsWith("classified"))) {
        if ((await Promise.race([child.exited, timeout(200)])) !== "still running") return;
      }
    };

    // Act
    await classified();
    const outcome = await Promise.race([child.exited, timeout(3_000)]);
    child.kill();

    // Assess
    expect(child.lines, child.stderr.join("")).toEqual([`classified ${WORKERS * NUM_CLASSES}`]);
    expect(outcome).toBe("still running");
  });
});

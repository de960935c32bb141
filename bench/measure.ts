import { Writable } from "node:stream";
import { openImageSource } from "../storage/archive/image-source.js";
import { LocalLocation } from "../storage/location.js";
import { measureIndexSpeed, sampleTar, type IndexSpeed } from "./archive-bench.js";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import type { BackendPreference } from "../model/tfjs/backend.js";
import type { Crop } from "../model/image/crop-types.js";
import { cropPlan, cropsForCount } from "../model/image/crops.js";
import { decodeImage } from "../model/image/decode.js";
import type { DecodedImage } from "../model/image/decode.js";
import type { CropCount } from "../model/image/crops.js";
import type { Engine, InputLayout } from "../model/engine.js";
import { measureEngines } from "../model/engine-meter.js";
import { loadEngine } from "../model/load.js";
import { rewriteSlowNodes } from "../model/ort/graph-edits/lrn-rewrite.js";
import { createOrtEngine } from "../model/ort/engine.js";
import { createCpuSession } from "../model/ort/graph-edits/layout.js";
import { preprocessFor } from "../model/preprocess.js";
import { CROP_VALUES, sampleCrops, uniqueCropWindows } from "../model/image/sampling.js";
import { readSynsets } from "../model/synsets.js";
import { readLabels } from "../scoring/labels.js";
import { ResultsWriter } from "../scoring/results.js";
import type { ImageInput } from "../scoring/scorer.js";
import { scoreImages } from "../scoring/scorer.js";
import { summarize } from "../scoring/summary.js";
import { withoutLrn } from "./lrn-reference.js";
import { createNullEngine } from "./null-engine.js";

/**
 * One measurement, run in its own process (bench/bench.ts spawns `node dist/bench/measure.js
 * '<task json>'`) so each peak RSS is that measurement's alone. The last stdout line is the
 * result as JSON.
 */
export type Task =
  | {
      readonly kind: "raw";
      /** "onnxruntime" runs the graph the pipeline runs (rewritten); "onnxruntime-unmodified" the file as stored. */
      readonly engine: "onnxruntime" | "onnxruntime-unmodified" | "tfjs";
      readonly backend?: BackendPreference;
      /** Refuse to run anywhere but a GPU (model/load.ts requireGpu). */
      readonly requireGpu?: boolean;
      readonly tfjsWorkers?: number;
      readonly batch: number;
      readonly threads: number;
      readonly allowSpinning?: boolean;
      /** Measure for at least this long after one warm-up call. */
      readonly seconds: number;
      readonly minCalls: number;
    }
  | {
      readonly kind: "pipeline";
      readonly engine: "onnxruntime" | "tfjs";
      readonly backend?: BackendPreference;
      readonly requireGpu?: boolean;
      readonly tfjsWorkers?: number;
      readonly batch: number;
      readonly threads: number;
      readonly images: number;
      readonly allowSpinning?: boolean;
      /** Crops per image. Default: 144. */
      readonly crops?: CropCount;
      /** Record RSS after this many images (the growth check's reference point). */
      readonly rssAfter?: number;
      /** Trace RSS every this many images. Default: `rssAfter`. */
      readonly rssEvery?: number;
      /** sharp's libvips operation cache on or off for this run (sharp.cache(false)). Default: sharp's own (on). */
      readonly sharpCache?: boolean;
    }
  | {
      /**
       * The feeder ceiling: `scoreImages` and the results writer with an engine that answers at
       * once, in the layout of the default GPU engine (tfjs, NHWC), so only the host's work counts.
       */
      readonly kind: "feeder";
      readonly batch: number;
      readonly images: number;
      readonly layout?: InputLayout;
      /**
       * "host": the engine takes crops the scorer sampled (what a GPU engine gets today);
       * "device": it takes images and windows and would cut the crops itself. Default "host".
       */
      readonly path?: "host" | "device";
      /** Where the photos are read from: loose files (default) or one tar of them, by GNU tar. */
      readonly input?: "files" | "tar";
    }
  | {
      /** `score` itself (runScoreJob, onnxruntime) on a folder or an archive, for its peak RSS. */
      readonly kind: "score-input";
      readonly input: string;
      readonly crops: CropCount;
      readonly threads: number;
    }
  | { readonly kind: "archive-index"; readonly archive: string }
  | {
      /**
       * Device-side cutting alone (model/tfjs/device-crops.ts) on a tfjs backend: the 144 crops of
       * `images` photos in calls of `batch`, upload included, each call waited for.
       */
      readonly kind: "device-cut";
      readonly backend: BackendPreference;
      readonly batch: number;
      readonly images: number;
      /** Cut only this many crops of each image (slow backends). Default: all 144. */
      readonly cropsPerImage?: number;
    }
  | { readonly kind: "plain-loop"; readonly threads: number; readonly images: number }
  | {
      /**
       * What the LRNs cost as the engine runs them: the rewritten graph against the same graph
       * with its LRN nodes removed (and against the earlier forms of the rewrite), in
       * alternating calls of `batch` crops for `seconds`.
       */
      readonly kind: "lrn-cost";
      readonly batch: number;
      readonly threads: number;
      readonly seconds: number;
    }
  | {
      /** onnxruntime's own profiler on the graph the pipeline runs: kernel time per op type. */
      readonly kind: "profile";
      readonly rewritten: boolean;
      readonly batch: number;
      readonly threads: number;
      readonly runs: number;
    };

export interface Measurement {
  /** "archive-index" only. */
  readonly indexSpeed?: IndexSpeed;
  readonly crops: number;
  readonly images?: number;
  readonly seconds: number;
  readonly cropsPerSec: number;
  readonly imagesPerSec?: number;
  readonly peakRssMB: number;
  readonly rssAfterMB?: number;
  readonly rssEndMB?: number;
  /** RSS after every `rssAfter` images, to tell a plateau from steady growth. */
  readonly rssTraceMB?: number[];
  /**
   * At the same points: V8's heap in use and memory outside it held by JS objects (Buffers,
   * typed arrays), to tell growth in JavaScript from growth in native code (libvips, glibc).
   */
  readonly heapTraceMB?: number[];
  readonly externalTraceMB?: number[];
  /** The engine's backend as it reports it ("cpu" for onnxruntime, "wasm", "tensorflow"). */
  readonly backend?: string;
  readonly note?: string;
  /** For "profile": kernel milliseconds per run by op type, largest first. */
  readonly opMsPerRun?: [op: string, ms: number][];
  /** For "lrn-cost": the reference graph's crops/s, and time per crop rewritten / reference (wall and process CPU). */
  readonly referenceCropsPerSec?: number;
  readonly ratio?: number;
  readonly cpuRatio?: number;
  /** For "lrn-cost": the same ratio for the earlier forms of the rewrite, measured alongside. */
  readonly earlierRatios?: {
    /** The band convolutions and the whole batch through the stem: the form before the block rows. */
    readonly bandsWholeBatch: number;
    /** The grouped bands with onnxruntime's layout reorders left around the LRN steps. */
    readonly groupedBandsReordered: number;
  };
  /** For scoring runs: the engine's device and the share of the run it had no call running (model/engine-meter.ts). */
  readonly device?: string;
  readonly idleShare?: number;
}

/** The repository root, from dist/bench/ when built or bench/ under tsx. */
export const REPO = fileURLToPath(new URL(import.meta.url.includes("/dist/bench/") ? "../../" : "../", import.meta.url));
export const SHARED = join(REPO, "../shared");
export const MODEL = join(SHARED, "models/bvlc-googlenet.onnx");
export const SAMPLES = join(SHARED, "imagenet/samples");

function statusMB(field: "VmHWM" | "VmRSS"): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/self/status", "utf8"));
  return match ? Number(match[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

/** The first `count` sample photos in name order, cycling if more are asked than exist. */
export async function samplePhotos(count: number): Promise<string[]> {
  const files = (await readdir(SAMPLES)).filter((f) => /\.jpe?g$/i.test(f)).sort();
  return Array.from({ length: count }, (_, i) => files[i % files.length] as string);
}

/** Engine-ready crops of real photos: `batch` crops cycled from the 144 of the first photos. */
async function readyBatch(batch: number, engine: Pick<Engine, "preprocess" | "inputLayout">): Promise<Float32Array> {
  const out = new Float32Array(batch * CROP_VALUES);
  const [file] = await samplePhotos(1);
  const image = await decodeImage(await readFile(join(SAMPLES, file as string)), { source: file as string, applyExifOrientation: false });
  const plan = cropPlan(image.width, image.height);
  for (let start = 0; start < batch; start += plan.length) {
    const crops = plan.slice(0, Math.min(plan.length, batch - start));
    sampleCrops(image, crops, { preprocess: engine.preprocess, layout: engine.inputLayout }, out, start * CROP_VALUES);
  }
  return out;
}

async function loadFor(task: Extract<Task, { kind: "raw" | "pipeline" }>): Promise<Engine> {
  const bytes = readFileSync(MODEL);
  if (task.engine === "onnxruntime-unmodified") {
    return createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", threads: task.threads, rewriteSlowNodes: false, softmaxed: true });
  }
  if (task.engine === "onnxruntime" && task.allowSpinning !== undefined) {
    return createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", threads: task.threads, softmaxed: true, allowSpinning: task.allowSpinning });
  }
  const { engine } = await loadEngine(bytes, {
    source: MODEL,
    engine: task.engine,
    threads: task.threads,
    ...(task.backend !== undefined ? { backend: task.backend } : {}),
    ...(task.tfjsWorkers !== undefined ? { tfjsWorkers: task.tfjsWorkers } : {}),
    ...(task.requireGpu === true ? { requireGpu: true } : {}),
  });
  return engine;
}

async function measureRaw(task: Extract<Task, { kind: "raw" }>): Promise<Measurement> {
  const engine = await loadFor(task);
  try {
    const input = await readyBatch(task.batch, engine);
    // The first call allocates the session's buffers; steady state is what a long run sees.
    await engine.classify(input, task.batch);
    let calls = 0;
    const start = performance.now();
    while (calls < task.minCalls || performance.now() - start < task.seconds * 1000) {
      await engine.classify(input, task.batch);
      calls++;
    }
    const seconds = (performance.now() - start) / 1000;
    const crops = calls * task.batch;
    return { crops, seconds, cropsPerSec: crops / seconds, peakRssMB: statusMB("VmHWM"), backend: engine.backend };
  } finally {
    await engine.dispose();
  }
}

interface ScoringRun {
  readonly images: number;
  /** Read the photos from one tar of them (at most 1000, each once) rather than as files. */
  readonly fromTar?: boolean;
  readonly batch: number;
  readonly crops: CropCount;
  readonly rssAfter?: number | undefined;
  readonly rssEvery?: number | undefined;
}

/**
 * `scoreImages` over the first `run.images` sample photos (cycled past 1000, with unique keys)
 * and the results writer, as `score` runs them; RSS is read after `rssAfter` images and every
 * `rssEvery` images. Crops count the windows the engine computed (coinciding ones once).
 */
async function scoreAndWrite(engine: Engine, run: ScoringRun): Promise<Measurement> {
  const files = await samplePhotos(run.images);
  const synsets = await readSynsets(join(SHARED, "imagenet/synset_words.txt"));
  const labels = await readLabels(join(SHARED, "imagenet/samples-val.txt"), { synsets });
  const out = await mkdtemp(join(tmpdir(), "googlenet-bench-"));
  const cleanups: (() => Promise<void>)[] = [];
  const computed = cropsForCount(run.crops);
  const rssEvery = run.rssEvery ?? run.rssAfter;
  try {
    // Same warm-up as the raw measurement, so the two are compared on equal terms.
    await engine.classify(new Float32Array(run.batch * CROP_VALUES), run.batch);
    // Keys must be unique when photos repeat (a long run cycles through the samples).
    const keys = files.map((file, i) => (i < 1000 ? file : `${Math.floor(i / 1000)}/${file}`));
    let readOf = (i: number): Promise<Uint8Array> => readFile(join(SAMPLES, files[i] as string));
    if (run.fromTar === true) {
      if (files.length > 1000) throw new RangeError("a tar of the sample photos holds each once: at most 1000 images");
      const tar = await sampleTar(SAMPLES, files);
      cleanups.push(tar.remove);
      const source = await openImageSource(new LocalLocation(tar.path));
      const read = source.reads(files.map((file) => `samples.tar/${file}`));
      readOf = (i) => read(`samples.tar/${files[i] as string}`);
    }
    const inputs: ImageInput[] = files.map((file, i) => ({
      key: keys[i] as string,
      label: labels.lookup(file),
      read: () => readOf(i),
    }));
    const info = { file: MODEL, sha256: "bench", flavour: engine.flavour };
    const writer = await ResultsWriter.open(out);
    const usage = measureEngines([engine]);
    let done = 0;
    let crops = 0;
    let rssAfterMB: number | undefined;
    const rssTraceMB: number[] = [];
    const heapTraceMB: number[] = [];
    const externalTraceMB: number[] = [];
    const start = performance.now();
    try {
      for await (const record of scoreImages(inputs, {
        models: [{ engine, info }],
        crops: run.crops,
        classNames: synsets.names,
        applyExifOrientation: false,
        batchCrops: run.batch,
      })) {
        await writer.append(record);
        if (!("error" in record)) {
          const plan = cropPlan(record.width, record.height);
          crops += uniqueCropWindows(computed.map((i) => plan[i] as Crop)).unique.length;
        }
        done++;
        if (done === run.rssAfter) rssAfterMB = statusMB("VmRSS");
        if (rssEvery !== undefined && done % rssEvery === 0) {
          const { heapUsed, external } = process.memoryUsage();
          rssTraceMB.push(Math.round(statusMB("VmRSS")));
          heapTraceMB.push(Math.round(heapUsed / 2 ** 20));
          externalTraceMB.push(Math.round(external / 2 ** 20));
        }
      }
      await writer.finish(keys, summarize(writer.records(keys), [info], run.crops));
    } finally {
      await writer.close();
    }
    const seconds = (performance.now() - start) / 1000;
    const { device, idleShare } = usage.finish();
    return {
      crops,
      images: done,
      seconds,
      cropsPerSec: crops / seconds,
      imagesPerSec: done / seconds,
      peakRssMB: statusMB("VmHWM"),
      ...(rssAfterMB !== undefined ? { rssAfterMB, rssEndMB: statusMB("VmRSS"), rssTraceMB, heapTraceMB, externalTraceMB } : {}),
      backend: engine.backend,
      device,
      idleShare,
    };
  } finally {
    await rm(out, { recursive: true, force: true });
    for (const cleanup of cleanups) await cleanup();
  }
}

async function measurePipeline(task: Extract<Task, { kind: "pipeline" }>): Promise<Measurement> {
  if (task.sharpCache !== undefined) sharp.cache(task.sharpCache);
  const engine = await loadFor(task);
  try {
    return await scoreAndWrite(engine, {
      images: task.images,
      batch: task.batch,
      crops: task.crops ?? 144,
      rssAfter: task.rssAfter,
      rssEvery: task.rssEvery,
    });
  } finally {
    await engine.dispose();
  }
}

async function measureFeeder(task: Extract<Task, { kind: "feeder" }>): Promise<Measurement> {
  const engine = createNullEngine({ layout: task.layout ?? "nhwc", windows: task.path === "device" });
  return scoreAndWrite(engine, { images: task.images, batch: task.batch, crops: 144, fromTar: task.input === "tar" });
}

/** `score` as a user runs it, on a folder or an archive, at `crops`: images/s and peak RSS. */
async function measureScoreInput(task: Extract<Task, { kind: "score-input" }>): Promise<Measurement> {
  const { runScoreJob } = await import("../scoring/score-job.js");
  const out = await mkdtemp(join(tmpdir(), "googlenet-bench-score-"));
  const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });
  try {
    const start = performance.now();
    const result = await runScoreJob({
      input: new LocalLocation(task.input),
      out,
      models: [MODEL],
      synsets: join(SHARED, "imagenet/synset_words.txt"),
      labels: join(SHARED, "imagenet/samples-val.txt"),
      engine: "onnxruntime",
      crops: task.crops,
      threads: task.threads,
      labelCheck: false,
      progress: false,
      stdout: quiet,
      stderr: quiet as unknown as NodeJS.WriteStream,
    });
    const seconds = (performance.now() - start) / 1000;
    const images = result.summary.scored;
    return { crops: images * task.crops, images, seconds, cropsPerSec: (images * task.crops) / seconds, imagesPerSec: images / seconds, peakRssMB: statusMB("VmHWM") };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

async function measureDeviceCut(task: Extract<Task, { kind: "device-cut" }>): Promise<Measurement> {
  const { selectBackend } = await import("../model/tfjs/backend.js");
  const { DeviceCropper } = await import("../model/tfjs/device-crops.js");
  const tf = await import("@tensorflow/tfjs-core");
  const { backend } = await selectBackend(task.backend, { log: () => undefined });
  const files = await samplePhotos(task.images);
  const images: DecodedImage[] = [];
  for (const file of files) images.push(await decodeImage(await readFile(join(SAMPLES, file)), { source: file, applyExifOrientation: false }));
  const cropper = new DeviceCropper(preprocessFor("bvlc"), "nhwc");
  const cutAll = (list: typeof images): number => {
    let crops = 0;
    for (const image of list) {
      const plan = cropPlan(image.width, image.height).slice(0, task.cropsPerImage ?? 144);
      for (let start = 0; start < plan.length; start += task.batch) {
        const cut = cropper.cut([{ image, crops: plan.slice(start, start + task.batch) }]);
        // One number back: the cut is computed without timing a 10 MB download.
        tf.tidy(() => tf.sum(cut).dataSync());
        cut.dispose();
        crops += Math.min(task.batch, plan.length - start);
      }
    }
    return crops;
  };
  try {
    cutAll(images.slice(0, 1));
    const start = performance.now();
    const crops = cutAll(images);
    const seconds = (performance.now() - start) / 1000;
    return { crops, images: images.length, seconds, cropsPerSec: crops / seconds, imagesPerSec: images.length / seconds, peakRssMB: statusMB("VmHWM"), backend };
  } finally {
    cropper.dispose();
  }
}

/**
 * The baseline: what a user writes without this tool's work: decode, sample all 144,
 * run the ONNX file as stored through onnxruntime's defaults in batches of 48, average.
 */
async function measurePlainLoop(task: Extract<Task, { kind: "plain-loop" }>): Promise<Measurement> {
  const files = await samplePhotos(task.images);
  const session = await ort.InferenceSession.create(MODEL, { intraOpNumThreads: task.threads });
  const preprocess = preprocessFor("bvlc");
  const batch = new Float32Array(48 * CROP_VALUES);
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  try {
    await session.run({ [inputName as string]: new ort.Tensor("float32", batch, [48, 3, 224, 224]) });
    const start = performance.now();
    for (const file of files) {
      const image = await decodeImage(await readFile(join(SAMPLES, file)), { source: file, applyExifOrientation: false });
      const plan = cropPlan(image.width, image.height);
      const mean = new Float64Array(1000);
      for (let from = 0; from < plan.length; from += 48) {
        sampleCrops(image, plan.slice(from, from + 48), { preprocess, layout: "nchw" }, batch);
        const results = await session.run({ [inputName as string]: new ort.Tensor("float32", batch, [48, 3, 224, 224]) });
        const probabilities = results[outputName as string]?.data as Float32Array;
        for (let i = 0; i < probabilities.length; i++) mean[i % 1000] = (mean[i % 1000] as number) + (probabilities[i] as number) / 144;
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const crops = files.length * 144;
    return {
      crops,
      images: files.length,
      seconds,
      cropsPerSec: crops / seconds,
      imagesPerSec: files.length / seconds,
      peakRssMB: statusMB("VmHWM"),
    };
  } finally {
    await session.release();
  }
}

async function measureProfile(task: Extract<Task, { kind: "profile" }>): Promise<Measurement> {
  const bytes = readFileSync(MODEL);
  const rewrite = task.rewritten ? rewriteSlowNodes(bytes, MODEL) : undefined;
  const folder = await mkdtemp(join(tmpdir(), "googlenet-profile-"));
  // The engine's own session options (model/ort/engine.ts), plus the profiler.
  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: task.threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    extra: { session: { intra_op: { allow_spinning: "0" } } },
    enableProfiling: true,
    profileFilePrefix: join(folder, "ort"),
  };
  // The rewritten graph as the engine loads it, with the LRN steps on the blocked tensors.
  const session = rewrite
    ? (await createCpuSession(rewrite.bytes, rewrite.lrnChains, options, MODEL)).session
    : await ort.InferenceSession.create(bytes, options);
  try {
    const input = await readyBatch(task.batch, { preprocess: preprocessFor("bvlc"), inputLayout: "nchw" });
    const feeds = () => ({ [session.inputNames[0] as string]: new ort.Tensor("float32", input, [task.batch, 3, 224, 224]) });
    await session.run(feeds());
    const start = performance.now();
    for (let r = 0; r < task.runs; r++) await session.run(feeds());
    const seconds = (performance.now() - start) / 1000;
    session.endProfiling();
    const [file] = (await readdir(folder)).filter((name) => name.endsWith(".json"));
    const events = JSON.parse(await readFile(join(folder, file as string), "utf8")) as {
      cat?: string;
      name?: string;
      dur?: number;
      args?: { op_name?: string };
    }[];
    const perOp = new Map<string, number>();
    for (const event of events) {
      if (event.cat !== "Node" || !event.name?.endsWith("_kernel_time")) continue;
      const op = event.args?.op_name ?? "?";
      perOp.set(op, (perOp.get(op) ?? 0) + (event.dur ?? 0));
    }
    // The profile holds the warm-up run too.
    const opMsPerRun = [...perOp]
      .map(([op, micros]): [string, number] => [op, micros / 1000 / (task.runs + 1)])
      .sort((a, b) => b[1] - a[1]);
    const crops = task.runs * task.batch;
    return { crops, seconds, cropsPerSec: crops / seconds, peakRssMB: statusMB("VmHWM"), opMsPerRun };
  } finally {
    await session.release();
    await rm(folder, { recursive: true, force: true });
  }
}

async function measureLrnCost(task: Extract<Task, { kind: "lrn-cost" }>): Promise<Measurement> {
  const bytes = readFileSync(MODEL);
  const options = { source: MODEL, flavour: "bvlc" as const, threads: task.threads, softmaxed: true };
  const unmodified = { ...options, rewriteSlowNodes: false };
  // The engine's graph first and the LRN-free reference second; then two earlier forms the
  // engine options still reach, so one run shows what each step gained: the band convolutions
  // with the batch whole through the stem, and the grouped bands with onnxruntime's layout
  // reorders kept. (Forms removed from the code have their last figures in docs/speed.md.)
  const engines = [
    await createOrtEngine(bytes, options),
    await createOrtEngine(withoutLrn(bytes), unmodified),
    await createOrtEngine(bytes, { ...options, blockRows: false, stemCropsPerPart: 0 }),
    await createOrtEngine(bytes, { ...options, blockedLrnSteps: false }),
  ] as const;
  try {
    const input = await readyBatch(task.batch, engines[0]);
    for (const engine of engines) await engine.classify(input, task.batch);
    const wall = engines.map(() => 0);
    const cpu = engines.map(() => 0);
    const order = engines.map((_, k) => k);
    let rounds = 0;
    const start = performance.now();
    // Alternating, in both orders, so load from other processes falls on all alike.
    while (rounds < 3 || performance.now() - start < task.seconds * 1000) {
      for (const k of rounds % 2 === 0 ? order : [...order].reverse()) {
        const cpuBefore = process.cpuUsage();
        const before = performance.now();
        await (engines[k] as Engine).classify(input, task.batch);
        wall[k] = (wall[k] as number) + performance.now() - before;
        const used = process.cpuUsage(cpuBefore);
        cpu[k] = (cpu[k] as number) + (used.user + used.system) / 1000;
      }
      rounds++;
    }
    const crops = rounds * task.batch;
    const [current, reference, bands, reordered] = wall as [number, number, number, number];
    return {
      crops,
      seconds: current / 1000,
      cropsPerSec: (crops * 1000) / current,
      referenceCropsPerSec: (crops * 1000) / reference,
      ratio: current / reference,
      cpuRatio: (cpu[0] as number) / (cpu[1] as number),
      earlierRatios: {
        bandsWholeBatch: bands / reference,
        groupedBandsReordered: reordered / reference,
      },
      peakRssMB: statusMB("VmHWM"),
    };
  } finally {
    for (const engine of engines) await engine.dispose();
  }
}

export async function measure(task: Task): Promise<Measurement> {
  if (task.kind === "lrn-cost") return measureLrnCost(task);
  if (task.kind === "profile") return measureProfile(task);
  if (task.kind === "raw") return measureRaw(task);
  if (task.kind === "pipeline") return measurePipeline(task);
  if (task.kind === "feeder") return measureFeeder(task);
  if (task.kind === "score-input") return measureScoreInput(task);
  if (task.kind === "archive-index") {
    const speed = await measureIndexSpeed(task.archive);
    return { crops: 0, images: speed.members, seconds: 0, cropsPerSec: 0, imagesPerSec: 0, peakRssMB: statusMB("VmHWM"), indexSpeed: speed };
  }
  if (task.kind === "device-cut") return measureDeviceCut(task);
  return measurePlainLoop(task);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const task = JSON.parse(process.argv[2] ?? "{}") as Task;
  measure(task).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      // tfjs pool workers and onnxruntime's threads must not keep a finished measurement alive.
      process.exit(0);
    },
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}

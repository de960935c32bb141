import { sampleTar, type IndexSpeed } from "./archive-bench.js";
import { accessSync } from "node:fs";
import { availableParallelism, cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import type { BackendPreference } from "../model/tfjs/backend.js";
import { ConfigurationError } from "../model/errors.js";
import { nativeTensorflowLoads } from "../model/load.js";
import { DEFAULT_BATCH_CROPS } from "../scoring/scorer.js";
import { runGpu } from "./gpu.js";
import { MODEL, SAMPLES, samplePhotos } from "./measure.js";
import type { Measurement } from "./measure.js";
import { Report, fixed, round, table } from "./report.js";
import { run } from "./run-task.js";
import { runSoak } from "./soak.js";

/**
 * `npm run bench [-- --quick] [-- --batch N --threads N]`: raw engine throughput, the 144-crop
 * pipeline end to end with each engine, the plain-loop baseline of issue 5, peak RSS, the
 * feeder ceiling (scoreImages with an engine that answers at once) and what the LRNs cost
 * onnxruntime, on ../shared/models/bvlc-googlenet.onnx and real photos from
 * ../shared/imagenet/samples. Each measurement runs in its own child process so peaks do not
 * mix; the last stdout line is one JSON object (see README, "Speed").
 *
 * More: `--soak` adds the memory soak (`--soak-images N` at 1 crop, default 10,000;
 * `--soak-images-144 N`, default 1,000; `--soak-only` runs nothing else; `--child-env K=V`
 * sets the measuring processes' environment and `--soak-sharp-cache on|off` sharp's cache, to
 * try remedies), and `--gpu` measures the tfjs engine on a GPU instead, refusing where none
 * loads.
 */

interface Settings {
  readonly quick: boolean;
  readonly batch: number;
  readonly threads: number;
  /** Images of the onnxruntime pipeline run, which is also the RSS growth run. */
  readonly ortImages: number;
  /** Image after which the growth check takes its reference RSS. */
  readonly rssAfter: number;
  readonly tfjsImages: number;
  readonly plainImages: number;
  /** Seconds per raw measurement. */
  readonly rawSeconds: number;
  readonly sweep: boolean;
  /** Where onnxruntime's time goes, from its own profiler. */
  readonly profile: boolean;
  /** Images of the feeder measurement (144 crops each). */
  readonly feederImages: number;
  /** Seconds of alternating calls for lrnCostRatio. */
  readonly lrnSeconds: number;
  /** The memory soak: images at 1 crop and at 144 crops; undefined without --soak. */
  readonly soak: { readonly oneCrop: number; readonly allCrops: number; readonly only: boolean; readonly sharpCache: boolean | undefined } | undefined;
  /** --gpu: measure the tfjs engine on native TensorFlow with a GPU, or refuse. */
  readonly gpu: boolean;
  /** --child-env KEY=VALUE (repeatable): environment of the measuring processes, to try a remedy. */
  readonly childEnv: Record<string, string>;
}

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new ConfigurationError(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

function onOff(name: string, value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === "on" || value === "off") return value === "on";
  throw new ConfigurationError(`--${name} must be on or off, got "${value}"`);
}

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      batch: { type: "string" },
      threads: { type: "string" },
      images: { type: "string" },
      "tfjs-images": { type: "string" },
      "no-sweep": { type: "boolean", default: false },
      profile: { type: "boolean" },
      "feeder-images": { type: "string" },
      soak: { type: "boolean", default: false },
      "soak-only": { type: "boolean", default: false },
      "soak-images": { type: "string" },
      "soak-images-144": { type: "string" },
      gpu: { type: "boolean", default: false },
      "child-env": { type: "string", multiple: true },
      "soak-sharp-cache": { type: "string" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const ortImages = positive("images", values.images, quick ? 6 : 200);
  const soak = values.soak === true || values["soak-only"] === true;
  return {
    quick,
    batch: positive("batch", values.batch, DEFAULT_BATCH_CROPS),
    threads: positive("threads", values.threads, availableParallelism()),
    ortImages,
    rssAfter: Math.min(20, ortImages),
    tfjsImages: positive("tfjs-images", values["tfjs-images"], quick ? 1 : 12),
    plainImages: quick ? 4 : 20,
    rawSeconds: quick ? 4 : 10,
    sweep: !quick && values["no-sweep"] !== true,
    profile: values.profile ?? !quick,
    feederImages: positive("feeder-images", values["feeder-images"], quick ? 30 : 200),
    lrnSeconds: quick ? 20 : 90,
    soak: soak
      ? {
          oneCrop: positive("soak-images", values["soak-images"], 10_000),
          allCrops: positive("soak-images-144", values["soak-images-144"], 1_000),
          only: values["soak-only"] === true,
          sharpCache: onOff("soak-sharp-cache", values["soak-sharp-cache"]),
        }
      : undefined,
    gpu: values.gpu === true,
    childEnv: Object.fromEntries(
      (values["child-env"] ?? []).map((pair) => {
        const at = pair.indexOf("=");
        if (at < 1) throw new ConfigurationError(`--child-env takes KEY=VALUE, got "${pair}"`);
        return [pair.slice(0, at), pair.slice(at + 1)];
      }),
    ),
  };
}

/** The engines alone and in the pipeline, as issue 5 measured them; the figures the JSON line is built from. */
interface EngineFigures {
  readonly ortRaw: Measurement;
  readonly ortRawBefore: Measurement;
  readonly tfjsRaw: Measurement;
  readonly poolSpeedup: number | undefined;
  readonly ortPipeline: Measurement;
  readonly tfjsPipeline: Measurement;
  readonly plain: Measurement;
  readonly pipelineBackend: BackendPreference;
}

async function sweep(report: Report, threads: number): Promise<void> {
  const rows: string[][] = [];
  for (const t of [...new Set([1, threads])]) {
    for (const b of [1, 4, 8, 16, 32, 48]) {
      const m = await run({ kind: "raw", engine: "onnxruntime", batch: b, threads: t, seconds: 4, minCalls: 2 });
      rows.push([String(t), String(b), fixed(m.cropsPerSec), fixed(1000 / m.cropsPerSec, 2), fixed(m.peakRssMB, 0)]);
      report.log(`  sweep threads ${t} batch ${b}: ${fixed(m.cropsPerSec)} crops/s, peak RSS ${fixed(m.peakRssMB, 0)} MB`);
    }
  }
  report.log("\nonnxruntime alone (rewritten graph), by batch and threads:");
  report.log(table(["threads", "batch", "crops/s", "ms/crop", "peak RSS MB"], rows));
  report.log("");
}

async function measureEngines(report: Report, settings: Settings): Promise<EngineFigures> {
  const { batch, threads, rawSeconds } = settings;
  const ortRaw = await run({ kind: "raw", engine: "onnxruntime", batch, threads, seconds: rawSeconds, minCalls: 3 });
  report.add("onnxruntime alone, rewritten graph", ortRaw);
  if (!settings.quick) {
    // The engine sleeps idle threads (model/ort/engine.ts allowSpinning); this row shows what spinning would give alone.
    const spinning = await run({ kind: "raw", engine: "onnxruntime", batch, threads, seconds: rawSeconds, minCalls: 3, allowSpinning: true });
    report.add("onnxruntime alone, rewritten, spinning threads", spinning);
  }
  const ortRawBefore = await run({ kind: "raw", engine: "onnxruntime-unmodified", batch, threads, seconds: rawSeconds, minCalls: 3 });
  report.add("onnxruntime alone, file as stored (before)", ortRawBefore);

  const tfjsBackends: BackendPreference[] = ["wasm"];
  if (await nativeTensorflowLoads()) tfjsBackends.unshift("tensorflow");
  else report.notes.push("tfjs-node does not load here: no tensorflow backend measured");
  const tfjsRawSingle: Partial<Record<string, Measurement>> = {};
  for (const backend of tfjsBackends) {
    tfjsRawSingle[backend] = await run({ kind: "raw", engine: "tfjs", backend, tfjsWorkers: 1, batch, threads, seconds: rawSeconds, minCalls: 1 });
    report.add(`tfjs ${backend} alone, this thread`, tfjsRawSingle[backend] as Measurement);
  }
  // The pipeline's tfjs engine: for wasm, the worker pool over every core.
  const pipelineBackend = tfjsBackends[0] as BackendPreference;
  let tfjsRaw = tfjsRawSingle[pipelineBackend] as Measurement;
  let poolSpeedup: number | undefined;
  if (pipelineBackend !== "tensorflow" && availableParallelism() > 1) {
    try {
      tfjsRaw = await run({ kind: "raw", engine: "tfjs", backend: pipelineBackend, batch, threads, seconds: rawSeconds, minCalls: 1 });
      poolSpeedup = tfjsRaw.cropsPerSec / (tfjsRawSingle[pipelineBackend] as Measurement).cropsPerSec;
      report.add(`tfjs ${pipelineBackend} alone, pool of ${availableParallelism()} workers`, tfjsRaw, `x${fixed(poolSpeedup, 2)} vs one thread`);
    } catch (error) {
      report.notes.push(`tfjs worker pool not measured: ${(error as Error).message}`);
    }
  }

  const ortPipeline = await run({ kind: "pipeline", engine: "onnxruntime", batch, threads, images: settings.ortImages, rssAfter: settings.rssAfter });
  const growth = rssGrowth(ortPipeline);
  report.add(
    `pipeline onnxruntime, ${ortPipeline.images} images x 144`,
    ortPipeline,
    `RSS ${fixed(ortPipeline.rssAfterMB, 0)} MB after ${settings.rssAfter} images, ${fixed(ortPipeline.rssEndMB, 0)} MB at the end (${growth === undefined ? "-" : `${(growth * 100).toFixed(1)}%`})`,
  );
  if (ortPipeline.rssTraceMB) report.log(`  RSS every ${settings.rssAfter} images (MB): ${ortPipeline.rssTraceMB.join(" ")}`);
  const tfjsPipeline = await run({ kind: "pipeline", engine: "tfjs", backend: pipelineBackend, batch, threads, images: settings.tfjsImages });
  report.add(`pipeline tfjs ${tfjsPipeline.backend ?? pipelineBackend}, ${tfjsPipeline.images} images x 144`, tfjsPipeline);
  const plain = await run({ kind: "plain-loop", threads, images: settings.plainImages });
  report.add(`plain loop: file as stored, batches of 48, ${plain.images} images`, plain);
  return { ortRaw, ortRawBefore, tfjsRaw, poolSpeedup, ortPipeline, tfjsPipeline, plain, pipelineBackend };
}

function rssGrowth(m: Measurement): number | undefined {
  return m.rssAfterMB && m.rssEndMB ? m.rssEndMB / m.rssAfterMB - 1 : undefined;
}

async function profile(report: Report, batch: number, threads: number): Promise<void> {
  const profiles: Measurement[] = [];
  for (const rewritten of [false, true]) profiles.push(await run({ kind: "profile", rewritten, batch, threads, runs: 3 }));
  const ops = [...new Set(profiles.flatMap((p) => (p.opMsPerRun ?? []).map(([op]) => op)))];
  const msOf = (p: Measurement, op: string) => p.opMsPerRun?.find(([name]) => name === op)?.[1] ?? 0;
  const total = (p: Measurement) => (p.opMsPerRun ?? []).reduce((sum, [, ms]) => sum + ms, 0);
  const [before, after] = profiles as [Measurement, Measurement];
  report.log(`\nonnxruntime's profiler, kernel ms per run of ${batch} crops at ${threads} threads (file as stored | rewritten):`);
  report.log(
    table(
      ["op", "stored ms", "stored %", "rewritten ms", "rewritten %"],
      ops
        .sort((a, b) => msOf(after, b) - msOf(after, a))
        .filter((op) => msOf(before, op) + msOf(after, op) >= 0.05)
        .map((op) => [op, fixed(msOf(before, op)), fixed((100 * msOf(before, op)) / total(before)), fixed(msOf(after, op)), fixed((100 * msOf(after, op)) / total(after))]),
    ),
  );
  report.log(`kernel total ${fixed(total(before))} ms | ${fixed(total(after))} ms per run\n`);
}

/**
 * Issue 11's figures: the feeder ceiling for the default GPU engine's path with an engine that
 * answers at once, and what the LRNs cost onnxruntime against the graph without them. The
 * default GPU engine (tfjs on native TensorFlow) cuts its crops on the device, so its feeder is
 * the host's work up to handing over images and windows (`feederCropsPerSec`); the host-sampled
 * feeder (`feederHostCropsPerSec`) is the path of onnxruntime on CUDA and of tfjs on wasm/cpu.
 */
async function measureFeederAndLrn(report: Report, settings: Settings, ortRaw: Measurement): Promise<Record<string, unknown>> {
  const { batch, threads } = settings;
  const hostFeeder = await run({ kind: "feeder", batch, images: settings.feederImages });
  report.add(`feeder ceiling, crops sampled on the host (onnxruntime CUDA's path), engine answering at once, ${hostFeeder.images} images x 144`, hostFeeder, `x${fixed(hostFeeder.cropsPerSec / ortRaw.cropsPerSec)} onnxruntime alone`);
  const tarFeeder = await run({ kind: "feeder", batch, images: settings.feederImages, input: "tar" });
  report.add(`feeder ceiling, the same photos read from one tar (GNU tar), ${tarFeeder.images} images x 144`, tarFeeder, `x${fixed(tarFeeder.cropsPerSec / hostFeeder.cropsPerSec, 3)} loose files (target >= 0.95)`);
  const tar = await sampleTar(SAMPLES, await samplePhotos(1000));
  const index = await run({ kind: "archive-index", archive: tar.path }).finally(() => tar.remove());
  const speed = index.indexSpeed as IndexSpeed;
  report.log(
    `archive index, ${speed.members} members, ${speed.archiveMB} MB: by offsets ${fixed(speed.indexByOffsetsMBps, 0)} MB/s, read through (S3, gzip) ${fixed(speed.indexStreamedMBps, 0)} MB/s, ` +
      `beside a plain sequential read ${fixed(speed.sequentialReadMBps, 0)} MB/s`,
  );
  const feeder = await run({ kind: "feeder", batch, images: settings.feederImages, path: "device" });
  report.add(`feeder ceiling, crops cut on the device (tfjs GPU's path: images and windows handed over), ${feeder.images} images x 144`, feeder, `x${fixed(feeder.cropsPerSec / ortRaw.cropsPerSec)} onnxruntime alone`);
  const deviceCut: Record<string, number> = {};
  // Slow on these backends (cutting is for GPUs): the quick run cuts three batches on wasm only.
  const cutOn: [BackendPreference, number][] = settings.quick ? [["wasm", 48]] : [["wasm", 144], ["cpu", 144]];
  for (const [backend, cropsPerImage] of cutOn) {
    const cut = await run({ kind: "device-cut", backend, batch, images: 1, cropsPerImage });
    report.add(`device-side cutting alone on tfjs ${backend} (upload, gathers, blends), ${cut.crops} crops`, cut);
    deviceCut[backend] = round(cut.cropsPerSec);
  }
  const lrn = await run({ kind: "lrn-cost", batch, threads, seconds: settings.lrnSeconds });
  report.add(
    "onnxruntime, rewritten graph, alternating with the LRN-free graph and the earlier forms",
    lrn,
    `LRN-free ${fixed(lrn.referenceCropsPerSec)} crops/s: x${fixed(lrn.ratio, 3)} time per crop (CPU time x${fixed(lrn.cpuRatio, 3)}); ` +
      `band convolutions, batch whole x${fixed(lrn.earlierRatios?.bandsWholeBatch, 3)}, ` +
      `with the layout reorders kept x${fixed(lrn.earlierRatios?.groupedBandsReordered, 3)}`,
  );
  return {
    feederCropsPerSec: round(feeder.cropsPerSec),
    feederToOrtRaw: round(feeder.cropsPerSec / ortRaw.cropsPerSec, 1),
    feederPeakRssMB: round(feeder.peakRssMB, 0),
    feederHostCropsPerSec: round(hostFeeder.cropsPerSec),
    feederHostToOrtRaw: round(hostFeeder.cropsPerSec / ortRaw.cropsPerSec, 1),
    archiveFeederCropsPerSec: round(tarFeeder.cropsPerSec),
    archiveFeederToFiles: round(tarFeeder.cropsPerSec / hostFeeder.cropsPerSec, 3),
    archiveIndex: { ...speed, sequentialReadMBps: round(speed.sequentialReadMBps, 0), indexByOffsetsMBps: round(speed.indexByOffsetsMBps, 0), indexStreamedMBps: round(speed.indexStreamedMBps, 0) },
    deviceCutCropsPerSec: deviceCut,
    lrnCostRatio: round(lrn.ratio ?? 0, 3),
    lrnCostRatioCpu: round(lrn.cpuRatio ?? 0, 3),
    lrnCostRatioBands: round(lrn.earlierRatios?.bandsWholeBatch ?? 0, 3),
    lrnCostRatioReordersKept: round(lrn.earlierRatios?.groupedBandsReordered ?? 0, 3),
    lrnFreeCropsPerSec: round(lrn.referenceCropsPerSec ?? 0),
  };
}

function engineJson(f: EngineFigures, settings: Settings): Record<string, unknown> {
  const ortEfficiency = f.ortPipeline.cropsPerSec / f.ortRaw.cropsPerSec;
  const tfjsEfficiency = f.tfjsPipeline.cropsPerSec / f.tfjsRaw.cropsPerSec;
  const speedup = (f.ortPipeline.imagesPerSec ?? 0) / (f.plain.imagesPerSec ?? 1);
  const growth = rssGrowth(f.ortPipeline);
  return {
    ortRawCropsPerSec: round(f.ortRaw.cropsPerSec),
    ortPipelineCropsPerSec: round(f.ortPipeline.cropsPerSec),
    ortEfficiency: round(ortEfficiency, 3),
    tfjsRawCropsPerSec: round(f.tfjsRaw.cropsPerSec),
    tfjsPipelineCropsPerSec: round(f.tfjsPipeline.cropsPerSec),
    tfjsEfficiency: round(tfjsEfficiency, 3),
    peakRssMB: round(Math.max(f.ortPipeline.peakRssMB, f.tfjsPipeline.peakRssMB), 0),
    backend: f.tfjsPipeline.backend ?? f.pipelineBackend,
    batch: settings.batch,
    threads: settings.threads,
    ortSpeedupVsPlainLoop: round(speedup, 3),
    ortRewriteSpeedup: round(f.ortRaw.cropsPerSec / f.ortRawBefore.cropsPerSec, 3),
    ...(f.poolSpeedup !== undefined ? { tfjsPoolSpeedup: round(f.poolSpeedup, 3) } : {}),
    ortPipelineImagesPerSec: round(f.ortPipeline.imagesPerSec ?? 0, 3),
    tfjsPipelineImagesPerSec: round(f.tfjsPipeline.imagesPerSec ?? 0, 3),
    ortPeakRssMB: round(f.ortPipeline.peakRssMB, 0),
    tfjsPeakRssMB: round(f.tfjsPipeline.peakRssMB, 0),
    ...(growth !== undefined ? { rssGrowth: round(growth, 3), rssGrowthImages: [settings.rssAfter, f.ortPipeline.images] } : {}),
  };
}

async function main(): Promise<void> {
  const settings = parseSettings(process.argv.slice(2));
  const { batch, threads } = settings;
  const cpuModel = cpus()[0]?.model ?? "unknown";
  const report = new Report();
  const started = performance.now();
  const mode = settings.gpu ? " (--gpu)" : settings.soak?.only ? " (--soak-only)" : settings.quick ? " (--quick)" : "";
  report.log(`# googlenet-eval bench${mode}: ${cpuModel}, ${availableParallelism()} cores, node ${process.version}`);
  report.log(`batch ${batch}, onnxruntime threads ${threads}, load average at start ${report.loadAt()}`);

  let result: Record<string, unknown> = {};
  if (settings.gpu) {
    result = await runGpu(report, { batch, threads, rawSeconds: settings.rawSeconds, images: settings.tfjsImages, feederImages: settings.feederImages });
  } else {
    if (settings.soak?.only !== true) {
      if (settings.sweep) await sweep(report, threads);
      const figures = await measureEngines(report, settings);
      const feederAndLrn = await measureFeederAndLrn(report, settings, figures.ortRaw);
      if (settings.profile) await profile(report, batch, threads);
      result = { ...engineJson(figures, settings), ...feederAndLrn };
    }
    if (settings.soak) result = { ...result, ...(await runSoak(report, { ...settings.soak, batch, threads, env: settings.childEnv })) };
    report.table();
    summarise(report, result);
  }
  for (const note of report.notes) report.log(`note: ${note}`);
  report.log(`load average at end ${report.loadAt()}; ${((performance.now() - started) / 1000).toFixed(0)} s in all`);
  report.log(JSON.stringify({ ...result, cpuModel, loadAverage: round(loadavg()[0] ?? 0, 2) }));
}

/** The ratios the issues set targets for, in words. */
function summarise(report: Report, result: Record<string, unknown>): void {
  const n = (key: string) => (typeof result[key] === "number" ? (result[key] as number) : undefined);
  if (n("ortEfficiency") !== undefined) {
    report.log(`onnxruntime efficiency (pipeline / alone) ${fixed(n("ortEfficiency"), 3)}; tfjs efficiency ${fixed(n("tfjsEfficiency"), 3)}`);
    report.log(`144-crop score with onnxruntime vs the plain loop: x${fixed(n("ortSpeedupVsPlainLoop"), 2)} images/s`);
    report.log(`rewrite: x${fixed(n("ortRewriteSpeedup"), 2)} crops/s for onnxruntime alone`);
    report.log(`feeder ceiling, tfjs GPU's path (crops cut on the device) ${fixed(n("feederCropsPerSec"))} crops/s = x${fixed(n("feederToOrtRaw"))} onnxruntime alone (target >= 80); crops sampled on the host ${fixed(n("feederHostCropsPerSec"))} crops/s = x${fixed(n("feederHostToOrtRaw"))}`);
    report.log(
      `LRN cost: rewritten graph x${fixed(n("lrnCostRatio"), 3)} the time per crop of the graph without LRN (target <= 1.12); ` +
        `band convolutions, batch whole x${fixed(n("lrnCostRatioBands"), 3)}; layout reorders kept x${fixed(n("lrnCostRatioReordersKept"), 3)}`,
    );
    report.log(`pipeline crops/s count the crops the engine computed (coinciding windows of square images once); images/s is per image of 144 crops`);
  }
  for (const key of ["soak1", "soak144"] as const) {
    const soak = result[key] as { images: number; crops: number; rssGrowth: number; rssAfterImages: number } | undefined;
    if (soak) report.log(`soak ${soak.images} images x ${soak.crops}: RSS ${(100 * soak.rssGrowth).toFixed(1)}% from image ${soak.rssAfterImages} to the end (target <= 10%)`);
  }
  const archive = result.soakArchive as { archiveMB: number; peakRssRatio: number } | undefined;
  if (archive) report.log(`soak on a ${archive.archiveMB} MB tar: peak RSS x${fixed(archive.peakRssRatio, 3)} the same photos as files (target <= 1.1)`);
  const tar = n("archiveFeederToFiles");
  if (tar !== undefined) report.log(`feeder ceiling reading a tar: x${fixed(tar, 3)} loose files (target >= 0.95)`);
}

// A missing model fails here, naming the file, not after minutes of measuring.
try {
  accessSync(MODEL);
} catch (error) {
  process.stderr.write(`bench: cannot read ${MODEL}: ${(error as Error).message}\n`);
  process.exit(1);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});

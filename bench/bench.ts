import { spawn } from "node:child_process";
import { accessSync } from "node:fs";
import { availableParallelism, cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { BackendPreference } from "../model/backend.js";
import { ConfigurationError } from "../model/errors.js";
import { nativeTensorflowLoads } from "../model/load.js";
import { DEFAULT_BATCH_CROPS } from "../scoring/scorer.js";
import { MODEL } from "./measure.js";
import type { Measurement, Task } from "./measure.js";

/**
 * `npm run bench [-- --quick] [-- --batch N --threads N]`: raw engine throughput, the 144-crop
 * pipeline end to end with each engine, the plain-loop baseline of issue 5, and peak RSS, on
 * ../shared/models/bvlc-googlenet.onnx and real photos from ../shared/imagenet/samples. Each
 * measurement runs in its own child process so peaks do not mix; the last stdout line is one
 * JSON object (see README, "Benchmark").
 */

const MEASURE = fileURLToPath(new URL("./measure.js", import.meta.url));

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
}

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new ConfigurationError(`--${name} must be a positive integer, got "${value}"`);
  return n;
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
    },
    strict: true,
  });
  const quick = values.quick === true;
  const ortImages = positive("images", values.images, quick ? 6 : 200);
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
  };
}

function run(task: Task): Promise<Measurement> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MEASURE, JSON.stringify(task)], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      const last = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) reject(new Error(`measurement ${JSON.stringify(task)} exited with ${code}`));
      else resolve(JSON.parse(last) as Measurement);
    });
  });
}

const fixed = (value: number | undefined, digits = 1): string => (value === undefined ? "-" : value.toFixed(digits));

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

async function main(): Promise<void> {
  const settings = parseSettings(process.argv.slice(2));
  const { batch, threads, rawSeconds } = settings;
  const cpuModel = cpus()[0]?.model ?? "unknown";
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const loadAt = () => loadavg().map((l) => l.toFixed(2)).join(" ");
  const started = performance.now();
  log(`# googlenet-eval bench${settings.quick ? " (--quick)" : ""}: ${cpuModel}, ${availableParallelism()} cores, node ${process.version}`);
  log(`batch ${batch}, onnxruntime threads ${threads}, load average at start ${loadAt()}`);

  const rows: string[][] = [];
  const add = (what: string, m: Measurement, extra = "") => {
    rows.push([what, fixed(m.cropsPerSec), fixed(m.imagesPerSec, 3), fixed(m.cropsPerSec > 0 ? 1000 / m.cropsPerSec : undefined, 2), fixed(m.peakRssMB, 0), extra]);
    log(`  ${what}: ${fixed(m.cropsPerSec)} crops/s${m.imagesPerSec ? `, ${fixed(m.imagesPerSec, 3)} images/s` : ""}, peak RSS ${fixed(m.peakRssMB, 0)} MB ${extra} (load ${loadAt()})`);
  };

  // Batch and thread sweep of the engine alone: how the pipeline's defaults were chosen.
  if (settings.sweep) {
    const sweep: string[][] = [];
    for (const t of [...new Set([1, threads])]) {
      for (const b of [1, 4, 8, 16, 32, 48]) {
        const m = await run({ kind: "raw", engine: "onnxruntime", batch: b, threads: t, seconds: 4, minCalls: 2 });
        sweep.push([String(t), String(b), fixed(m.cropsPerSec), fixed(1000 / m.cropsPerSec, 2), fixed(m.peakRssMB, 0)]);
        log(`  sweep threads ${t} batch ${b}: ${fixed(m.cropsPerSec)} crops/s, peak RSS ${fixed(m.peakRssMB, 0)} MB`);
      }
    }
    log("\nonnxruntime alone (rewritten graph), by batch and threads:");
    log(table(["threads", "batch", "crops/s", "ms/crop", "peak RSS MB"], sweep));
    log("");
  }

  const ortRaw = await run({ kind: "raw", engine: "onnxruntime", batch, threads, seconds: rawSeconds, minCalls: 3 });
  add("onnxruntime alone, rewritten graph", ortRaw);
  if (!settings.quick) {
    // The engine sleeps idle threads (model/ort-engine.ts allowSpinning); this row shows what spinning would give alone.
    const spinning = await run({ kind: "raw", engine: "onnxruntime", batch, threads, seconds: rawSeconds, minCalls: 3, allowSpinning: true });
    add("onnxruntime alone, rewritten, spinning threads", spinning);
  }
  const ortRawBefore = await run({ kind: "raw", engine: "onnxruntime-unmodified", batch, threads, seconds: rawSeconds, minCalls: 3 });
  add("onnxruntime alone, file as stored (before)", ortRawBefore);

  const tfjsBackends: BackendPreference[] = ["wasm"];
  const notes: string[] = [];
  if (await nativeTensorflowLoads()) tfjsBackends.unshift("tensorflow");
  else notes.push("tfjs-node does not load here: no tensorflow backend measured");
  const tfjsRawSingle: Partial<Record<string, Measurement>> = {};
  for (const backend of tfjsBackends) {
    tfjsRawSingle[backend] = await run({ kind: "raw", engine: "tfjs", backend, tfjsWorkers: 1, batch, threads, seconds: rawSeconds, minCalls: 1 });
    add(`tfjs ${backend} alone, this thread`, tfjsRawSingle[backend] as Measurement);
  }
  // The pipeline's tfjs engine: for wasm, the worker pool over every core.
  const pipelineBackend = tfjsBackends[0] as BackendPreference;
  let tfjsRaw = tfjsRawSingle[pipelineBackend] as Measurement;
  let poolSpeedup: number | undefined;
  if (pipelineBackend !== "tensorflow" && availableParallelism() > 1) {
    try {
      tfjsRaw = await run({ kind: "raw", engine: "tfjs", backend: pipelineBackend, batch, threads, seconds: rawSeconds, minCalls: 1 });
      poolSpeedup = tfjsRaw.cropsPerSec / (tfjsRawSingle[pipelineBackend] as Measurement).cropsPerSec;
      add(`tfjs ${pipelineBackend} alone, pool of ${availableParallelism()} workers`, tfjsRaw, `x${fixed(poolSpeedup, 2)} vs one thread`);
    } catch (error) {
      notes.push(`tfjs worker pool not measured: ${(error as Error).message}`);
    }
  }

  const ortPipeline = await run({
    kind: "pipeline",
    engine: "onnxruntime",
    batch,
    threads,
    images: settings.ortImages,
    rssAfter: settings.rssAfter,
  });
  const growth = ortPipeline.rssAfterMB && ortPipeline.rssEndMB ? ortPipeline.rssEndMB / ortPipeline.rssAfterMB - 1 : undefined;
  add(
    `pipeline onnxruntime, ${ortPipeline.images} images x 144`,
    ortPipeline,
    `RSS ${fixed(ortPipeline.rssAfterMB, 0)} MB after ${settings.rssAfter} images, ${fixed(ortPipeline.rssEndMB, 0)} MB at the end (${growth === undefined ? "-" : `${(growth * 100).toFixed(1)}%`})`,
  );
  if (ortPipeline.rssTraceMB) log(`  RSS every ${settings.rssAfter} images (MB): ${ortPipeline.rssTraceMB.join(" ")}`);
  const tfjsPipeline = await run({ kind: "pipeline", engine: "tfjs", backend: pipelineBackend, batch, threads, images: settings.tfjsImages });
  add(`pipeline tfjs ${tfjsPipeline.backend ?? pipelineBackend}, ${tfjsPipeline.images} images x 144`, tfjsPipeline);
  const plain = await run({ kind: "plain-loop", threads, images: settings.plainImages });
  add(`plain loop: file as stored, batches of 48, ${plain.images} images`, plain);

  if (settings.profile) {
    const profiles: Measurement[] = [];
    for (const rewritten of [false, true]) profiles.push(await run({ kind: "profile", rewritten, batch, threads, runs: 3 }));
    const ops = [...new Set(profiles.flatMap((p) => (p.opMsPerRun ?? []).map(([op]) => op)))];
    const msOf = (p: Measurement, op: string) => p.opMsPerRun?.find(([name]) => name === op)?.[1] ?? 0;
    const total = (p: Measurement) => (p.opMsPerRun ?? []).reduce((sum, [, ms]) => sum + ms, 0);
    const [before, after] = profiles as [Measurement, Measurement];
    log(`
onnxruntime's profiler, kernel ms per run of ${batch} crops at ${threads} threads (file as stored | rewritten):`);
    log(
      table(
        ["op", "stored ms", "stored %", "rewritten ms", "rewritten %"],
        ops
          .sort((a, b) => msOf(after, b) - msOf(after, a))
          .filter((op) => msOf(before, op) + msOf(after, op) >= 0.05)
          .map((op) => [
            op,
            fixed(msOf(before, op)),
            fixed((100 * msOf(before, op)) / total(before)),
            fixed(msOf(after, op)),
            fixed((100 * msOf(after, op)) / total(after)),
          ]),
      ),
    );
    log(`kernel total ${fixed(total(before))} ms | ${fixed(total(after))} ms per run\n`);
  }

  const ortEfficiency = ortPipeline.cropsPerSec / ortRaw.cropsPerSec;
  const tfjsEfficiency = tfjsPipeline.cropsPerSec / tfjsRaw.cropsPerSec;
  const speedup = (ortPipeline.imagesPerSec ?? 0) / (plain.imagesPerSec ?? 1);
  log("");
  log(table(["measurement", "crops/s", "images/s", "ms/crop", "peak RSS MB", "note"], rows));
  log("");
  log(`onnxruntime efficiency (pipeline / alone) ${ortEfficiency.toFixed(3)}; tfjs efficiency ${tfjsEfficiency.toFixed(3)}`);
  log(`144-crop score with onnxruntime vs the plain loop: x${speedup.toFixed(2)} images/s`);
  log(`rewrite: x${(ortRaw.cropsPerSec / ortRawBefore.cropsPerSec).toFixed(2)} crops/s for onnxruntime alone`);
  log(`pipeline crops/s count the crops the engine computed (coinciding windows of square images once); images/s is per image of 144 crops`);
  for (const note of notes) log(`note: ${note}`);
  log(`load average at end ${loadAt()}; ${((performance.now() - started) / 1000).toFixed(0)} s in all`);

  const result = {
    ortRawCropsPerSec: round(ortRaw.cropsPerSec),
    ortPipelineCropsPerSec: round(ortPipeline.cropsPerSec),
    ortEfficiency: round(ortEfficiency, 3),
    tfjsRawCropsPerSec: round(tfjsRaw.cropsPerSec),
    tfjsPipelineCropsPerSec: round(tfjsPipeline.cropsPerSec),
    tfjsEfficiency: round(tfjsEfficiency, 3),
    peakRssMB: round(Math.max(ortPipeline.peakRssMB, tfjsPipeline.peakRssMB), 0),
    backend: tfjsPipeline.backend ?? pipelineBackend,
    batch,
    threads,
    ortSpeedupVsPlainLoop: round(speedup, 3),
    ortRewriteSpeedup: round(ortRaw.cropsPerSec / ortRawBefore.cropsPerSec, 3),
    ...(poolSpeedup !== undefined ? { tfjsPoolSpeedup: round(poolSpeedup, 3) } : {}),
    ortPipelineImagesPerSec: round(ortPipeline.imagesPerSec ?? 0, 3),
    tfjsPipelineImagesPerSec: round(tfjsPipeline.imagesPerSec ?? 0, 3),
    ortPeakRssMB: round(ortPipeline.peakRssMB, 0),
    tfjsPeakRssMB: round(tfjsPipeline.peakRssMB, 0),
    ...(growth !== undefined ? { rssGrowth: round(growth, 3), rssGrowthImages: [settings.rssAfter, ortPipeline.images] } : {}),
    cpuModel,
    loadAverage: round(loadavg()[0] ?? 0, 2),
  };
  log(JSON.stringify(result));
}

function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
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

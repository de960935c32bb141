import { createHash } from "node:crypto";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Scheme } from "../model/crop-types.js";
import type { CropCount } from "../model/crops.js";
import type { Engine, ModelInfo } from "../model/engine.js";
import { ConfigurationError, StorageError } from "../model/errors.js";
import type { BackendPreference } from "../model/backend.js";
import type { EngineChoice } from "../model/load.js";
import { loadEngine } from "../model/load.js";
import { schemesForCount } from "../model/predict.js";
import type { Flavour } from "../model/preprocess.js";
import type { Synsets } from "../model/synsets.js";
import { parseSynsets } from "../model/synsets.js";
import { describeProblems, labelFromPath, readLabels } from "./labels.js";
import type { LabelTable } from "./labels.js";
import { createProgress } from "./progress.js";
import type { ResultRecord, Summary } from "./records.js";
import { isFailed } from "./records.js";
import { REPORT_FILE, writeReport } from "./report.js";
import { RESULTS_FILE, ResultsWriter, SUMMARY_FILE } from "./results.js";
import { RUN_FACTS_FILE, readRunFacts, withRunFacts, writeRunFacts } from "./run-facts.js";
import { readUrl } from "./s3-location.js";
import type { ImageInput } from "./scorer.js";
import { scoreImages } from "./scorer.js";
import type { Location } from "./storage.js";
import { LocalLocation, isS3Url, openLocation } from "./storage.js";
import { formatTable3, summarize } from "./summary.js";

/**
 * File extensions listed as images, case-insensitively. Only the listing goes by name:
 * decoding goes by content, so a PNG named .jpg is scored and a text file named .jpg becomes an
 * error record rather than being skipped.
 */
export const IMAGE_EXTENSIONS: readonly string[] = [".jpg", ".jpeg", ".png", ".webp"];

export interface ScoreJobOptions {
  /** The folder of images, listed recursively. */
  readonly input: Location;
  /**
   * Folder or s3://bucket/prefix for results.jsonl, summary.json, run.json and report.html; an
   * existing results.jsonl there is resumed. An S3 out is staged in a local folder (see
   * `stagingDir`) and uploaded every `checkpointSeconds` and at the end.
   */
  readonly out: string;
  /**
   * Local staging folder for an S3 out, emptied at start. Default: a folder under the OS temp
   * dir named by the out URL.
   */
  readonly stagingDir?: string;
  /** Seconds between uploads of the partial results.jsonl to an S3 out. Default: 300. */
  readonly checkpointSeconds?: number;
  /** Model files (paths or s3:// URLs), in the order their per-model results are reported. */
  readonly models: readonly string[];
  /** Engine per model. Default: "auto". */
  readonly engine?: EngineChoice;
  /** tfjs backend. Default: "auto". */
  readonly backend?: BackendPreference;
  /** Input convention for ONNX graphs the architecture reader does not recognise. No default. */
  readonly preprocess?: Flavour;
  /** onnxruntime intra-op threads. Default: the machine's cores. */
  readonly threads?: number;
  /** Worker threads of the tfjs engine on the wasm or cpu backend. Default: the machine's cores. */
  readonly tfjsWorkers?: number;
  /** Crops per image. Default: 144. */
  readonly crops?: CropCount;
  /** Label file (val.txt, LOC_val_solution.csv, synset labels; path or s3:// URL). Default: WNIDs in file or folder names. */
  readonly labels?: string;
  /** synset_words.txt (path or s3:// URL): class names and WNIDs. Required (the CLI finds one). */
  readonly synsets: string;
  /** Crops per engine call. Default: the scorer's DEFAULT_BATCH_CROPS (16). */
  readonly batchCrops?: number;
  /** Apply EXIF orientation. Default: false (ImageNet convention). */
  readonly applyExifOrientation?: boolean;
  /** Pixel limit per image. Default: decode.ts's (100 million). */
  readonly maxPixels?: number;
  /** Show progress on stderr. Default: true. */
  readonly progress?: boolean;
  /** Where the Table 3 block and notices go. Defaults: process.stdout, process.stderr. */
  readonly stdout?: NodeJS.WritableStream;
  readonly stderr?: NodeJS.WriteStream;
}

export interface ScoreJobResult {
  readonly summary: Summary;
  /** The Table-3-style block that was printed. */
  readonly table: string;
  /** Images scored (or failed) by this run; the rest were done by an earlier one. */
  readonly processed: number;
  readonly resumed: number;
}

function isImageKey(key: string): boolean {
  const lower = key.toLowerCase();
  return IMAGE_EXTENSIONS.some((extension) => lower.endsWith(extension));
}

/**
 * Refuses to resume into an out folder written with other models or crops: mixing them would
 * average apples into oranges without a trace in summary.json.
 */
async function checkResumable(writer: ResultsWriter, out: string, infos: readonly ModelInfo[], crops: CropCount): Promise<void> {
  const previousSummary = await writer.location.readIfExists(SUMMARY_FILE);
  if (previousSummary !== undefined) {
    let earlier: Partial<Summary>;
    try {
      earlier = JSON.parse(previousSummary.toString("utf8")) as Partial<Summary>;
    } catch (error) {
      throw new StorageError(`${out}/${SUMMARY_FILE} is not valid JSON; remove it or use another --out`, { cause: error });
    }
    const before = (earlier.models ?? []).map((model) => model.sha256).join(",");
    const now = infos.map((info) => info.sha256).join(",");
    if (before !== now) {
      throw new ConfigurationError(
        `${out} holds results of other models (sha256 ${before || "none"}); this run uses ${now}. Use another --out`,
      );
    }
  }
  const expected = schemesForCount(crops).join(",");
  for (const line of writer.previous.lines.values()) {
    const record = JSON.parse(line) as ResultRecord;
    if (isFailed(record)) continue;
    const found = (Object.keys(record.top5) as Scheme[]).join(",");
    if (found !== expected || (infos.length > 1) !== (record.models !== undefined)) {
      throw new ConfigurationError(
        `${out}/results.jsonl holds results for schemes ${found} with ${record.models?.length ?? 1} model(s); ` +
          `this run computes ${expected} with ${infos.length}. Use the same --crops and --model, or another --out`,
      );
    }
    break;
  }
}

async function loadModels(options: ScoreJobOptions): Promise<{ engine: Engine; info: ModelInfo }[]> {
  const loaded: { engine: Engine; info: ModelInfo }[] = [];
  try {
    for (const file of options.models) {
      let bytes: Buffer;
      try {
        bytes = await readUrl(file);
      } catch (error) {
        throw new ConfigurationError(`cannot read model ${file}: ${(error as Error).message}`, { cause: error });
      }
      loaded.push(
        await loadEngine(bytes, {
          source: file,
          engine: options.engine ?? "auto",
          ...(options.backend !== undefined ? { backend: options.backend } : {}),
          ...(options.preprocess !== undefined ? { preprocess: options.preprocess } : {}),
          ...(options.threads !== undefined ? { threads: options.threads } : {}),
          ...(options.tfjsWorkers !== undefined ? { tfjsWorkers: options.tfjsWorkers } : {}),
        }),
      );
    }
  } catch (error) {
    await Promise.all(loaded.map(({ engine }) => engine.dispose()));
    throw error;
  }
  return loaded;
}

/** A readable file's text from a path or s3:// URL, with the setting's name in the error. */
async function readText(url: string, what: string): Promise<string> {
  try {
    return (await readUrl(url)).toString("utf8");
  } catch (error) {
    throw new ConfigurationError(`cannot read ${what} ${url}: ${(error as Error).message}`, { cause: error });
  }
}

/** Where results are written while the run goes: the out folder itself, or a staging folder for S3. */
interface Destination {
  readonly local: LocalLocation;
  /** The S3 out, when there is one: the staging folder is uploaded there. */
  readonly remote?: Location;
}

/**
 * For an S3 out, a local staging folder seeded from what the bucket already has. The bucket is
 * the record of truth: the staging folder is emptied first, so results of an earlier run whose
 * prefix was since deleted cannot come back; a crash loses at most one checkpoint interval.
 */
async function openDestination(options: ScoreJobOptions): Promise<Destination> {
  if (!isS3Url(options.out)) return { local: new LocalLocation(options.out) };
  const remote = openLocation(options.out);
  const name = createHash("sha256").update(options.out).digest("hex").slice(0, 16);
  const stagingDir = options.stagingDir ?? join(tmpdir(), "googlenet-eval-staging", name);
  await rm(stagingDir, { recursive: true, force: true });
  const local = new LocalLocation(stagingDir);
  for (const file of [RESULTS_FILE, SUMMARY_FILE, RUN_FACTS_FILE]) {
    const bytes = await remote.readIfExists(file);
    if (bytes !== undefined) await local.write(file, bytes);
  }
  return { local, remote };
}

async function upload(destination: Destination, files: readonly string[]): Promise<void> {
  if (!destination.remote) return;
  for (const file of files) {
    const bytes = await destination.local.readIfExists(file);
    if (bytes !== undefined) await destination.remote.write(file, bytes);
  }
}

/**
 * Scores every image under `input` into the out folder (local or S3): lists images, attaches
 * labels, skips keys an earlier run already wrote, scores the rest (appending as it goes), then
 * rewrites results.jsonl in listing order, writes summary.json, run.json and report.html, and
 * prints the Table 3 block and the report's path.
 */
export async function runScoreJob(options: ScoreJobOptions): Promise<ScoreJobResult> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const crops = options.crops ?? 144;
  if (options.models.length === 0) throw new ConfigurationError("score needs at least one --model FILE.onnx");

  const synsets: Synsets = parseSynsets(await readText(options.synsets, "synsets file"), options.synsets);
  let labels: LabelTable | undefined;
  if (options.labels !== undefined) {
    labels = await readLabels(options.labels, { synsets });
    const problems = describeProblems(labels);
    if (problems) stderr.write(`warning: ${problems}\n`);
  }

  const keys: string[] = [];
  for await (const key of options.input.list()) if (isImageKey(key)) keys.push(key);
  if (keys.length === 0) {
    throw new ConfigurationError(
      `no images under ${options.input.url} (looked for ${IMAGE_EXTENSIONS.join(", ")}, any case, in all sub-folders)`,
    );
  }
  const labelOf = (key: string): number | null => (labels ? labels.lookup(key) : labelFromPath(key, synsets));

  const destination = await openDestination(options);
  const writer = await ResultsWriter.open(destination.local);
  const startedAt = new Date();
  let processed = 0;
  let scoredNow = 0;
  let infos: ModelInfo[] = [];
  let engineName = "";
  let backendName = "";
  try {
    const models = await loadModels(options);
    infos = models.map(({ info }) => info);
    engineName = [...new Set(models.map(({ engine }) => engine.engine))].join(", ");
    backendName = [...new Set(models.map(({ engine }) => engine.backend))].join(", ");
    try {
      await checkResumable(writer, options.out, infos, crops);
      const todo = keys.filter((key) => !writer.isDone(key));
      const resumed = keys.length - todo.length;
      if (resumed > 0) stderr.write(`resuming: ${resumed} of ${keys.length} images already in ${options.out}\n`);
      const inputs: ImageInput[] = todo.map((key) => ({
        key,
        label: labelOf(key),
        read: () => options.input.read(key),
      }));
      const progress = options.progress === false ? undefined : createProgress({ total: todo.length, stream: stderr });
      const checkpointMs = (options.checkpointSeconds ?? 300) * 1000;
      let lastCheckpoint = Date.now();
      try {
        const records = scoreImages(inputs, {
          models,
          crops,
          classNames: synsets.names,
          applyExifOrientation: options.applyExifOrientation ?? false,
          ...(options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {}),
          ...(options.batchCrops !== undefined ? { batchCrops: options.batchCrops } : {}),
        });
        for await (const record of records) {
          await writer.append(record);
          processed++;
          if (!isFailed(record)) scoredNow++;
          progress?.tick(isFailed(record));
          if (destination.remote && Date.now() - lastCheckpoint >= checkpointMs) {
            // The appended file is what a resume reads; order is restored at the end.
            await upload(destination, [RESULTS_FILE]);
            lastCheckpoint = Date.now();
          }
        }
      } finally {
        progress?.stop();
      }
    } finally {
      await Promise.all(models.map(({ engine }) => engine.dispose()));
    }
    const wallSeconds = (Date.now() - startedAt.getTime()) / 1000;
    const summary = summarize(writer.records(keys), infos, crops);
    await writer.finish(keys, summary);
    // A re-run that scored nothing keeps the facts of the run that did the work.
    const facts =
      processed > 0
        ? {
            engine: engineName,
            backend: backendName,
            startedAt: startedAt.toISOString(),
            wallSeconds,
            cropsPerSecond: (scoredNow * crops * infos.length) / Math.max(wallSeconds, 1e-9),
            images: processed,
            models: infos.map((info) => ({ file: info.file, sha256: info.sha256, flavour: info.flavour })),
          }
        : await readRunFacts(destination.local);
    if (processed > 0 && facts) await writeRunFacts(destination.local, facts);
    const reportPath = await writeReport(destination.local, withRunFacts(summary, facts), writer.records(keys), {
      classNames: synsets.names,
    });
    await upload(destination, [RESULTS_FILE, SUMMARY_FILE, RUN_FACTS_FILE, REPORT_FILE]);
    const table = formatTable3(summary);
    const shownReport = destination.remote ? `${options.out.replace(/\/+$/, "")}/${REPORT_FILE}` : reportPath;
    stdout.write(`${table}\nreport: ${shownReport}\n`);
    return { summary, table, processed, resumed: keys.length - processed };
  } finally {
    await writer.close();
  }
}

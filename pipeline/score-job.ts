import { readFile } from "node:fs/promises";
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
import { readSynsets } from "../model/synsets.js";
import { describeProblems, labelFromPath, readLabels } from "./labels.js";
import type { LabelTable } from "./labels.js";
import { createProgress } from "./progress.js";
import type { ResultRecord, Summary } from "./records.js";
import { isFailed } from "./records.js";
import { ResultsWriter, SUMMARY_FILE } from "./results.js";
import type { ImageInput } from "./scorer.js";
import { scoreImages } from "./scorer.js";
import type { Location } from "./storage.js";
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
  /** Local folder for results.jsonl and summary.json; an existing results.jsonl is resumed. */
  readonly out: string;
  /** Model files, in the order their per-model results are reported. */
  readonly models: readonly string[];
  /** Engine per model. Default: "auto". */
  readonly engine?: EngineChoice;
  /** tfjs backend. Default: "auto". */
  readonly backend?: BackendPreference;
  /** Input convention for ONNX graphs the architecture reader does not recognise. No default. */
  readonly preprocess?: Flavour;
  /** onnxruntime intra-op threads. Default: the machine's cores. */
  readonly threads?: number;
  /** Crops per image. Default: 144. */
  readonly crops?: CropCount;
  /** Label file (val.txt, LOC_val_solution.csv, synset labels). Default: WNIDs in file or folder names. */
  readonly labels?: string;
  /** synset_words.txt: class names and WNIDs. Required (the CLI finds one). */
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
        bytes = await readFile(file);
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
        }),
      );
    }
  } catch (error) {
    await Promise.all(loaded.map(({ engine }) => engine.dispose()));
    throw error;
  }
  return loaded;
}

/**
 * Scores every image under `input` into a local out folder: lists images, attaches labels,
 * skips keys an earlier run already wrote, scores the rest (appending as it goes), then
 * rewrites results.jsonl in listing order, writes summary.json and prints the Table 3 block.
 */
export async function runScoreJob(options: ScoreJobOptions): Promise<ScoreJobResult> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const crops = options.crops ?? 144;
  if (options.models.length === 0) throw new ConfigurationError("score needs at least one --model FILE.onnx");

  const synsets: Synsets = await readSynsets(options.synsets);
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

  const writer = await ResultsWriter.open(options.out);
  let processed = 0;
  let infos: ModelInfo[] = [];
  try {
    const models = await loadModels(options);
    infos = models.map(({ info }) => info);
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
          progress?.tick(isFailed(record));
        }
      } finally {
        progress?.stop();
      }
    } finally {
      await Promise.all(models.map(({ engine }) => engine.dispose()));
    }
    const summary = summarize(writer.records(keys), infos, crops);
    await writer.finish(keys, summary);
    const table = formatTable3(summary);
    stdout.write(`${table}\n`);
    return { summary, table, processed, resumed: keys.length - processed };
  } finally {
    await writer.close();
  }
}

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Scheme } from "../model/image/crop-types.js";
import type { CropCount } from "../model/image/crops.js";
import type { Engine, ModelInfo } from "../model/engine.js";
import { DEFAULT_MAX_PIXELS } from "../model/image/decode.js";
import { ConfigurationError, LabelFileError } from "../model/errors.js";
import { MissingObjectError, StorageError } from "../storage/errors.js";
import { RunInterruptedError } from "./errors.js";
import type { EngineChoice, LoadEngineOptions } from "../model/load.js";
import { loadEngine } from "../model/load.js";
import { schemesForCount } from "../model/predict.js";
import type { Synsets } from "../model/synsets.js";
import { parseSynsets } from "../model/synsets.js";
import { describeProblems, parseLabels } from "./labels.js";
import type { ClassSubset } from "./class-subset.js";
import { parseClassSubset } from "./class-subset.js";
import type { LabelSpace } from "./label-space.js";
import { describeLabelSpace, labelSpaceOf, labelsFromLayout } from "./label-space.js";
import type { LabelTable } from "./labels.js";
import type { Remapping } from "./label-check.js";
import { LabelCheck, describeDiagnosis, knownRemappings, mismatchError } from "./label-check.js";
import { remappingsFor } from "./devkit-ids.js";
import { createProgress } from "./progress.js";
import type { ResultRecord, Summary } from "./records.js";
import { isFailed } from "./records.js";
import { REPORT_FILE, writeReport } from "./report/index.js";
import type { ResumeState } from "./results.js";
import { RESULTS_FILE, ResultsWriter, SUMMARY_FILE, readResumeState } from "./results.js";
import { RUN_FACTS_FILE, readRunFacts, withRunFacts, writeRunFacts } from "./run-facts.js";
import type { RunHeader } from "./run-header.js";
import { RUN_HEADER_FILE, assertSameRun, formatRunHeader, inputOfRun, readRunHeader } from "./run-header.js";
import { readUrl } from "../storage/open-location.js";
import type { ImageInput } from "./scorer.js";
import { DEFAULT_INPUT_MAX_BYTES } from "./image-input.js";
import { scoreImages } from "./scorer.js";
import type { Location } from "../storage/location.js";
import { LocalLocation, isS3Url, sha256OfBytes } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { formatTable3, summarize, type SummaryExtras } from "./summary.js";
import {
  loadBuiltInValidationLabels,
  realLabelsFor,
  validationLabelOf,
  validationNumber,
  VALIDATION_LABELS_FILE,
  type BuiltInValidationLabels,
} from "./imagenet-validation.js";
import { IMAGE_EXTENSIONS } from "../storage/image-keys.js";
import { openImageSource, type ImageSource } from "../storage/archive/image-source.js";

/** The engine settings of a run, documented once in model/load.ts. */
type EngineSettings = Pick<LoadEngineOptions, "backend" | "preprocess" | "threads" | "device" | "requireGpu" | "tfjsWorkers" | "graphEdits">;

export interface ScoreJobOptions extends EngineSettings {
  /** The folder of images, listed recursively. */
  readonly input: Location;
  /**
   * Folder or s3://bucket/prefix for results.jsonl, summary.json, run.json and report.html; an
   * existing results.jsonl there is resumed. An S3 out is staged in a local folder (see
   * `stagingDir`) and uploaded every `checkpointSeconds` and at the end.
   */
  readonly out: string;
  /**
   * Local staging folder for an S3 out, emptied at start. Default: a new folder for each run
   * under the OS temp dir (named by the out URL, with a unique suffix), removed at the end.
   */
  readonly stagingDir?: string;
  /** Seconds between uploads of the partial results.jsonl to an S3 out. Default: 300. */
  readonly checkpointSeconds?: number;
  /** Model files (paths or s3:// URLs), in the order their per-model results are reported. */
  readonly models: readonly string[];
  /** Engine per model. Default: "auto". */
  readonly engine?: EngineChoice;
  /** Crops per image. Default: 144. */
  readonly crops?: CropCount;
  /**
   * Label file (val.txt, LOC_val_solution.csv, synset labels; path or s3:// URL). Default: the
   * built-in ILSVRC 2012 validation labels for keys named ILSVRC2012_val_NNNNNNNN.* (see
   * `builtInLabels`), and WNIDs in file or folder names for the rest.
   */
  readonly labels?: string;
  /**
   * Without `labels`, label validation-named keys from the shipped TF-slim validation labels
   * (data/ilsvrc2012_validation_synset_labels.txt, through the synsets' order). Default: true;
   * false (the CLI's `--labels none`) leaves only WNIDs in names.
   */
  readonly builtInLabels?: boolean;
  /**
   * ReaL labels (real.json format; path or s3:// URL) judged beside the original labels for
   * validation-named keys. Default: the shipped data/real.json when any key has a validation
   * name and the synsets are ImageNet's; null: no ReaL.
   */
  readonly realLabels?: string | null;
  /**
   * Class subset file (path or s3:// URL; WNIDs or class indices, one per line) for test sets
   * over fewer classes (ImageNet-A, -R): each crop's softmax is restricted to it before
   * averaging; errors and top-5 lists are over it. Default: all 1000 classes.
   */
  readonly classes?: string;
  /** synset_words.txt (path or s3:// URL): class names and WNIDs. Required (the CLI finds one). */
  readonly synsets: string;
  /** Crops per engine call. Default: the scorer's DEFAULT_BATCH_CROPS (16). */
  readonly batchCrops?: number;
  /** Apply EXIF orientation. Default: false (ImageNet convention). */
  readonly applyExifOrientation?: boolean;
  /** Pixel limit per image. Default: decode.ts's (100 million). */
  readonly maxPixels?: number;
  /**
   * Stops the run: no image is started after it fires, the image(s) in flight are dropped (no
   * record is ever half written), and what results.jsonl holds is kept (uploaded to an S3 out at
   * once) for a resume; the job then rejects with RunInterruptedError. Its `reason`, when a
   * string (the CLI passes the signal's name), is named in the error. A signal after the last
   * image lets the run finish its summary and report. Default: none.
   */
  readonly signal?: AbortSignal;
  /**
   * Stop the run (LabelMismatchError) when, after the first 200 labelled images (all, when
   * fewer), a known remapping of the labels (off by one, folders sorted as strings, the
   * devkit's ids for images with validation names) explains the predictions far better than the
   * labels as given (scoring/label-check.ts). When false, the diagnosis is only printed.
   * Default: true.
   */
  readonly labelCheck?: boolean;
  /** Largest input object read, in bytes; a larger one is its error record. Default: DEFAULT_INPUT_MAX_BYTES (50 MiB). */
  readonly inputMaxBytes?: number;
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

/** A model file as read, before any engine loads it. */
interface ModelFile {
  readonly file: string;
  readonly bytes: Buffer;
  readonly sha256: string;
}

/** What a run reads before it scores anything, and the header of settings it is made under. */
interface RunInputs {
  readonly synsets: Synsets;
  readonly labelOf: (key: string) => number | null;
  /** Image keys in listing order. */
  readonly keys: readonly string[];
  /** Where the keys' bytes are: loose files and archive members. */
  readonly source: ImageSource;
  readonly modelFiles: readonly ModelFile[];
  readonly header: RunHeader;
  /** What the summary reports beyond the records: ReaL labels, the built-in labels' use. */
  readonly extras: SummaryExtras;
  readonly subset: ClassSubset | undefined;
  readonly labelSpace: LabelSpace;
  /** What the label check tries (with the devkit-id remapping when a label file disagrees with the built-in labels). */
  readonly remappings: readonly Remapping[];
}

/** A readable file's bytes from a path or s3:// URL, with the setting's name in the error. */
async function readSetting(url: string, what: string): Promise<Buffer> {
  try {
    return await readUrl(url);
  } catch (error) {
    throw new ConfigurationError(`cannot read ${what} ${url}: ${(error as Error).message}`, { cause: error });
  }
}

async function readLabelFile(path: string, synsets: Synsets): Promise<{ table: LabelTable; sha256: string }> {
  let bytes: Buffer;
  try {
    bytes = await readUrl(path);
  } catch (error) {
    throw new LabelFileError(`cannot read label file ${path}: ${(error as Error).message}`, { cause: error });
  }
  return { table: parseLabels(bytes.toString("utf8"), { synsets, source: path }), sha256: sha256OfBytes(bytes) };
}

/**
 * Opens the input (loose images, tar archives, or both), with a line saying what it holds and,
 * for an archive read through to index it (S3, gzip), its progress in bytes.
 */
async function openInput(input: Location, stderr: NodeJS.WritableStream): Promise<ImageSource> {
  let lastLine = 0;
  const source = await openImageSource(input, {
    onIndexProgress: (archive, bytes, size) => {
      const now = Date.now();
      if (now - lastLine < 5000) return;
      lastLine = now;
      stderr.write(`indexing ${archive}: ${(bytes / 1e6).toFixed(0)} of ${(size / 1e6).toFixed(0)} MB\n`);
    },
  });
  if (source.keys.length === 0) {
    throw new ConfigurationError(
      `no images under ${input.url} (looked for ${IMAGE_EXTENSIONS.join(", ")}, any case, in all sub-folders and in .tar, .tar.gz and .tgz archives)`,
    );
  }
  stderr.write(`input: ${source.describe()}\n`);
  return source;
}

/** The built-in validation labels, when no label file is given and they label any key; a line on stderr says so. */
async function builtInLabelsFor(
  options: ScoreJobOptions,
  keys: readonly string[],
  synsets: Synsets,
  stderr: NodeJS.WritableStream,
): Promise<(BuiltInValidationLabels & { images: number }) | undefined> {
  if (options.labels !== undefined || options.builtInLabels === false) return undefined;
  if (!keys.some((key) => validationNumber(key) !== undefined)) return undefined;
  const loaded = await loadBuiltInValidationLabels(synsets);
  const images = keys.filter((key) => validationLabelOf(loaded.labels, key) !== null).length;
  if (images === 0) return undefined;
  stderr.write(
    `labels: built-in ILSVRC 2012 validation labels (${loaded.path}) for ${images} of ${keys.length} images ` +
      `(named ILSVRC2012_val_NNNNNNNN); --labels none turns them off\n`,
  );
  return { ...loaded, images };
}

async function gatherInputs(options: ScoreJobOptions, crops: CropCount, stderr: NodeJS.WritableStream): Promise<RunInputs> {
  const synsetsBytes = await readSetting(options.synsets, "synsets file");
  const synsets: Synsets = parseSynsets(synsetsBytes.toString("utf8"), options.synsets);
  let labels: { table: LabelTable; sha256: string } | undefined;
  if (options.labels !== undefined) {
    labels = await readLabelFile(options.labels, synsets);
    const problems = describeProblems(labels.table);
    if (problems) stderr.write(`warning: ${problems}\n`);
  }
  const source = await openInput(options.input, stderr);
  const keys = source.keys;
  const input = await inputOfRun(options.input);
  const builtIn = await builtInLabelsFor(options, keys, synsets, stderr);
  const real = await realLabelsFor(options.realLabels, keys, synsets);
  if (real) stderr.write(`ReaL labels: ${real.source}\n`);
  const subset =
    options.classes === undefined
      ? undefined
      : parseClassSubset((await readSetting(options.classes, "class subset")).toString("utf8"), synsets, options.classes);
  const table = labels?.table;
  const fromLayout = table === undefined ? labelsFromLayout(keys, synsets) : undefined;
  // WebDataset `.cls` members label their sample's image when no label file is given.
  const fromClassMembers = table === undefined && options.builtInLabels !== false ? keys.filter((key) => source.classOf(key) !== undefined).length : 0;
  if (fromClassMembers > 0) stderr.write(`labels: WebDataset .cls members for ${fromClassMembers} of ${keys.length} images\n`);
  const labelOf = (key: string): number | null =>
    table
      ? table.lookup(key)
      : ((builtIn ? validationLabelOf(builtIn.labels, key) : null) ??
        (fromClassMembers > 0 ? (source.classOf(key) ?? null) : null) ??
        (fromLayout as NonNullable<typeof fromLayout>).labelOf(key));
  const labelSpace = labelSpaceOf(fromLayout?.layout ?? "label-file", subset);
  stderr.write(`${describeLabelSpace(labelSpace, builtIn && { images: builtIn.images, keys: keys.length })}\n`);
  if (subset !== undefined) warnOutsideSubset(keys, labelOf, subset, stderr);
  // Only a label file can be in other ids than the built-in labels it would be learned against.
  const remappings = table ? await remappingsFor(keys, keys.map(labelOf), synsets) : knownRemappings();
  const modelFiles: ModelFile[] = [];
  for (const file of options.models) {
    const bytes = await readSetting(file, "model");
    modelFiles.push({ file, bytes, sha256: sha256OfBytes(bytes) });
  }
  return {
    synsets,
    labelOf,
    keys,
    source,
    subset,
    labelSpace,
    remappings,
    modelFiles,
    header: {
      version: 1,
      input,
      models: modelFiles.map(({ file, sha256 }) => ({ file, sha256 })),
      crops,
      exifOrientation: options.applyExifOrientation ?? false,
      maxPixels: options.maxPixels ?? DEFAULT_MAX_PIXELS,
      preprocess: options.preprocess ?? null,
      labels: options.labels !== undefined && labels ? { file: options.labels, sha256: labels.sha256 } : null,
      synsetsSha256: sha256OfBytes(synsetsBytes),
      labelSpace,
      ...(builtIn ? { builtInLabels: { file: builtIn.path, sha256: builtIn.sha256, images: builtIn.images } } : {}),
    },
    extras: {
      ...(source.summary.archives > 0 ? { input: { description: source.describe(), ...source.summary } } : {}),
      ...(fromClassMembers > 0 ? { classMemberLabels: { images: fromClassMembers } } : {}),
      ...(real ? { real } : {}),
      ...(builtIn ? { builtInLabels: { file: VALIDATION_LABELS_FILE, images: builtIn.images } } : {}),
    },
  };
}

/** Labelled images whose class is not in the subset can never be right: say so before scoring. */
function warnOutsideSubset(keys: readonly string[], labelOf: (key: string) => number | null, subset: ClassSubset, stderr: NodeJS.WritableStream): void {
  const inSubset = new Set(subset.indices);
  const outside = keys.filter((key) => {
    const label = labelOf(key);
    return label !== null && !inSubset.has(label);
  });
  if (outside.length === 0) return;
  stderr.write(
    `warning: ${outside.length} labelled image(s) have a class outside the ${subset.indices.length} classes of ${subset.source} ` +
      `(e.g. ${outside.slice(0, 3).join(", ")}); they count as errors\n`,
  );
}

/**
 * Checks a run from before run headers against what its files still tell: the models in
 * summary.json (written only at the end) and the schemes and model count of its records.
 */
async function checkHeaderlessRun(location: Location, previous: ResumeState, header: RunHeader, out: string): Promise<void> {
  const previousSummary = await location.readIfExists(SUMMARY_FILE);
  if (previousSummary !== undefined) {
    let earlier: Partial<Summary>;
    try {
      earlier = JSON.parse(previousSummary.toString("utf8")) as Partial<Summary>;
    } catch (error) {
      throw new StorageError(`${out}/${SUMMARY_FILE} is not valid JSON; remove it or use another output folder`, { cause: error });
    }
    const before = (earlier.models ?? []).map((model) => model.sha256).join(",");
    const now = header.models.map((model) => model.sha256).join(",");
    if (before !== now) {
      throw new ConfigurationError(
        `${out} holds results of other models (sha256 ${before || "none"}); this run uses ${now}. Use another output folder`,
      );
    }
  }
  const expected = schemesForCount(header.crops).join(",");
  const models = header.models.length;
  for (const line of previous.lines.values()) {
    const record = JSON.parse(line) as ResultRecord;
    if (isFailed(record)) continue;
    const found = (Object.keys(record.top5) as Scheme[]).join(",");
    if (found !== expected || (models > 1) !== (record.models !== undefined)) {
      throw new ConfigurationError(
        `${out}/results.jsonl holds results for schemes ${found} with ${record.models?.length ?? 1} model(s); ` +
          `this run computes ${expected} with ${models}. Use the same crops and models, or another output folder`,
      );
    }
    break;
  }
}

/**
 * Refuses to resume into an out folder whose results were made under other settings (input,
 * models, crops, EXIF, pixel limit, preprocess, labels, synsets): appending would mix them
 * without a trace, and a resume onto another input with the same file names would skip every
 * image and report the other input's results. Reads only, so a refusal changes no file.
 * Returns the header to write, or undefined when the one there stands.
 */
async function checkResumable(
  location: Location,
  previous: ResumeState,
  header: RunHeader,
  out: string,
  stderr: NodeJS.WritableStream,
): Promise<RunHeader | undefined> {
  // No result to mix with: whatever header is there (a run that failed before its first
  // result) is replaced.
  if (previous.lines.size === 0) return header;
  const before = await readRunHeader(location, out);
  if (before !== undefined) {
    assertSameRun(before, header, out);
    if (before.input !== undefined) return undefined;
    // Refusing would strand every run made by the versions before inputs were recorded; the
    // warning names the input so a user who pointed at another folder can still tell.
    stderr.write(
      `warning: ${out}/${RUN_HEADER_FILE} does not name its input (written by versions before inputs were recorded); ` +
        `resuming it as a run of ${header.input}, now recorded there\n`,
    );
    const { version, ...settings } = before;
    return { version, input: header.input, ...settings };
  }
  stderr.write(
    `warning: ${out} has results but no ${RUN_HEADER_FILE} (written by versions before run headers); ` +
      `resuming after checking its models and crops only\n`,
  );
  await checkHeaderlessRun(location, previous, header, out);
  return header;
}

async function loadModels(
  files: readonly ModelFile[],
  options: ScoreJobOptions,
): Promise<{ engine: Engine; info: ModelInfo }[]> {
  const loaded: { engine: Engine; info: ModelInfo }[] = [];
  try {
    for (const { file, bytes } of files) {
      loaded.push(
        await loadEngine(bytes, {
          source: file,
          engine: options.engine ?? "auto",
          ...engineSettingsOf(options),
        }),
      );
    }
  } catch (error) {
    await Promise.all(loaded.map(({ engine }) => engine.dispose()));
    throw error;
  }
  return loaded;
}

/** Where results are written while the run goes: the out folder itself, or a staging folder for S3. */
interface Destination {
  readonly local: LocalLocation;
  /** The S3 out, when there is one: the staging folder is uploaded there. */
  readonly remote?: Location;
  /** A staging folder made for this run alone, removed when it ends. */
  readonly ownStaging?: string;
}

/**
 * For an S3 out, a local staging folder seeded from what the bucket already has. The bucket is
 * the record of truth: the staging folder starts empty, so results of an earlier run whose
 * prefix was since deleted cannot come back; a crash loses at most one checkpoint interval.
 * By default the folder is new for each run (named by the out URL, with a unique suffix):
 * two runs on one machine with the same out URL (another account's bucket of that name, or
 * the test suite under two Node versions at once) would otherwise append to one file.
 */
async function openDestination(options: ScoreJobOptions): Promise<Destination> {
  if (!isS3Url(options.out)) return { local: new LocalLocation(options.out) };
  const remote = openLocation(options.out);
  const name = createHash("sha256").update(options.out).digest("hex").slice(0, 16);
  let stagingDir: string;
  if (options.stagingDir === undefined) {
    const parent = join(tmpdir(), "googlenet-eval-staging");
    await mkdir(parent, { recursive: true });
    stagingDir = await mkdtemp(join(parent, `${name}-`));
  } else {
    stagingDir = options.stagingDir;
    await rm(stagingDir, { recursive: true, force: true });
  }
  const ownStaging = options.stagingDir === undefined ? stagingDir : undefined;
  const local = new LocalLocation(stagingDir);
  for (const file of [RESULTS_FILE, SUMMARY_FILE, RUN_FACTS_FILE, RUN_HEADER_FILE]) {
    const bytes = await remote.readIfExists(file);
    if (bytes !== undefined) await local.write(file, bytes);
  }
  return { local, remote, ...(ownStaging ? { ownStaging } : {}) };
}

async function upload(destination: Destination, files: readonly string[]): Promise<void> {
  if (!destination.remote) return;
  for (const file of files) {
    const bytes = await destination.local.readIfExists(file);
    if (bytes !== undefined) await destination.remote.write(file, bytes);
  }
}

/** Everything one scoring pass needs beyond the options. */
interface ScoringPass {
  readonly options: ScoreJobOptions;
  readonly crops: CropCount;
  readonly inputs: RunInputs;
  readonly models: { engine: Engine; info: ModelInfo }[];
  readonly writer: ResultsWriter;
  readonly destination: Destination;
  readonly stderr: NodeJS.WriteStream;
}

/** Why a run was stopped, for its message. */
function stoppedBy(signal: AbortSignal): string {
  return typeof signal.reason === "string" ? signal.reason : "a stop request";
}

/**
 * Uploads results.jsonl to an S3 out when this run added to it, so a resume starts from it
 * rather than from the last checkpoint. Returns what a message should say when it could not.
 */
async function saveStaged(pass: ScoringPass, processed: number): Promise<string> {
  if (!pass.destination.remote || processed === 0) return "";
  try {
    await upload(pass.destination, [RESULTS_FILE]);
    return "";
  } catch (uploadError) {
    pass.stderr.write(`warning: could not upload the partial results: ${(uploadError as Error).message}\n`);
    return ` (except the ${processed} of this run, which could not be uploaded)`;
  }
}

/**
 * A fault while scoring stops the run; what is in results.jsonl stands (records made before a
 * model's first bad output are real results too) and is saved. A storage fault is wrapped to
 * say how to resume; anything else is rethrown as it is, after a line saying what was kept.
 */
async function stopOnFault(pass: ScoringPass, error: unknown, done: number, processed: number): Promise<unknown> {
  const lost = await saveStaged(pass, processed);
  if (error instanceof StorageError && !(error instanceof MissingObjectError)) {
    return new StorageError(
      `scoring stopped: ${error.message}. No record was written for that image; the ${done} image(s) done are kept in ` +
        `${pass.options.out}${lost}: run the same command again to resume`,
      { cause: error },
    );
  }
  if (done > 0) pass.stderr.write(`scoring stopped by the error below; the ${done} image(s) done before it are kept in ${pass.options.out}${lost}\n`);
  return error;
}

/** The run was asked to stop: results.jsonl is saved, and the error says how to resume. */
async function stopOnRequest(pass: ScoringPass, by: string, done: number, processed: number): Promise<RunInterruptedError> {
  const lost = await saveStaged(pass, processed);
  return new RunInterruptedError(
    `scoring stopped by ${by}: the image(s) in flight were dropped; the ${done} image(s) done are kept in ` +
      `${pass.options.out}${lost}: run the same command again to resume`,
    by,
  );
}

/** A stop before scoring began: nothing of this run was written yet. */
function throwIfStopped(options: ScoreJobOptions): void {
  const signal = options.signal;
  if (!signal?.aborted) return;
  const by = stoppedBy(signal);
  throw new RunInterruptedError(`scoring stopped by ${by} before its first image; nothing was written to ${options.out}`, by);
}

/** Returned by `Stop.race` when the run was stopped first. */
const STOPPED = Symbol("stopped");

/**
 * The run's stop request, seen by every wait that must end with it. One listener on the
 * caller's signal, whatever the number of reads in flight (AbortSignal warns past ten); each
 * wait is removed when it settles, so a long run holds nothing per image.
 */
class Stop {
  private readonly waiters = new Set<() => void>();
  private readonly onAbort = (): void => {
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  };

  constructor(readonly signal: AbortSignal | undefined) {
    signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  get requested(): boolean {
    return this.signal?.aborted === true;
  }

  /** `work`'s outcome, or STOPPED as soon as the run is stopped; `work` then goes on unobserved. */
  race<T>(work: Promise<T>): Promise<T | typeof STOPPED> {
    if (this.signal === undefined) return work;
    return new Promise((resolve, reject) => {
      const wake = (): void => resolve(STOPPED);
      if (this.requested) wake();
      else this.waiters.add(wake);
      work.then(
        (value) => {
          this.waiters.delete(wake);
          resolve(value);
        },
        (error: unknown) => {
          this.waiters.delete(wake);
          reject(error);
        },
      );
    });
  }

  /**
   * The images to score, taken one at a time until the run is stopped. A read still in flight
   * then fails at once, so a stalled GET of an image that will be dropped does not hold the stop.
   */
  *images(images: readonly ImageInput[]): Generator<ImageInput> {
    for (const image of images) {
      if (this.requested) return;
      yield {
        ...image,
        read: async () => {
          const bytes = await this.race(image.read());
          if (bytes === STOPPED) throw new RunInterruptedError(`read of ${image.key} abandoned: the run was stopped`, this.by);
          return bytes;
        },
      };
    }
  }

  /** Who asked, for messages. */
  get by(): string {
    return this.signal === undefined ? "a stop request" : stoppedBy(this.signal);
  }

  release(): void {
    this.signal?.removeEventListener("abort", this.onAbort);
  }
}

/** Scores the images not yet in results.jsonl, appending each record as it comes. */
async function scorePending(pass: ScoringPass): Promise<{ processed: number; scored: number }> {
  const { options, inputs, writer, destination } = pass;
  const todo = inputs.keys.filter((key) => !writer.isDone(key));
  const resumed = inputs.keys.length - todo.length;
  if (resumed > 0) pass.stderr.write(`resuming: ${resumed} of ${inputs.keys.length} images already in ${options.out}\n`);
  const check = new LabelCheck(inputs.remappings);
  // A resumed run is checked on the records it already has, so a bad run stops before more work.
  for (const record of writer.records(inputs.keys)) labelVerdict(pass, check.add(record));
  const readOf = inputs.source.reads(todo, { maxBytes: options.inputMaxBytes ?? DEFAULT_INPUT_MAX_BYTES });
  const images: ImageInput[] = todo.map((key) => ({ key, label: inputs.labelOf(key), read: () => readOf(key) }));
  const progress =
    options.progress === false ? undefined : createProgress({ total: todo.length, stream: pass.stderr });
  const checkpointMs = (options.checkpointSeconds ?? 300) * 1000;
  let lastCheckpoint = Date.now();
  let processed = 0;
  let scored = 0;
  const stop = new Stop(options.signal);
  const records = scoreImages(stop.images(images), {
    models: pass.models,
    crops: pass.crops,
    classNames: inputs.synsets.names,
    applyExifOrientation: options.applyExifOrientation ?? false,
    classes: inputs.subset?.indices,
    ...(options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {}),
    ...(options.batchCrops !== undefined ? { batchCrops: options.batchCrops } : {}),
  })[Symbol.asyncIterator]();
  try {
    for (;;) {
      // Checked before asking for the next record too: a stop that came while a record was
      // written must not start the scorer again.
      const next = stop.requested ? STOPPED : await stop.race(records.next());
      if (next === STOPPED) throw await stopOnRequest(pass, stop.by, resumed + processed, processed);
      if (next.done === true) break;
      await writer.append(next.value);
      processed++;
      if (!isFailed(next.value)) scored++;
      progress?.tick(isFailed(next.value));
      labelVerdict(pass, check.add(next.value));
      if (destination.remote && Date.now() - lastCheckpoint >= checkpointMs) {
        // The appended file is what a resume reads; order is restored at the end.
        await upload(destination, [RESULTS_FILE]);
        lastCheckpoint = Date.now();
      }
    }
  } catch (error) {
    progress?.stop();
    if (error instanceof RunInterruptedError) throw error;
    throw await stopOnFault(pass, error, resumed + processed, processed);
  } finally {
    progress?.stop();
    // After a stop the scorer is left mid-image: its own cleanup waits for the engine call in
    // flight, which must end before the engines are disposed.
    await records.return?.(undefined).catch(() => undefined);
    stop.release();
  }
  labelVerdict(pass, check.finish());
  return { processed, scored };
}

/**
 * Prints the label check's diagnosis once it is made, and stops the run when a remapping wins
 * (unless the check is off). What was written stays in results.jsonl, under the run header of
 * the wrong label file, so a corrected run must use another output folder.
 */
function labelVerdict(pass: ScoringPass, diagnosis: ReturnType<LabelCheck["add"]>): void {
  if (diagnosis === undefined) return;
  const stop = diagnosis.winner !== null && pass.options.labelCheck !== false;
  if (stop) throw mismatchError(diagnosis, `scoring stopped after ${diagnosis.images} labelled image(s)`);
  pass.stderr.write(`${diagnosis.winner !== null ? "warning (label check off): " : ""}${describeDiagnosis(diagnosis)}\n`);
}

/** summary.json, run.json and report.html from the records, uploaded for an S3 out, and the Table 3 block printed. */
async function finishRun(
  pass: ScoringPass,
  done: { processed: number; scored: number; startedAt: Date },
  stdout: NodeJS.WritableStream,
): Promise<ScoreJobResult> {
  const { writer, destination, inputs, options } = pass;
  const keys = inputs.keys;
  const infos = pass.models.map(({ info }) => info);
  const wallSeconds = (Date.now() - done.startedAt.getTime()) / 1000;
  // Which labels and classes the errors are over travels with the figures (PROTOCOL.md leaves room beside them).
  const summary = { ...summarize(writer.records(keys), infos, pass.crops, inputs.extras), labelSpace: inputs.labelSpace };
  await writer.finish(keys, summary);
  // A re-run that scored nothing keeps the facts of the run that did the work.
  const facts =
    done.processed > 0
      ? {
          engine: [...new Set(pass.models.map(({ engine }) => engine.engine))].join(", "),
          backend: [...new Set(pass.models.map(({ engine }) => engine.backend))].join(", "),
          startedAt: done.startedAt.toISOString(),
          wallSeconds,
          cropsPerSecond: (done.scored * pass.crops * infos.length) / Math.max(wallSeconds, 1e-9),
          images: done.processed,
          models: infos.map((info) => ({ file: info.file, sha256: info.sha256, flavour: info.flavour })),
        }
      : await readRunFacts(destination.local);
  if (done.processed > 0 && facts) await writeRunFacts(destination.local, facts);
  const reportPath = await writeReport(destination.local, withRunFacts(summary, facts), writer.records(keys), {
    classNames: inputs.synsets.names,
  });
  await upload(destination, [RESULTS_FILE, SUMMARY_FILE, RUN_FACTS_FILE, REPORT_FILE]);
  const table = formatTable3(summary);
  const shownReport = destination.remote ? `${options.out.replace(/\/+$/, "")}/${REPORT_FILE}` : reportPath;
  stdout.write(`${table}\nreport: ${shownReport}\n`);
  return { summary, table, processed: done.processed, resumed: keys.length - done.processed };
}

/** The engine settings given, without undefined entries (exactOptionalPropertyTypes). */
function engineSettingsOf(options: EngineSettings): EngineSettings {
  const keys = ["backend", "preprocess", "threads", "device", "requireGpu", "tfjsWorkers", "graphEdits"] as const;
  return Object.fromEntries(keys.filter((key) => options[key] !== undefined).map((key) => [key, options[key]])) as EngineSettings;
}

/**
 * Scores every image under `input` into the out folder (local or S3): lists images, attaches
 * labels, checks that results already there were made under the same settings (run-header.json),
 * skips keys an earlier run already wrote, scores the rest (appending as it goes), then
 * rewrites results.jsonl in listing order, writes summary.json, run.json and report.html, and
 * prints the Table 3 block and the report's path.
 *
 * @throws ConfigurationError before any file is changed when the out folder holds a run made
 *   under other settings, naming each differing setting with both values.
 * @throws StorageError when an image cannot be read for any reason but being gone (denied,
 *   throttled, timed out): the run stops, keeping its results for a resume.
 * @throws ModelOutputError when a model's outputs are not finite; nothing from it is recorded.
 *   After any failure while scoring, the records already written stand (uploaded to an S3 out).
 * @throws RunInterruptedError when `signal` stops the run; its records stand, as above.
 */
export async function runScoreJob(options: ScoreJobOptions): Promise<ScoreJobResult> {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const crops = options.crops ?? 144;
  if (options.models.length === 0) throw new ConfigurationError("score needs at least one model");
  const inputs = await gatherInputs(options, crops, stderr);
  throwIfStopped(options);

  const destination = await openDestination(options);
  try {
    return await scoreToDestination(options, inputs, crops, destination, stdout, stderr);
  } finally {
    if (destination.ownStaging) await rm(destination.ownStaging, { recursive: true, force: true });
  }
}

async function scoreToDestination(
  options: ScoreJobOptions,
  inputs: RunInputs,
  crops: CropCount,
  destination: Destination,
  stdout: NonNullable<ScoreJobOptions["stdout"]>,
  stderr: NodeJS.WriteStream,
): Promise<ScoreJobResult> {
  const previous = await readResumeState(destination.local);
  const header = await checkResumable(destination.local, previous, inputs.header, options.out, stderr);
  const startedAt = new Date();
  const models = await loadModels(inputs.modelFiles, options);
  let writer: ResultsWriter | undefined;
  try {
    throwIfStopped(options);
    writer = await ResultsWriter.open(destination.local, previous);
    if (header !== undefined) {
      await destination.local.write(RUN_HEADER_FILE, formatRunHeader(header));
      // Up at once, so a resume from the bucket is checked even before the first checkpoint.
      await upload(destination, [RUN_HEADER_FILE]);
    }
    const pass: ScoringPass = { options, crops, inputs, models, writer, destination, stderr };
    const done = await scorePending(pass);
    // The engines' memory is not needed for the summary and the report.
    await Promise.all(models.map(({ engine }) => engine.dispose()));
    return await finishRun(pass, { ...done, startedAt }, stdout);
  } finally {
    // dispose() is safe to call twice.
    await Promise.all(models.map(({ engine }) => engine.dispose()));
    await writer?.close();
  }
}

import { randomBytes } from "node:crypto";
import { isAbsolute, relative, resolve, sep } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { DEFAULT_MAX_PIXELS } from "../model/image/decode.js";
import { ConfigurationError, ModelFormatError } from "../model/errors.js";
import { StorageError } from "../storage/errors.js";
import { describeOnnxModel } from "../model/onnx/googlenet-recognition.js";
import type { EngineChoice } from "../model/load.js";
import type { CropCount } from "../model/predict.js";
import { CROP_COUNTS } from "../model/predict.js";
import { FLAVOURS, type Flavour } from "../model/preprocess.js";
import type { Synsets } from "../model/synsets.js";
import { defaultSqsClient } from "../storage/aws-clients.js";
import { describeProblems, parseLabels } from "../scoring/labels.js";
import { parseClassSubset } from "../scoring/class-subset.js";
import { LABEL_CHECK_FILE, describeDiagnosis, mismatchError, type LabelDiagnosis } from "../scoring/label-check.js";
import { labelsFromLayout, type LabelLayout } from "../scoring/label-space.js";
import { checkPlannedLabels } from "./plan-label-check.js";
import {
  BUILT_IN_LABELS_SOURCE,
  loadBuiltInValidationLabels,
  validationLabelOf,
  validationNumber,
} from "../scoring/imagenet-validation.js";
import {
  ARCHIVES_MANIFEST_FORMAT,
  batchMessage,
  codeVersion,
  digestOfManifest,
  MANIFEST_FORMAT,
  MANIFEST_KEY,
  serializeManifest,
  type Manifest,
  type ManifestModel,
} from "./manifest.js";
import { cutBatches, manifestArchives, openPlanInput, storeArchiveIndexes } from "./plan-archives.js";
import type { ImageSource } from "../storage/archive/image-source.js";
import { IMAGE_EXTENSIONS } from "../storage/image-keys.js";
import { S3Location } from "../storage/s3-location.js";
import { readUrl } from "../storage/open-location.js";
import { isS3Url, LocalLocation, sha256OfBytes, type Location } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { DEFAULT_BATCH_DEADLINE_SECONDS, FASTEST_CROPS_PER_SECOND, MAX_HIDDEN_SECONDS } from "./queue-timing.js";

/** Images per batch (one queue message) when the plan does not say. */
export const DEFAULT_BATCH_SIZE = 32;

/** SQS takes at most 10 entries per SendMessageBatch. */
const SEND_BATCH_ENTRIES = 10;
const SEND_ATTEMPTS = 3;
/** Keys of a non-empty `--out` named in the refusal; the count covers the rest. */
const KEYS_SHOWN = 5;

/**
 * Reads a model's flavour (and checks that a worker can load it) from its bytes. `preprocess`
 * is `--preprocess`, when given.
 */
export type DescribeModel = (
  bytes: Uint8Array,
  url: string,
  engine: EngineChoice,
  preprocess?: Flavour,
) => Promise<{ flavour: Flavour }>;

export interface PlanOptions {
  /**
   * Folder or s3:// prefix holding the images (keys ending .jpg .jpeg .png .webp, any case) and
   * tar archives of them, or one tar archive. A gzipped archive is refused: workers read by range.
   */
  readonly input: string;
  /**
   * Folder or s3:// prefix where archive indexes are kept between plans, by the archive's
   * version (ETag) and size: an archive found there is not streamed again, one not found is
   * indexed and stored there. Default: none (every archive is streamed once per plan).
   */
  readonly indexCache?: string;
  /** Hears each archive's index build: bytes passed of its size. Default: nothing. */
  readonly onIndexProgress?: (archive: string, bytes: number, size: number) => void;
  /** Folder or s3:// prefix for the run: manifest.json, batches/, results.jsonl, summary.json. Must be empty unless `replace`. */
  readonly out: string;
  readonly queueUrl: string;
  /** Model files (paths or s3:// URLs); more than one makes an ensemble. */
  readonly models: readonly string[];
  /**
   * Label file (path or s3:// URL). Default: the built-in ILSVRC 2012 validation labels for
   * keys named ILSVRC2012_val_NNNNNNNN.* (unless `builtInLabels` is false), else the WNID in
   * each image's file name or folder.
   */
  readonly labels?: string;
  /** Without `labels`, label validation-named keys from the shipped validation labels. Default: true. */
  readonly builtInLabels?: boolean;
  /** The 1000 classes, for WNID label formats and WNID-in-name labels. */
  readonly synsets: Synsets;
  /** Crops per image. Default: 144. */
  readonly crops?: CropCount;
  /** Images per batch. Default: {@link DEFAULT_BATCH_SIZE} (32). */
  readonly batchSize?: number;
  /** Engine the workers use. Default: "auto". */
  readonly engine?: EngineChoice;
  /**
   * The deadline the workers run with (their own setting), in seconds: a batch that could not
   * be scored within it even at {@link FASTEST_CROPS_PER_SECOND} is refused. Default:
   * {@link DEFAULT_BATCH_DEADLINE_SECONDS} (900), the workers' default.
   */
  readonly deadlineSeconds?: number;
  /** Rotate images by their EXIF orientation. Default: false (ImageNet validation convention). */
  readonly applyExifOrientation?: boolean;
  /** Images with more pixels become error records. Default: model/image/decode.ts's DEFAULT_MAX_PIXELS (100 million). */
  readonly maxPixels?: number;
  /**
   * Input convention for every model, as `score --preprocess`: lets onnxruntime run graphs the
   * architecture reader does not recognise. Default: none (every model must be recognised).
   */
  readonly preprocess?: Flavour;
  /**
   * Class subset file (path or s3:// URL; WNIDs or indices, one per line): recorded in the
   * manifest, so every worker restricts each crop's softmax to it. Default: all 1000 classes.
   */
  readonly classes?: string;
  /**
   * Refuse to send (LabelMismatchError) when the label check on ~200 labelled images at 1 crop
   * finds the labels in another label space than the model's (scoring/label-check.ts); when
   * false no image is scored here and nothing is checked. Default: true.
   */
  readonly labelCheck?: boolean;
  /** Delete everything under `out` before writing the manifest. Default: false (a non-empty `out` is refused). */
  readonly replace?: boolean;
  /** Run id. Default: UTC time plus a random suffix, e.g. 20260101T120000Z-1a2b3c. */
  readonly runId?: string;
  /** Default: clients built from the environment. */
  readonly clients?: { readonly s3?: S3Client; readonly sqs?: SQSClient };
  /** How to learn a model's flavour. Default: {@link describeModelFlavour} (reads the ONNX graph, no engine). */
  readonly describeModel?: DescribeModel;
  /** Clock for createdAt and the default run id. Default: the system clock. */
  readonly now?: () => Date;
}

export interface PlanResult {
  readonly runId: string;
  /** What the input held: "1 tar archive, 1,000 images", "120 images". */
  readonly input: string;
  /** Archives whose index was built by a pass over their bytes, and taken from the index cache. */
  readonly indexes?: { readonly built: number; readonly reused: number };
  /** The run's identity (queue/manifest.ts's digestOfManifest), carried by every message. */
  readonly manifestDigest: string;
  readonly images: number;
  readonly labelled: number;
  readonly batches: number;
  readonly manifestUrl: string;
  /** Objects deleted from `out` by `replace`, an earlier manifest (overwritten) not counted; 0 when it was empty or `replace` was off. */
  readonly replaced: number;
  /** Label file lines that were skipped (their images count as unlabelled), when any. */
  readonly labelWarnings?: string;
  /** Which label space the labels came from. */
  readonly labelLayout: LabelLayout;
  /** The label check's diagnosis (stored in label-check.json beside the manifest), when any image is labelled. */
  readonly labelCheck?: LabelDiagnosis;
}

/**
 * A model's flavour from its ONNX graph, without building an engine. Without `preprocess` it
 * refuses graphs it cannot place; with it, it takes the flavour from the flag, as loadEngine
 * does, refusing a recognised graph of the other flavour and tfjs for an unrecognised one
 * (tfjs builds GoogLeNet itself), so no worker fails on every batch of a run planned here.
 */
export const describeModelFlavour: DescribeModel = async (bytes, url, engine, preprocess) => {
  const description = describeOnnxModel(bytes, url);
  const recognised = description.flavour;
  if (preprocess === undefined) {
    if (recognised !== undefined) return { flavour: recognised };
    throw new ModelFormatError(
      `${url}: not a GoogLeNet this tool recognises, so workers would not know its input convention; ` +
        `name it with preprocess ${FLAVOURS.join(" or preprocess ")} (engine onnxruntime or auto)` +
        (description.unrecognisedReason ? ` (not recognised because: ${description.unrecognisedReason})` : ""),
    );
  }
  if (recognised !== undefined && recognised !== preprocess) {
    throw new ConfigurationError(
      `${url} is recognised as a ${recognised} GoogLeNet, but preprocess ${preprocess} was asked for; ` +
        `leave preprocess unset, or set it to ${recognised}`,
    );
  }
  if (recognised === undefined && engine === "tfjs") {
    throw new ModelFormatError(
      `${url}: the tfjs engine builds GoogLeNet from the graph and does not recognise this one; ` +
        `plan with the onnxruntime engine (or auto) to run it with preprocess ${preprocess}`,
    );
  }
  return { flavour: preprocess };
};

/** Local paths become absolute, so workers started elsewhere on the host resolve them alike. */
function absolute(url: string): string {
  return isS3Url(url) || isAbsolute(url) ? url : resolve(url);
}

function defaultRunId(now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

interface Settings {
  readonly batchSize: number;
  readonly crops: CropCount;
  readonly engine: EngineChoice;
  readonly runId: string;
  readonly createdAt: string;
  readonly applyExifOrientation: boolean;
  readonly maxPixels: number;
  readonly preprocess: Flavour | undefined;
}

/**
 * Refuses batches no worker could finish within its deadline even at the fastest speed assumed
 * (FASTEST_CROPS_PER_SECOND, an estimate): each of their messages would be handed back at every
 * deadline until the dead-letter queue, taking a worker down each time.
 */
function checkBatchFitsDeadline(batchSize: number, crops: CropCount, models: number, deadlineSeconds: number): void {
  if (!Number.isInteger(deadlineSeconds) || deadlineSeconds < 1 || deadlineSeconds > MAX_HIDDEN_SECONDS) {
    throw new ConfigurationError(`deadline must be a whole number of seconds from 1 to ${MAX_HIDDEN_SECONDS}, got ${deadlineSeconds}`);
  }
  const work = batchSize * crops * models;
  const possible = deadlineSeconds * FASTEST_CROPS_PER_SECOND;
  if (work <= possible) return;
  const fitting = Math.floor(possible / (crops * models));
  const modelsText = `${models} model${models === 1 ? "" : "s"}`;
  throw new ConfigurationError(
    `a batch of ${batchSize} images x ${crops} crops x ${modelsText} is ${work} crops, but a worker can score at most ` +
      `${possible} crops within its deadline of ${deadlineSeconds} s even at ${FASTEST_CROPS_PER_SECOND} crops/s per model ` +
      `(an estimate: twice the README's assumed, unmeasured T4 speed of 500 crops/s; 77.5 crops/s was measured on 2 CPU cores), ` +
      `so every batch would pass its deadline and end in the dead-letter queue. ` +
      (fitting >= 1
        ? `Give at most ${fitting} images per batch, fewer crops, or a longer deadline (the workers' own as well). Nothing was sent`
        : `Give fewer crops or a longer deadline (the workers' own as well). Nothing was sent`),
  );
}

/** Checks the options once, before anything is read, deleted or sent. */
function settingsOf(options: PlanOptions): Settings {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new ConfigurationError(`batch size must be a positive integer, got ${batchSize}`);
  }
  const crops = options.crops ?? 144;
  if (!CROP_COUNTS.includes(crops)) {
    throw new ConfigurationError(`unknown crop count ${String(crops)}; use one of: ${CROP_COUNTS.join(", ")}`);
  }
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!Number.isInteger(maxPixels) || maxPixels < 1) {
    throw new ConfigurationError(`max pixels must be a positive integer (default ${DEFAULT_MAX_PIXELS}), got ${maxPixels}`);
  }
  if (options.preprocess !== undefined && !FLAVOURS.includes(options.preprocess)) {
    throw new ConfigurationError(`unknown preprocess "${String(options.preprocess)}"; use one of: ${FLAVOURS.join(", ")}`);
  }
  if (options.models.length === 0) throw new ConfigurationError("plan needs at least one model");
  checkBatchFitsDeadline(batchSize, crops, options.models.length, options.deadlineSeconds ?? DEFAULT_BATCH_DEADLINE_SECONDS);
  const now = (options.now ?? (() => new Date()))();
  const runId = options.runId ?? defaultRunId(now);
  if (!/^[A-Za-z0-9_.-]+$/.test(runId)) {
    throw new ConfigurationError(`run id "${runId}" may hold only letters, digits, ".", "_" and "-"`);
  }
  return {
    batchSize,
    crops,
    engine: options.engine ?? "auto",
    runId,
    createdAt: now.toISOString(),
    applyExifOrientation: options.applyExifOrientation ?? false,
    maxPixels,
    preprocess: options.preprocess,
  };
}

/** Whether `url` is `folder` itself or lies below it (both absolute paths, or both s3:// URLs). */
function isWithin(url: string, folder: string): boolean {
  if (isS3Url(url) !== isS3Url(folder)) return false;
  if (isS3Url(folder)) {
    const base = folder.replace(/\/+$/, "");
    const target = url.replace(/\/+$/, "");
    return target === base || target.startsWith(`${base}/`);
  }
  const rel = relative(resolve(folder), resolve(url));
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/**
 * Refuses an `out` that holds anything, unless `replace`: batch files left there by an earlier
 * run (even one whose manifest was deleted) would otherwise sit beside the new run's. With
 * `replace`, refuses to empty a bucket's root, the folder we run in (or one above it), or a
 * folder holding what this plan reads.
 */
async function checkOut(out: Location, replace: boolean, reads: readonly string[]): Promise<void> {
  const found: string[] = [];
  for await (const key of out.list()) found.push(key);
  if (found.length === 0) return;
  if (!replace) {
    const shown = found.slice(0, KEYS_SHOWN).join(", ");
    throw new ConfigurationError(
      `${out.url} is not empty: it holds ${found.length} object${found.length === 1 ? "" : "s"} ` +
        `(${shown}${found.length > KEYS_SHOWN ? ", ..." : ""}), and files of another run there could be taken for this one's. ` +
        `Give the run its own empty output prefix, or replace it to delete everything under ${out.url} first. Nothing was sent`,
    );
  }
  if (out instanceof S3Location && out.prefix === "") {
    throw new ConfigurationError(`replacing would empty the whole bucket ${out.url}; give the run a prefix, e.g. ${out.url}/runs/RUN`);
  }
  if (out instanceof LocalLocation && isWithin(process.cwd(), out.url)) {
    throw new ConfigurationError(`replacing would empty ${resolve(out.url)}, which holds the current directory; give the run an output folder of its own`);
  }
  const endangered = reads.filter((url) => isWithin(url, out.url));
  if (endangered.length > 0) {
    throw new ConfigurationError(
      `replacing would delete ${endangered.join(", ")}, which this plan reads from ${out.url}; give the run an output folder of its own`,
    );
  }
}

function assertImages(source: ImageSource, inputUrl: string): void {
  if (source.keys.length === 0) {
    throw new ConfigurationError(`no images (${IMAGE_EXTENSIONS.join(" ")}, any case, loose or in .tar archives) under ${inputUrl}`);
  }
}

interface Labelled {
  readonly labels: (number | null)[];
  readonly source: string | null;
  readonly layout: LabelLayout;
  readonly warnings?: string;
}

/** The manifest's `labels` when WebDataset `.cls` members label the images. */
const CLASS_MEMBERS_SOURCE = "WebDataset .cls members";

async function labelKeys(images: ImageSource, options: PlanOptions, s3: S3Client | undefined): Promise<Labelled> {
  const keys = images.keys;
  if (options.labels === undefined) {
    const named = options.builtInLabels !== false && keys.some((key) => validationNumber(key) !== undefined);
    const builtIn = named ? (await loadBuiltInValidationLabels(options.synsets)).labels : undefined;
    const { layout, labelOf } = labelsFromLayout(keys, options.synsets);
    // As `score` takes them: the built-in labels first, then a sample's .cls member, then the key.
    const classOf = (key: string) => (options.builtInLabels !== false ? (images.classOf(key) ?? null) : null);
    const labels = keys.map((key) => (builtIn ? validationLabelOf(builtIn, key) : null) ?? classOf(key) ?? labelOf(key));
    const used = builtIn !== undefined && keys.some((key) => validationLabelOf(builtIn, key) !== null);
    const fromClassMembers = !used && keys.some((key) => classOf(key) !== null);
    const from = used ? BUILT_IN_LABELS_SOURCE : fromClassMembers ? CLASS_MEMBERS_SOURCE : layout === "folder-index" ? "folder-index" : "wnid-in-key";
    return { labels, source: from, layout };
  }
  const source = absolute(options.labels);
  const table = parseLabels((await readUrl(source, s3)).toString("utf8"), { source, synsets: options.synsets });
  const warnings = describeProblems(table);
  return { labels: keys.map((key) => table.lookup(key)), source, layout: "label-file", ...(warnings !== undefined ? { warnings } : {}) };
}

async function describeModels(options: PlanOptions, settings: Settings, s3: S3Client | undefined): Promise<ManifestModel[]> {
  const describe = options.describeModel ?? describeModelFlavour;
  const models: ManifestModel[] = [];
  for (const given of options.models) {
    const url = absolute(given);
    const bytes = await readUrl(url, s3);
    const { flavour } = await describe(bytes, url, settings.engine, settings.preprocess);
    models.push({ url, sha256: sha256OfBytes(bytes), flavour, preprocess: settings.preprocess ?? null });
  }
  return models;
}

/**
 * Plans a distributed run: lists the input, attaches labels, cuts the images into batches,
 * writes `<out>/manifest.json` and sends one queue message per batch, each carrying the
 * manifest's digest. Refuses an `out` that holds anything unless `replace`, which empties it
 * only after everything else has been read and checked, so a bad model or label file never
 * costs the old run's files.
 */
export async function planRun(options: PlanOptions): Promise<PlanResult> {
  const settings = settingsOf(options);
  const s3 = options.clients?.s3;
  const sqs = options.clients?.sqs ?? defaultSqsClient();
  const inputUrl = absolute(options.input);
  const out = openLocation(absolute(options.out), { s3 });
  const replace = options.replace ?? false;
  const reads = [
    inputUrl,
    ...options.models.map(absolute),
    ...[options.labels, options.classes, options.indexCache].filter((file): file is string => file !== undefined).map(absolute),
  ];
  await checkOut(out, replace, reads);

  const { source, reused } = await openPlanInput(openLocation(inputUrl, { s3 }), {
    s3,
    indexCache: options.indexCache === undefined ? undefined : absolute(options.indexCache),
    onIndexProgress: options.onIndexProgress,
  });
  assertImages(source, inputUrl);
  const keys = source.keys;
  const labelled = await labelKeys(source, options, s3);
  const models = await describeModels(options, settings, s3);
  const classes =
    options.classes === undefined
      ? undefined
      : parseClassSubset((await readUrl(absolute(options.classes), s3)).toString("utf8"), options.synsets, absolute(options.classes)).indices;
  const diagnosis = options.labelCheck === false ? undefined : await checkPlannedLabels({
    input: inputUrl,
    keys,
    reads: (sample) => source.reads(sample),
    labels: labelled.labels,
    models,
    engine: settings.engine,
    applyExifOrientation: settings.applyExifOrientation,
    maxPixels: settings.maxPixels,
    classes,
    s3,
  });
  if (diagnosis?.winner) throw mismatchError(diagnosis, "nothing was sent");
  const batches = cutBatches(source, labelled.labels, settings.batchSize);
  const hasArchives = source.archives.length > 0;
  const manifest: Manifest = {
    format: hasArchives ? ARCHIVES_MANIFEST_FORMAT : MANIFEST_FORMAT,
    runId: settings.runId,
    createdAt: settings.createdAt,
    codeVersion: codeVersion(),
    input: inputUrl,
    out: out.url,
    models,
    crops: settings.crops,
    engine: settings.engine,
    applyExifOrientation: settings.applyExifOrientation,
    maxPixels: settings.maxPixels,
    labels: labelled.source,
    ...(classes !== undefined ? { classes } : {}),
    images: keys.length,
    ...(hasArchives ? { archives: manifestArchives(source) } : {}),
    batches,
  };
  // The manifest goes first: a worker that gets a message must find it. With replace it
  // overwrites the earlier one in place before the rest is deleted, so `out` never lacks a
  // manifest: a worker holding the old run's message sees another run (superseded, deleted),
  // never a missing manifest (which would dead-letter it).
  await out.write(MANIFEST_KEY, serializeManifest(manifest));
  const replaced = replace ? await out.clear([MANIFEST_KEY]) : 0;
  // After the clear (which would delete them) and before any message (whose worker reads them).
  await storeArchiveIndexes(out, source);
  if (diagnosis !== undefined) {
    const stored = { ...diagnosis, summary: describeDiagnosis(diagnosis) };
    await out.write(LABEL_CHECK_FILE, `${JSON.stringify(stored, null, 2)}\n`);
  }
  await sendBatches(sqs, options.queueUrl, manifest);
  return {
    runId: settings.runId,
    input: source.describe(),
    ...(hasArchives ? { indexes: { built: source.archives.length - reused.size, reused: reused.size } } : {}),
    manifestDigest: digestOfManifest(manifest),
    images: keys.length,
    labelled: labelled.labels.filter((label) => label !== null).length,
    batches: batches.length,
    manifestUrl: `${out.url}/${MANIFEST_KEY}`,
    replaced,
    labelLayout: labelled.layout,
    ...(diagnosis !== undefined ? { labelCheck: diagnosis } : {}),
    ...(labelled.warnings !== undefined ? { labelWarnings: labelled.warnings } : {}),
  };
}

/**
 * Sends one message per batch (all of them, or only `only`), ten to a request, retrying
 * entries SQS reports as failed. Each carries the manifest's digest, computed here from
 * `manifest` (the manifest as written or as read back: the digest is of its content).
 */
export async function sendBatches(
  sqs: SQSClient,
  queueUrl: string,
  manifest: Manifest,
  only?: readonly string[],
): Promise<void> {
  const wanted = only === undefined ? manifest.batches : manifest.batches.filter((batch) => only.includes(batch.id));
  const manifestDigest = digestOfManifest(manifest);
  for (let start = 0; start < wanted.length; start += SEND_BATCH_ENTRIES) {
    let pending = wanted.slice(start, start + SEND_BATCH_ENTRIES);
    for (let attempt = 1; pending.length > 0; attempt++) {
      let response;
      try {
        response = await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: pending.map((batch) => ({ Id: batch.id, MessageBody: JSON.stringify(batchMessage(manifest, batch, manifestDigest)) })),
          }),
        );
      } catch (error) {
        throw new StorageError(`cannot send batch messages to ${queueUrl}: ${(error as Error).message}`, { cause: error });
      }
      const failed = response.Failed ?? [];
      if (failed.length === 0) break;
      if (attempt >= SEND_ATTEMPTS) {
        const detail = failed.map((entry) => `${entry.Id ?? "?"} (${entry.Code ?? "?"}: ${entry.Message ?? ""})`);
        throw new StorageError(`queue ${queueUrl} refused batch messages: ${detail.join(", ")}`);
      }
      const retry = new Set(failed.map((entry) => entry.Id));
      pending = pending.filter((batch) => retry.has(batch.id));
    }
  }
}

import type { Scheme } from "../model/image/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import { StorageError } from "../storage/errors.js";
import { schemesForCount } from "../model/predict.js";
import { BATCHES_FOLDER, batchResultKeyFor, readManifestWithDigest, type Manifest } from "./manifest.js";
import { isFailed, type ResultRecord, type Summary } from "../scoring/records.js";
import {
  BUILT_IN_LABELS_SOURCE,
  realLabelsForKeys,
  validationNumber,
  VALIDATION_LABELS_FILE,
  type RealLabels,
} from "../scoring/imagenet-validation.js";
import { RESULTS_FILE, SUMMARY_FILE, parseResultRecords, serializeSummary } from "../scoring/results.js";
import { classErrors } from "../scoring/statistics.js";
import { sha256OfBytes, type Location } from "../storage/location.js";
import { summarize, type SummaryExtras } from "../scoring/summary.js";
import { writeReport } from "../scoring/report/index.js";
import { LABEL_CHECK_FILE } from "../scoring/label-check.js";
import type { LabelLayout, QueuedLabelSpace } from "../scoring/label-space.js";

/** Written on every aggregate, complete or not, so a partial run is never mistaken for a result. */
export const STATUS_FILE = "aggregate-status.json";

/** Accuracy on one true class, over the scored images labelled with it. */
export interface ClassAccuracy {
  readonly class: number;
  /** First synset name, or null when neither the options nor any prediction names the class. */
  readonly name: string | null;
  readonly images: number;
  readonly top1Error: number;
  readonly top5Error: number;
}

/** summary.json of an aggregated run: PROTOCOL.md's summary plus per-class accuracy. */
export interface RunSummary extends Summary {
  readonly runId: string;
  /** The scheme the per-class rates are computed under: the run's largest. */
  readonly perClassScheme: Scheme;
  /** One entry per labelled class, in class-index order. */
  readonly perClass: readonly ClassAccuracy[];
  /** Which labels and classes the errors are over, as a local score's summary.json says. */
  readonly labelSpace: QueuedLabelSpace;
}

export interface AggregateOptions {
  /** Class names by index for `perClass`. Default: the names found in the records' top-5 lists. */
  readonly classNames?: readonly string[];
  /** Write results.jsonl and summary.json when complete. Default: true. */
  readonly write?: boolean;
  /**
   * Batch files (keys relative to the run folder, `batches/<batch>.<digest>.jsonl`) the caller
   * knows were just written: an S3 event's keys. When aggregate-status.json already says this run
   * is complete, the listing matches it and these files hold the bytes it was aggregated from, the
   * run is not aggregated again: a duplicate event then reads the manifest, the status and these
   * files, and writes nothing, instead of reading every batch file and rewriting the results.
   * Default: undefined (a complete run is aggregated again in full, as a person running
   * `aggregate` expects).
   */
  readonly changedKeys?: readonly string[];
  /**
   * Write aggregate-status.json when batches are missing. The Lambda passes false: S3 writes are
   * last-writer-wins, so a call that listed just before the last batch landed could put "waiting"
   * over the "complete" that the last batch's own call had just written. Default: true.
   */
  readonly writeWaiting?: boolean;
  /**
   * ReaL labels for validation-named keys. Default: the shipped data/real.json when any key has
   * a validation name (the aggregator Lambda's bundle carries it); null: no ReaL.
   */
  readonly realLabels?: RealLabels | null;
}

export interface AggregateResult {
  readonly complete: boolean;
  readonly runId: string;
  /** The manifest's digest; this run's batch files are named by it. */
  readonly manifestDigest: string;
  readonly batches: number;
  /** Batch ids with no result file of this run yet, in manifest order. */
  readonly missingBatches: string[];
  /** Keys under `batches/` that are not this run's (another digest, old-style names), sorted; never read. */
  readonly ignoredBatchFiles: string[];
  /**
   * True when batches are missing but aggregate-status.json already says this run is complete:
   * the status and the final files were left as they are rather than downgraded.
   */
  readonly keptComplete: boolean;
  /**
   * Present (true) when aggregate-status.json already said complete and `changedKeys` held the
   * bytes it was aggregated from: nothing was written and `summary` is absent.
   */
  readonly alreadyAggregated?: true;
  readonly summary?: RunSummary;
}

/** aggregate-status.json. Holds nothing that differs between invocations, so concurrent writers agree. */
export interface AggregateStatus {
  readonly runId: string;
  readonly manifestDigest: string;
  readonly complete: boolean;
  readonly batches: number;
  readonly finishedBatches: number;
  readonly missingBatches: readonly string[];
  readonly ignoredBatchFileCount: number;
  readonly ignoredBatchFiles: readonly string[];
  /**
   * In a complete status only: sha256 of each batch file the results were made from, by batch
   * id, so a duplicate event can tell an unchanged file from a rewritten one by reading it alone.
   */
  readonly batchSha256?: Readonly<Record<string, string>>;
}

function parseBatch(text: string, where: string, keys: readonly string[]): ResultRecord[] {
  const records = parseResultRecords(text, where);
  // A batch file is written whole by one worker; any mismatch means a stale or foreign file.
  const got = records.map((record) => record.key);
  if (got.length !== keys.length || got.some((key, i) => key !== keys[i])) {
    throw new StorageError(
      `${where} holds keys [${got.slice(0, 5).join(", ")}${got.length > 5 ? ", ..." : ""}] ` +
        `where the manifest lists [${keys.slice(0, 5).join(", ")}${keys.length > 5 ? ", ..." : ""}]; ` +
        `delete it and send that batch again`,
    );
  }
  return records;
}

/**
 * Per-class accuracy as an aggregated summary.json holds it: statistics' classErrors under
 * `scheme`, without the confusions, which the report finds again from the records.
 */
export function perClassAccuracy(
  records: readonly ResultRecord[],
  scheme: Scheme,
  classNames: readonly string[] | undefined,
): ClassAccuracy[] {
  return classErrors(records, { scheme, confusions: 0, ...(classNames ? { classNames } : {}) }).map(
    ({ confusions: _, ...accuracy }) => accuracy,
  );
}

function modelInfos(manifest: Manifest): ModelInfo[] {
  return manifest.models.map((model) => ({ file: model.url, sha256: model.sha256, flavour: model.flavour }));
}

/** What one listing of the run folder says. */
interface Stock {
  readonly missingBatches: string[];
  readonly ignoredBatchFiles: string[];
}

/**
 * Lists the run folder once: which of the manifest's batches have a file of this run, and which
 * files under batches/ belong to no batch of it. One listing per call, because the trigger fires
 * for every batch of a 50,000-image run and must not re-read the finished ones each time.
 */
async function takeStock(out: Location, manifest: Manifest, manifestDigest: string): Promise<Stock> {
  const expected = new Set(manifest.batches.map((batch) => batchResultKeyFor(manifestDigest, batch.id)));
  const present = new Set<string>();
  const ignoredBatchFiles: string[] = [];
  for await (const key of out.list()) {
    if (!key.startsWith(`${BATCHES_FOLDER}/`)) continue;
    if (expected.has(key)) present.add(key);
    // A local folder's in-flight write (LocalLocation writes `<key>.<pid>.<ms>.tmp`, then renames)
    // is not a file of any run.
    else if (!key.endsWith(".tmp")) ignoredBatchFiles.push(key);
  }
  const missingBatches = manifest.batches
    .filter((batch) => !present.has(batchResultKeyFor(manifestDigest, batch.id)))
    .map((batch) => batch.id);
  return { missingBatches, ignoredBatchFiles };
}

function statusOf(manifest: Manifest, manifestDigest: string, stock: Stock, batchSha256?: Record<string, string>): AggregateStatus {
  return {
    runId: manifest.runId,
    manifestDigest,
    complete: stock.missingBatches.length === 0,
    batches: manifest.batches.length,
    finishedBatches: manifest.batches.length - stock.missingBatches.length,
    missingBatches: stock.missingBatches,
    ignoredBatchFileCount: stock.ignoredBatchFiles.length,
    ignoredBatchFiles: stock.ignoredBatchFiles,
    ...(batchSha256 === undefined ? {} : { batchSha256 }),
  };
}

const serializeStatus = (status: AggregateStatus): string => `${JSON.stringify(status, null, 2)}\n`;

/** aggregate-status.json when it records this very run (same digest) as complete, else undefined. */
async function storedComplete(out: Location, manifestDigest: string): Promise<AggregateStatus | undefined> {
  const bytes = await out.readIfExists(STATUS_FILE);
  if (bytes === undefined) return undefined;
  try {
    const stored = JSON.parse(bytes.toString("utf8")) as AggregateStatus;
    return stored.complete === true && stored.manifestDigest === manifestDigest ? stored : undefined;
  } catch {
    // An unreadable status holds nothing worth keeping.
    return undefined;
  }
}

/**
 * Whether a complete status still describes the run: the listing has the same files of other
 * runs, and each of `changedKeys` that is a batch file of this run holds the bytes recorded when
 * the run was aggregated. Reads only those files.
 */
async function stillAggregated(out: Location, stored: AggregateStatus, stock: Stock, batchIds: ReadonlyMap<string, string>, changedKeys: readonly string[]): Promise<boolean> {
  if (stored.batchSha256 === undefined) return false;
  if (JSON.stringify(stored.ignoredBatchFiles) !== JSON.stringify(stock.ignoredBatchFiles)) return false;
  for (const key of new Set(changedKeys)) {
    const id = batchIds.get(key);
    if (id === undefined) continue;
    if (sha256OfBytes(await out.read(key)) !== stored.batchSha256[id]) return false;
  }
  return true;
}

/**
 * The label space of a planned run, from the label source its manifest records (queue/plan.ts
 * labelKeys writes a label file's URL, the built-in labels' name, "folder-index" or
 * "wnid-in-key"). The built-in labels record the layout of names, as score's header does.
 */
export function labelSpaceOfManifest(manifest: Pick<Manifest, "labels" | "classes">): QueuedLabelSpace {
  const layout: LabelLayout =
    manifest.labels === "folder-index"
      ? "folder-index"
      : manifest.labels === null || manifest.labels === "wnid-in-key" || manifest.labels === BUILT_IN_LABELS_SOURCE
        ? "wnid-in-path"
        : "label-file";
  const classes = manifest.classes === undefined ? null : { count: manifest.classes.length, indices: manifest.classes };
  return { layout, classes };
}

/** plan's label check in words, from label-check.json beside the manifest; undefined for runs planned without one. */
async function readLabelCheck(out: Location): Promise<string | undefined> {
  const bytes = await out.readIfExists(LABEL_CHECK_FILE);
  if (bytes === undefined) return undefined;
  try {
    const stored = JSON.parse(bytes.toString("utf8")) as { summary?: unknown };
    return typeof stored.summary === "string" ? stored.summary : undefined;
  } catch (error) {
    throw new StorageError(`${out.url}/${LABEL_CHECK_FILE} is not JSON: ${(error as Error).message}`, { cause: error });
  }
}

/** Reads every batch file of the run (all present) and writes the final files and the status. */
async function finish(
  out: Location,
  manifest: Manifest,
  manifestDigest: string,
  stock: Stock,
  options: AggregateOptions,
): Promise<RunSummary> {
  const keyOf = (id: string): string => batchResultKeyFor(manifestDigest, id);
  const bodies = await Promise.all(manifest.batches.map(async (batch) => out.read(keyOf(batch.id))));
  const records: ResultRecord[] = [];
  const batchSha256: Record<string, string> = {};
  manifest.batches.forEach((batch, i) => {
    const body = bodies[i] as Buffer;
    records.push(...parseBatch(body.toString("utf8"), `${out.url}/${keyOf(batch.id)}`, batch.keys));
    batchSha256[batch.id] = sha256OfBytes(body);
  });
  const schemes = schemesForCount(manifest.crops);
  const scheme = schemes[schemes.length - 1] as Scheme;
  const real = await realLabelsForKeys(options.realLabels, manifest.batches.flatMap((batch) => batch.keys));
  const builtInImages =
    manifest.labels === BUILT_IN_LABELS_SOURCE
      ? records.filter((record) => !isFailed(record) && record.label !== null && validationNumber(record.key) !== undefined).length
      : 0;
  const extras: SummaryExtras = {
    ...(real ? { real } : {}),
    ...(builtInImages > 0 ? { builtInLabels: { file: VALIDATION_LABELS_FILE, images: builtInImages } } : {}),
  };
  const summary: RunSummary = {
    ...summarize(records, modelInfos(manifest), manifest.crops, extras),
    runId: manifest.runId,
    perClassScheme: scheme,
    perClass: perClassAccuracy(records, scheme, options.classNames),
    labelSpace: labelSpaceOfManifest(manifest),
  };
  const labelCheck = await readLabelCheck(out);
  if (options.write ?? true) {
    await out.write(RESULTS_FILE, records.map((record) => `${JSON.stringify(record)}\n`).join(""));
    await out.write(SUMMARY_FILE, serializeSummary(summary));
    await writeReport(out, summary, records, {
      ...(options.classNames ? { classNames: options.classNames } : {}),
      ...(labelCheck !== undefined ? { labelCheck } : {}),
    });
    // Last, so a status that says complete always has the final files beside it.
    await out.write(STATUS_FILE, serializeStatus(statusOf(manifest, manifestDigest, stock, batchSha256)));
  }
  return summary;
}

/**
 * Turns a run's batch files into its final results. Only files named by this manifest's digest
 * count; any other file under batches/ is ignored and listed. When a batch is missing it says
 * which and writes only `aggregate-status.json` (never summary.json; nothing at all with
 * `writeWaiting: false`), unless that status already says the run is complete, which is never
 * downgraded. When all are there it writes `results.jsonl` in manifest order, `summary.json`,
 * `report.html` and the status, unless `changedKeys` shows the complete status still holds.
 * Output depends only on the manifest and the listed files, so running it twice, or twice at
 * once, writes the same bytes.
 */
export async function aggregateRun(out: Location, options: AggregateOptions = {}): Promise<AggregateResult> {
  const { manifest, manifestDigest } = await readManifestWithDigest(out);
  const result = (stock: Stock, keptComplete = false): AggregateResult => ({
    complete: stock.missingBatches.length === 0,
    runId: manifest.runId,
    manifestDigest,
    batches: manifest.batches.length,
    missingBatches: stock.missingBatches,
    ignoredBatchFiles: stock.ignoredBatchFiles,
    keptComplete,
  });
  const missing = (stock: Stock): boolean => stock.missingBatches.length > 0;
  let stock = await takeStock(out, manifest, manifestDigest);
  if (!(options.write ?? true)) return missing(stock) ? result(stock) : { ...result(stock), summary: await finish(out, manifest, manifestDigest, stock, options) };
  const stored = await storedComplete(out, manifestDigest);
  if (missing(stock) && stored !== undefined) {
    // The run may have been completed by another call while we listed: look once more, so a
    // kept complete status is reported only when batches really are gone.
    stock = await takeStock(out, manifest, manifestDigest);
    if (missing(stock)) return result(stock, true);
  }
  if (missing(stock)) {
    if (options.writeWaiting === false) return result(stock);
    await out.write(STATUS_FILE, serializeStatus(statusOf(manifest, manifestDigest, stock)));
    // The last batch may have landed after our listing, and its own call may have written
    // "complete" before our write replaced it. Listing once more after writing makes the last
    // status written complete: that call finished only because the batch was listable, so this
    // listing sees it too.
    stock = await takeStock(out, manifest, manifestDigest);
    if (missing(stock)) return result(stock);
  }
  if (stored !== undefined && options.changedKeys !== undefined) {
    const batchIds = new Map(manifest.batches.map((batch) => [batchResultKeyFor(manifestDigest, batch.id), batch.id]));
    if (await stillAggregated(out, stored, stock, batchIds, options.changedKeys)) return { ...result(stock), alreadyAggregated: true };
  }
  const summary = await finish(out, manifest, manifestDigest, stock, options);
  return { ...result(stock), summary };
}

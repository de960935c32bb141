import type { Scheme } from "../model/image/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import { StorageError } from "../model/errors.js";
import { schemesForCount } from "../model/predict.js";
import { BATCHES_FOLDER, batchResultKeyFor, readManifestWithDigest, type Manifest } from "./manifest.js";
import type { ResultRecord, Summary } from "../scoring/records.js";
import { RESULTS_FILE, SUMMARY_FILE, parseResultRecords, serializeSummary } from "../scoring/results.js";
import { classErrors } from "../scoring/statistics.js";
import type { Location } from "../storage/location.js";
import { summarize } from "../scoring/summary.js";
import { writeReport } from "../scoring/report/index.js";
import { LABEL_CHECK_FILE } from "../scoring/label-check.js";

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
}

export interface AggregateOptions {
  /** Class names by index for `perClass`. Default: the names found in the records' top-5 lists. */
  readonly classNames?: readonly string[];
  /** Write results.jsonl and summary.json when complete. Default: true. */
  readonly write?: boolean;
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

function statusOf(manifest: Manifest, manifestDigest: string, stock: Stock): AggregateStatus {
  return {
    runId: manifest.runId,
    manifestDigest,
    complete: stock.missingBatches.length === 0,
    batches: manifest.batches.length,
    finishedBatches: manifest.batches.length - stock.missingBatches.length,
    missingBatches: stock.missingBatches,
    ignoredBatchFileCount: stock.ignoredBatchFiles.length,
    ignoredBatchFiles: stock.ignoredBatchFiles,
  };
}

const serializeStatus = (status: AggregateStatus): string => `${JSON.stringify(status, null, 2)}\n`;

/** Whether aggregate-status.json already records this very run (same digest) as complete. */
async function storedComplete(out: Location, manifestDigest: string): Promise<boolean> {
  const bytes = await out.readIfExists(STATUS_FILE);
  if (bytes === undefined) return false;
  try {
    const stored = JSON.parse(bytes.toString("utf8")) as Partial<AggregateStatus>;
    return stored.complete === true && stored.manifestDigest === manifestDigest;
  } catch {
    // An unreadable status holds nothing worth keeping.
    return false;
  }
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
  const bodies = await Promise.all(manifest.batches.map(async (batch) => (await out.read(keyOf(batch.id))).toString("utf8")));
  const records: ResultRecord[] = [];
  manifest.batches.forEach((batch, i) => {
    records.push(...parseBatch(bodies[i] as string, `${out.url}/${keyOf(batch.id)}`, batch.keys));
  });
  const schemes = schemesForCount(manifest.crops);
  const scheme = schemes[schemes.length - 1] as Scheme;
  const summary: RunSummary = {
    ...summarize(records, modelInfos(manifest), manifest.crops),
    runId: manifest.runId,
    perClassScheme: scheme,
    perClass: perClassAccuracy(records, scheme, options.classNames),
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
    await out.write(STATUS_FILE, serializeStatus(statusOf(manifest, manifestDigest, stock)));
  }
  return summary;
}

/**
 * Turns a run's batch files into its final results. Only files named by this manifest's digest
 * count; any other file under batches/ is ignored and listed. When a batch is missing it says
 * which and writes only `aggregate-status.json` (never summary.json), unless that status already
 * says the run is complete, which is never downgraded. When all are there it writes
 * `results.jsonl` in manifest order, `summary.json`, `report.html` and the status. Output depends
 * only on the manifest and the listed files, so running it twice, or twice at once, writes the
 * same bytes.
 */
export async function aggregateRun(out: Location, options: AggregateOptions = {}): Promise<AggregateResult> {
  const { manifest, manifestDigest } = await readManifestWithDigest(out);
  const write = options.write ?? true;
  const result = (stock: Stock, keptComplete = false): AggregateResult => ({
    complete: stock.missingBatches.length === 0,
    runId: manifest.runId,
    manifestDigest,
    batches: manifest.batches.length,
    missingBatches: stock.missingBatches,
    ignoredBatchFiles: stock.ignoredBatchFiles,
    keptComplete,
  });
  let stock = await takeStock(out, manifest, manifestDigest);
  if (stock.missingBatches.length > 0) {
    if (!write) return result(stock);
    const keep = await storedComplete(out, manifestDigest);
    if (!keep) await out.write(STATUS_FILE, serializeStatus(statusOf(manifest, manifestDigest, stock)));
    // The last batch may have landed after our listing, and its own invocation may have written
    // "complete" before our write replaced it. Listing once more after writing makes the last
    // status written complete: that invocation finished only because the batch was listable,
    // so this listing sees it too. Also, a kept complete status is reported as such only when
    // batches really are gone, not because our first listing was early.
    stock = await takeStock(out, manifest, manifestDigest);
    if (stock.missingBatches.length > 0) return result(stock, keep);
  }
  const summary = await finish(out, manifest, manifestDigest, stock, options);
  return { ...result(stock), summary };
}

import type { Scheme } from "../model/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import { StorageError } from "../model/errors.js";
import { schemesForCount } from "../model/predict.js";
import { batchResultKey, readManifest, type Manifest } from "./manifest.js";
import { isFailed, type ResultRecord, type Summary } from "./records.js";
import { RESULTS_FILE, SUMMARY_FILE } from "./results.js";
import type { Location } from "./storage.js";
import { summarize } from "./summary.js";
import { writeReport } from "./report.js";

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
  readonly batches: number;
  /** Batch ids with no result file yet, in manifest order. */
  readonly missingBatches: string[];
  readonly summary?: RunSummary;
}

function parseBatch(text: string, where: string, keys: readonly string[]): ResultRecord[] {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  const records = lines.map((line, i) => {
    try {
      return JSON.parse(line) as ResultRecord;
    } catch (error) {
      throw new StorageError(`${where}:${i + 1}: not a JSON record: ${(error as Error).message}`, { cause: error });
    }
  });
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

function perClass(
  records: readonly ResultRecord[],
  scheme: Scheme,
  classNames: readonly string[] | undefined,
): ClassAccuracy[] {
  const tally = new Map<number, { images: number; top1Wrong: number; top5Wrong: number }>();
  const seenNames = new Map<number, string>();
  for (const record of records) {
    if (isFailed(record)) continue;
    for (const entry of record.top5[scheme] ?? []) if (!seenNames.has(entry[0])) seenNames.set(entry[0], entry[2]);
    if (record.label === null) continue;
    const entries = record.top5[scheme] ?? [];
    const counts = tally.get(record.label) ?? { images: 0, top1Wrong: 0, top5Wrong: 0 };
    counts.images++;
    if (entries[0]?.[0] !== record.label) counts.top1Wrong++;
    if (!entries.slice(0, 5).some((entry) => entry[0] === record.label)) counts.top5Wrong++;
    tally.set(record.label, counts);
  }
  return [...tally.entries()]
    .sort(([a], [b]) => a - b)
    .map(([index, counts]) => ({
      class: index,
      name: classNames?.[index] ?? seenNames.get(index) ?? null,
      images: counts.images,
      top1Error: counts.top1Wrong / counts.images,
      top5Error: counts.top5Wrong / counts.images,
    }));
}

function modelInfos(manifest: Manifest): ModelInfo[] {
  return manifest.models.map((model) => ({ file: model.url, sha256: model.sha256, flavour: model.flavour }));
}

/**
 * Turns a run's batch files into its final results. When any batch is missing it says which
 * and writes only `aggregate-status.json` (never summary.json); when all are there it writes
 * `results.jsonl` in manifest order and `summary.json`. Output depends only on the manifest and
 * the batch files, so running it twice, or twice at once, writes the same bytes.
 */
export async function aggregateRun(out: Location, options: AggregateOptions = {}): Promise<AggregateResult> {
  const manifest = await readManifest(out);
  const write = options.write ?? true;
  const missingBatches: string[] = [];
  // One listing says what is missing; batch files are read only once all are there, so the
  // trigger that fires for every batch of a 50,000-image run does not re-read the finished ones.
  const listed = new Set<string>();
  for await (const key of out.list()) listed.add(key);
  for (const batch of manifest.batches) if (!listed.has(batchResultKey(batch.id))) missingBatches.push(batch.id);
  const status = {
    runId: manifest.runId,
    complete: missingBatches.length === 0,
    batches: manifest.batches.length,
    finishedBatches: manifest.batches.length - missingBatches.length,
    missingBatches,
  };
  if (missingBatches.length > 0) {
    if (write) await out.write(STATUS_FILE, `${JSON.stringify(status, null, 2)}\n`);
    return { complete: false, runId: manifest.runId, batches: manifest.batches.length, missingBatches };
  }

  const bodies = await Promise.all(
    manifest.batches.map(async (batch) => (await out.read(batchResultKey(batch.id))).toString("utf8")),
  );
  const records: ResultRecord[] = [];
  manifest.batches.forEach((batch, i) => {
    records.push(...parseBatch(bodies[i] as string, `${out.url}/${batchResultKey(batch.id)}`, batch.keys));
  });
  const schemes = schemesForCount(manifest.crops);
  const scheme = schemes[schemes.length - 1] as Scheme;
  const summary: RunSummary = {
    ...summarize(records, modelInfos(manifest), manifest.crops),
    runId: manifest.runId,
    perClassScheme: scheme,
    perClass: perClass(records, scheme, options.classNames),
  };
  if (write) {
    await out.write(RESULTS_FILE, records.map((record) => `${JSON.stringify(record)}\n`).join(""));
    await out.write(SUMMARY_FILE, `${JSON.stringify(summary, null, 2)}\n`);
    await writeReport(out, summary, records, options.classNames ? { classNames: options.classNames } : {});
    await out.write(STATUS_FILE, `${JSON.stringify(status, null, 2)}\n`);
  }
  return { complete: true, runId: manifest.runId, batches: manifest.batches.length, missingBatches, summary };
}

import { GoogLeNetEvalError } from "../model/errors.js";
import { aggregateRun } from "../queue/aggregate.js";
import { type Location } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { decodeS3Key } from "../queue/s3-events.js";

/**
 * The aggregator Lambda (infra/aggregator.ts): S3 invokes it for every `.jsonl` created under
 * `runs/`. For each batch result it aggregates that batch's run; aggregateRun writes the final
 * files only once every batch of the manifest is present, and writes the same bytes however
 * often or concurrently it runs. Two things keep duplicate and racing events cheap and safe: the
 * event's keys are passed on, so a run already aggregated from those very files is left as it
 * is (a duplicate reads O(1) objects, not every batch file); and no "waiting" status is written,
 * so a call that listed just before the last batch landed cannot put "waiting" over "complete".
 * The last batch's own event completes the run; "waiting" is in this function's log lines.
 */

/** The parts of an S3 event notification record this handler reads (AWS's exact field names). */
export interface S3EventRecordLike {
  readonly eventSource?: string;
  readonly eventName?: string;
  readonly s3: { readonly bucket: { readonly name: string }; readonly object: { readonly key: string } };
}

export interface S3EventLike {
  readonly Records?: readonly S3EventRecordLike[];
}

/** What one run's aggregation came to, as logged and returned. */
export interface RunOutcome {
  readonly run: string;
  readonly complete: boolean;
  readonly batches?: number;
  readonly missingBatches?: number;
  /** Files under batches/ of another run, ignored (present only when there are some). */
  readonly ignoredBatchFiles?: number;
  /** A complete status was left in place although batches are now missing. */
  readonly keptComplete?: boolean;
  /** The run was already aggregated from the files the event names: nothing read or written. */
  readonly alreadyAggregated?: boolean;
  readonly images?: number;
  readonly error?: string;
}

/**
 * A batch result's key: runs/<RUN>/batches/<batch>.<digest>.jsonl, RUN possibly nested. Any
 * .jsonl directly under batches/ triggers the run; aggregateRun itself tells this run's files
 * from others'.
 */
const BATCH_KEY = /^(runs\/.+)\/batches\/[^/]+\.jsonl$/;

/**
 * The distinct run folders (`s3://bucket/runs/<RUN>`) the event's batch results belong to, in
 * first-seen order; for each, the batch keys the event names, relative to the run folder; and
 * the keys that are not batch results (results.jsonl, which this very function writes and which
 * also matches the notification's `runs/` + `.jsonl` filter).
 */
export function runsFromEvent(event: S3EventLike): { runs: string[]; ignored: string[]; changed: Map<string, string[]> } {
  const runs: string[] = [];
  const ignored: string[] = [];
  const changed = new Map<string, string[]>();
  for (const record of event.Records ?? []) {
    // S3 URL-encodes keys in events, with '+' for spaces.
    const key = decodeS3Key(record.s3.object.key);
    const match = BATCH_KEY.exec(key);
    if (!match?.[1] || (record.eventName !== undefined && !record.eventName.startsWith("ObjectCreated:"))) {
      ignored.push(key);
      continue;
    }
    const run = `s3://${record.s3.bucket.name}/${match[1]}`;
    if (!runs.includes(run)) runs.push(run);
    const keys = changed.get(run) ?? [];
    keys.push(key.slice(match[1].length + 1));
    changed.set(run, keys);
  }
  return { runs, ignored, changed };
}

export interface AggregateHandlerDeps {
  /** Default: queue/aggregate.ts's aggregateRun. */
  readonly aggregate?: typeof aggregateRun;
  /** Default: openLocation (S3 through the default client). */
  readonly open?: (url: string) => Location;
  /** One JSON line per run; default stdout (CloudWatch Logs). */
  readonly log?: (line: string) => void;
}

/** Ignored keys in one log line; aggregate-status.json lists them all. */
const IGNORED_LOGGED = 20;

/**
 * Builds the handler. Every run of the event is tried; if any failed, the invocation throws
 * after the others are done, so Lambda's asynchronous retries run it again (harmless for the
 * runs that succeeded).
 */
export function createAggregateHandler(deps: AggregateHandlerDeps = {}): (event: S3EventLike) => Promise<RunOutcome[]> {
  const aggregate = deps.aggregate ?? aggregateRun;
  const open = deps.open ?? ((url: string) => openLocation(url));
  const log = deps.log ?? ((line: string) => console.log(line));
  return async (event) => {
    const { runs, ignored, changed } = runsFromEvent(event);
    if (ignored.length > 0) log(JSON.stringify({ event: "ignored", keys: ignored }));
    const outcomes: RunOutcome[] = [];
    for (const run of runs) {
      try {
        const result = await aggregate(open(run), { changedKeys: changed.get(run) ?? [], writeWaiting: false });
        const ignoredCount = result.ignoredBatchFiles.length;
        const outcome: RunOutcome = {
          run,
          complete: result.complete,
          batches: result.batches,
          missingBatches: result.missingBatches.length,
          ...(ignoredCount > 0 ? { ignoredBatchFiles: ignoredCount } : {}),
          ...(result.keptComplete ? { keptComplete: true } : {}),
          ...(result.alreadyAggregated ? { alreadyAggregated: true } : {}),
          ...(result.summary ? { images: result.summary.images } : {}),
        };
        outcomes.push(outcome);
        if (ignoredCount > 0) {
          log(JSON.stringify({ event: "ignored-batch-files", run, count: ignoredCount, keys: result.ignoredBatchFiles.slice(0, IGNORED_LOGGED) }));
        }
        // "kept-complete": batches went missing after the run was complete (deleted files); the
        // complete status and results stay, and the line says so.
        const event = result.alreadyAggregated ? "already-aggregated" : result.complete ? "aggregated" : result.keptComplete ? "kept-complete" : "waiting";
        log(JSON.stringify({ event, ...outcome }));
      } catch (error) {
        const outcome: RunOutcome = { run, complete: false, error: (error as Error).message };
        outcomes.push(outcome);
        log(JSON.stringify({ event: "failed", ...outcome }));
      }
    }
    const failed = outcomes.filter((o) => o.error !== undefined);
    if (failed.length > 0) {
      throw new GoogLeNetEvalError(
        `aggregation failed for ${failed.map((o) => `${o.run} (${o.error})`).join("; ")}; Lambda will retry the event`,
      );
    }
    return outcomes;
  };
}

/** The Lambda entry point (infra/aggregator.ts: handler "handler"). */
export const handler = createAggregateHandler();

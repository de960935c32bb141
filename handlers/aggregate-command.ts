import { LABEL_CHECK_FILE } from "../scoring/label-check.js";
import { ConfigurationError } from "../model/errors.js";
import { aggregateRun, STATUS_FILE, type AggregateResult } from "../queue/aggregate.js";
import { openLocation } from "../storage/open-location.js";
import { formatTable3 } from "../scoring/summary.js";
import { checkSynsetsSource, readSynsetsUrl, SYNSETS_ENV, synsetsSource } from "./class-names.js";
import { REPORT_FILE } from "../scoring/report/index.js";
import { parseFlags } from "./flags.js";
import { readRealLabelsFile } from "../scoring/imagenet-validation.js";

const HELP = `usage: googlenet-eval aggregate --out DIR|s3://b/runs/RUN [--synsets FILE|s3://...] [--real-labels FILE|none]

Reads <out>/manifest.json and the run's batch files, <out>/batches/<batch>.<digest>.jsonl, where
<digest> starts the manifest's digest; other files under batches/ (an earlier run's) are ignored
and listed. When all batches are there it writes <out>/results.jsonl (manifest order),
<out>/summary.json (with per-class accuracy) and report.html and prints the Table 3 rows;
otherwise it lists the missing batches (still queued or running, or in the dead-letter queue),
writes only <out>/aggregate-status.json (never over one that says complete), and exits 3.
Running it again writes the same bytes.

options:
  --out DIR|s3://...       the run's folder, as given to plan (required)
  --synsets FILE|s3://...  synset_words.txt for per-class names, as given to plan (default:
                           $${SYNSETS_ENV}, else the names the workers wrote into the batch files,
                           which are the built-in ImageNet names unless plan was given another list;
                           so the stack's aggregator Lambda and this command write the same bytes)
  --real-labels FILE|s3://...|none  ReaL labels (real.json) for keys named ILSVRC2012_val_NNNNNNNN.*
                           (default: the built-in real.json, as the aggregator Lambda uses; none: no ReaL)
  -h, --help               show this help`;

/** Exit code when batches are missing: distinct from errors (1) and usage (2) for scripts that wait. */
export const EXIT_INCOMPLETE = 3;
/** Ignored keys printed on stderr; aggregate-status.json lists them all. */
const IGNORED_SHOWN = 20;

function shortList(keys: readonly string[], limit: number): string {
  return keys.length <= limit ? keys.join(", ") : `${keys.slice(0, limit).join(", ")}, ... (${keys.length - limit} more)`;
}

/** Files of another run under batches/: they never enter the results, but the user should know. */
function reportIgnored(result: AggregateResult, out: string): void {
  const count = result.ignoredBatchFiles.length;
  if (count === 0) return;
  process.stderr.write(
    `run ${result.runId}: ignored ${count} batch file${count === 1 ? "" : "s"} of another run ` +
      `(not named by this manifest's digest ${result.manifestDigest.slice(0, 16)}): ` +
      `${shortList(result.ignoredBatchFiles, IGNORED_SHOWN)}; all listed in ${out.replace(/\/+$/, "")}/${STATUS_FILE}\n`,
  );
}

function reportIncomplete(result: AggregateResult): void {
  const done = result.batches - result.missingBatches.length;
  const kept = result.keptComplete
    ? ` ${STATUS_FILE} already says this run is complete, so it, results.jsonl and summary.json were left ` +
      `as an earlier aggregate wrote them; were batch files deleted?`
    : " No summary written.";
  process.stderr.write(
    `run ${result.runId}: incomplete, ${done} of ${result.batches} batches done; ` +
      `missing: ${shortList(result.missingBatches, 50)}.${kept} ` +
      `A missing batch is still queued or being scored, or, after failing on every delivery, in the ` +
      `dead-letter queue: check its ApproximateNumberOfMessages and send them back with ` +
      `\`aws sqs start-message-move-task --source-arn <DLQ ARN>\`, then aggregate again.\n`,
  );
}

/** `googlenet-eval aggregate --out ...`. */
export async function aggregateCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = parseFlags("aggregate", {
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      out: { type: "string" },
      synsets: { type: "string" },
      "real-labels": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (parsed.values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const out = parsed.values.out;
  if (out === undefined || out === "") throw new ConfigurationError("--out DIR|s3://bucket/prefix is required");
  const named = parsed.values.synsets !== undefined || Boolean(env[SYNSETS_ENV]?.trim());
  const synsets = named ? synsetsSource(parsed.values.synsets, env) : undefined;
  if (synsets !== undefined) await checkSynsetsSource(synsets);
  const classNames = synsets === undefined ? undefined : (await readSynsetsUrl(synsets.url)).names;
  const realFlag = parsed.values["real-labels"];
  if (realFlag === "") throw new ConfigurationError("--real-labels must name a file, or none");
  const realLabels = realFlag === undefined ? undefined : realFlag === "none" ? null : await readRealLabelsFile(realFlag);
  const result = await aggregateRun(openLocation(out), {
    ...(classNames === undefined ? {} : { classNames }),
    ...(realLabels === undefined ? {} : { realLabels }),
  });
  reportIgnored(result, out);
  if (!result.complete) {
    reportIncomplete(result);
    return EXIT_INCOMPLETE;
  }
  const summary = result.summary;
  if (summary === undefined) throw new Error("complete aggregate without a summary");
  process.stdout.write(`${formatTable3(summary)}\nreport: ${out.replace(/\/+$/, "")}/${REPORT_FILE}\n`);
  const labelCheck = await openLocation(out).readIfExists(LABEL_CHECK_FILE);
  if (labelCheck !== undefined) {
    const stored = JSON.parse(labelCheck.toString("utf8")) as { summary?: unknown };
    if (typeof stored.summary === "string") process.stderr.write(`${stored.summary} (at plan time)\n`);
  }
  process.stderr.write(
    `run ${result.runId}: ${summary.images} images, ${summary.scored} scored, ${summary.failed} error records, ` +
      `${summary.labelled} labelled, ${result.batches} batches; wrote results.jsonl, summary.json and ${REPORT_FILE} to ${out}\n`,
  );
  return 0;
}

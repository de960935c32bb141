import { ConfigurationError } from "../model/errors.js";
import { aggregateRun } from "../pipeline/aggregate.js";
import { openLocation } from "../pipeline/storage.js";
import { formatTable3 } from "../pipeline/summary.js";
import { readSynsetsUrl, WORKER_ENV } from "./worker-command.js";
import { REPORT_FILE } from "../pipeline/report.js";
import { parseFlags } from "./flags.js";

const HELP = `usage: googlenet-eval aggregate --out DIR|s3://b/runs/RUN [--synsets FILE|s3://...]

Reads <out>/manifest.json and every <out>/batches/<batch>.jsonl. When all batches are there it
writes <out>/results.jsonl (manifest order) and <out>/summary.json (with per-class accuracy) and
prints the Table 3 rows; otherwise it lists the missing batches, writes only
<out>/aggregate-status.json, and exits 3. Running it again writes the same bytes.

options:
  --out DIR|s3://...       the run's folder, as given to plan (required)
  --synsets FILE|s3://...  synset_words.txt for per-class names (default: $${WORKER_ENV.synsets},
                           else the names seen in predictions)
  -h, --help               show this help`;

/** Exit code when batches are missing: distinct from errors (1) and usage (2) for scripts that wait. */
export const EXIT_INCOMPLETE = 3;

/** `googlenet-eval aggregate --out ...`. */
export async function aggregateCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = parseFlags("aggregate", {
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { out: { type: "string" }, synsets: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (parsed.values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const out = parsed.values.out;
  if (out === undefined || out === "") throw new ConfigurationError("--out DIR|s3://bucket/prefix is required");
  const synsetsUrl = parsed.values.synsets ?? (env[WORKER_ENV.synsets] || undefined);
  const classNames = synsetsUrl === undefined ? undefined : (await readSynsetsUrl(synsetsUrl)).names;
  const result = await aggregateRun(openLocation(out), classNames === undefined ? {} : { classNames });
  if (!result.complete) {
    process.stderr.write(
      `run ${result.runId}: ${result.batches - result.missingBatches.length} of ${result.batches} batches done; ` +
        `missing: ${result.missingBatches.join(", ")}. No summary written.\n`,
    );
    return EXIT_INCOMPLETE;
  }
  const summary = result.summary;
  if (summary === undefined) throw new Error("complete aggregate without a summary");
  process.stdout.write(`${formatTable3(summary)}\nreport: ${out.replace(/\/+$/, "")}/${REPORT_FILE}\n`);
  process.stderr.write(
    `run ${result.runId}: ${summary.images} images, ${summary.scored} scored, ${summary.failed} failed, ` +
      `${summary.labelled} labelled, ${result.batches} batches; wrote results.jsonl, summary.json and ${REPORT_FILE} to ${out}\n`,
  );
  return 0;
}

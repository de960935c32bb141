import { parseArgs } from "node:util";
import { GoogLeNetEvalError } from "../model/errors.js";
import { StorageError } from "../storage/errors.js";
import type { Summary } from "../scoring/records.js";
import { writeReport } from "../scoring/report/index.js";
import { RESULTS_FILE, SUMMARY_FILE, parseResultRecords } from "../scoring/results.js";
import { readRunFacts, withRunFacts } from "../scoring/run-facts.js";
import { type Location } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { deprecationLine, OLD_SPELLINGS_UNTIL } from "./flags.js";

const USAGE = `usage: googlenet-eval report --out DIR|s3://bucket/prefix

Reads summary.json and results.jsonl in the run folder and (re)writes report.html beside them.

options:
  --out DIR|s3://...  the run's folder, as written by score or aggregate (required)
  -h, --help          show this help

Old spelling, accepted until ${OLD_SPELLINGS_UNTIL} with a warning: the folder as the only argument.`;

/** What the command talks to; tests pass their own. */
export interface ReportCommandDeps {
  /** Opens the run folder. Default: openLocation from storage/location.ts (local path or s3://). */
  readonly open?: (url: string) => Location;
  /** Default: console.log. */
  readonly out?: (line: string) => void;
  /** Default: console.error. */
  readonly err?: (line: string) => void;
}

function parseSummary(text: string, where: string): Summary {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new StorageError(`${where}: not JSON: ${(error as Error).message}`, { cause: error });
  }
  const summary = value as Partial<Summary> | null;
  // Only the fields every summary has; the report shows the optional ones when present.
  const missing = (["images", "scored", "failed", "labelled", "schemes", "models", "failedKeys"] as const).filter(
    (field) => summary?.[field] === undefined,
  );
  if (missing.length > 0) {
    throw new StorageError(`${where}: not a run summary, missing ${missing.join(", ")}`);
  }
  return summary as Summary;
}

/**
 * The run folder from `--out`, or from the old positional spelling (with a deprecation line);
 * or that help was asked for, or the usage error's text.
 */
function parseReportArgs(argv: string[], warn: (line: string) => void): { out: string } | { help: true } | { error: string } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: { out: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
  } catch (error) {
    return { error: `${(error as Error).message}; report takes --out DIR and --help` };
  }
  const { values, positionals } = parsed;
  if (values.help) return { help: true };
  const given = positionals.length + (values.out === undefined ? 0 : 1);
  if (given !== 1) return { error: `report takes one run folder, got ${given}: give --out DIR|s3://bucket/prefix` };
  if (values.out === "") return { error: "--out must name a folder or s3://bucket/prefix" };
  if (values.out !== undefined) return { out: values.out };
  warn(deprecationLine("report", "the run folder as an argument", "--out DIR").trimEnd());
  return { out: positionals[0]! };
}

/** `googlenet-eval report --out <run>`: returns the exit code (0 done, 1 failed, 2 bad usage). */
export async function reportCommand(argv: string[], deps: ReportCommandDeps = {}): Promise<number> {
  const out = deps.out ?? ((line: string) => console.log(line));
  const err = deps.err ?? ((line: string) => console.error(line));
  const parsed = parseReportArgs(argv, err);
  if ("help" in parsed) {
    out(USAGE);
    return 0;
  }
  if ("error" in parsed) {
    err(parsed.error);
    err(USAGE);
    return 2;
  }
  const url = parsed.out;
  try {
    const run = (deps.open ?? openLocation)(url);
    const where = (key: string): string => `${run.url.replace(/\/+$/, "")}/${key}`;
    const [summaryBytes, resultsBytes] = await Promise.all([run.readIfExists(SUMMARY_FILE), run.readIfExists(RESULTS_FILE)]);
    if (!summaryBytes || !resultsBytes) {
      const absent = [!summaryBytes && SUMMARY_FILE, !resultsBytes && RESULTS_FILE].filter(Boolean).join(" and ");
      throw new StorageError(
        `no ${absent} in ${url}: report reads a finished run folder, as written by \`googlenet-eval score\` or \`aggregate\``,
      );
    }
    const summary = parseSummary(summaryBytes.toString("utf8"), where(SUMMARY_FILE));
    const records = parseResultRecords(resultsBytes.toString("utf8"), where(RESULTS_FILE));
    out(await writeReport(run, withRunFacts(summary, await readRunFacts(run)), records));
    return 0;
  } catch (error) {
    if (!(error instanceof GoogLeNetEvalError)) throw error;
    err(`error: ${error.message}`);
    return 1;
  }
}

import type { RunFacts, Summary } from "./records.js";
import type { Location } from "../storage/location.js";

/**
 * run.json: how a run went (engine, backend, wall time, crops/s). Kept out of summary.json on
 * purpose: summary.json depends only on the results, so resuming, re-running or re-aggregating
 * a run leaves it byte for byte the same, while wall time never repeats.
 */
export const RUN_FACTS_FILE = "run.json";

export async function writeRunFacts(location: Location, facts: RunFacts): Promise<void> {
  await location.write(RUN_FACTS_FILE, `${JSON.stringify(facts, null, 2)}\n`);
}

/** The run's facts, or undefined when none were written or they do not parse (the report can do without). */
export async function readRunFacts(location: Location): Promise<RunFacts | undefined> {
  const bytes = await location.readIfExists(RUN_FACTS_FILE);
  if (bytes === undefined) return undefined;
  try {
    return JSON.parse(bytes.toString("utf8")) as RunFacts;
  } catch {
    return undefined;
  }
}

/** The summary as the report shows it: with the run's facts when there are any. */
export function withRunFacts(summary: Summary, facts: RunFacts | undefined): Summary {
  return facts === undefined ? summary : { ...summary, run: { ...facts, ...summary.run } };
}

import { z } from "zod";
import { CACHE_DIR_ENV, PROBE_CACHE_ENV, probeCacheFolder } from "../model/ort/engine.js";
import { usageError } from "./flags.js";

/**
 * The environment variable that turns onnxruntime's graph edits off, for `score` and `worker`
 * alike: `off` (or false, 0, no). Default: on. The flag is `--no-graph-edits`.
 */
export const GRAPH_EDITS_ENV = "GOOGLENET_EVAL_GRAPH_EDITS";

const ON_WORDS = ["on", "true", "1", "yes"];
const OFF_WORDS = ["off", "false", "0", "no"];

/** The help lines both commands print for the flag, its text starting at `column`. */
export function graphEditsHelp(column: number): string {
  const flag = "  --no-graph-edits".padEnd(column);
  return (
    `${flag}onnxruntime on the CPU runs the ONNX file exactly as stored: no LRN rewrite or layout edits\n` +
    `${" ".repeat(column)}(default: each edit kept where a probe batch at load matches the file; $${GRAPH_EDITS_ENV}=off)\n` +
    `${" ".repeat(column)}a passed probe is remembered in $${CACHE_DIR_ENV} (default ~/.cache/googlenet-eval);\n` +
    `${" ".repeat(column)}$${PROBE_CACHE_ENV}=off probes at every load`
  );
}

const Setting = z
  .string()
  .transform((value) => value.trim().toLowerCase())
  .refine((value) => [...ON_WORDS, ...OFF_WORDS].includes(value), `${GRAPH_EDITS_ENV} must be on or off`)
  .transform((value) => ON_WORDS.includes(value));

/**
 * Whether the graph edits stay on: off with `--no-graph-edits` or `GOOGLENET_EVAL_GRAPH_EDITS=off`.
 * Default: on (an empty variable counts as unset).
 *
 * @throws ConfigurationError naming the variable when it, or GOOGLENET_EVAL_PROBE_CACHE, is
 *   neither on nor off.
 */
export function graphEditsSetting(noGraphEdits: boolean | undefined, env: NodeJS.ProcessEnv): boolean {
  // The engine reads GOOGLENET_EVAL_PROBE_CACHE at each load; checked here too so that a bad
  // value stops the command at start-up, not at its first model.
  probeCacheFolder(env);
  if (noGraphEdits === true) return false;
  const value = env[GRAPH_EDITS_ENV];
  if (value === undefined || value.trim() === "") return true;
  const result = Setting.safeParse(value);
  if (!result.success) throw usageError(result.error);
  return result.data;
}

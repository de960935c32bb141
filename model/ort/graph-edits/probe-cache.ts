import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { cpus, homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import * as ort from "onnxruntime-node";
import { ConfigurationError } from "../../errors.js";

/**
 * What a passed probe vouches for besides the graphs in its key: the probe's crops and
 * tolerance (probe.ts) and how checked-session.ts judges an edited session. Bump it when either
 * changes, so that records made by the older code are no longer trusted.
 */
export const PROBE_RECORD_VERSION = 1;

/** `off` turns the probe cache off: every load probes. Default: on. */
export const PROBE_CACHE_ENV = "GOOGLENET_EVAL_PROBE_CACHE";
/** The project's cache folder. Default: `$XDG_CACHE_HOME/googlenet-eval`, else `~/.cache/googlenet-eval`. */
export const CACHE_DIR_ENV = "GOOGLENET_EVAL_CACHE_DIR";

/**
 * The folder that holds passed probes, from the environment: undefined with
 * `GOOGLENET_EVAL_PROBE_CACHE=off`; else `GOOGLENET_EVAL_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/googlenet-eval` (an absolute XDG_CACHE_HOME only, as the XDG spec says),
 * else `~/.cache/googlenet-eval`. Empty variables count as unset.
 *
 * @throws ConfigurationError naming the variable when GOOGLENET_EVAL_PROBE_CACHE is neither on nor off.
 */
export function probeCacheFolder(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const setting = env[PROBE_CACHE_ENV]?.trim().toLowerCase() ?? "";
  if (setting === "off") return undefined;
  if (setting !== "" && setting !== "on") {
    throw new ConfigurationError(`${PROBE_CACHE_ENV} must be on or off, got "${env[PROBE_CACHE_ENV]}"`);
  }
  const own = env[CACHE_DIR_ENV]?.trim();
  if (own) return own;
  const xdg = env.XDG_CACHE_HOME?.trim();
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "googlenet-eval");
}

/**
 * Everything a probe's outcome depends on: the graph as stored it was compared against, the
 * edited graph it ran (so any change in what the edits produce misses, bumped version or not),
 * the onnxruntime that optimized and ran both, the CPU whose kernels and blocked layout it
 * used, and the session and edit options.
 */
export interface ProbeKey {
  readonly version: number;
  readonly modelSha256: string;
  /** graphDigest (proto-graph.ts) of the edited graph, or the sha256 of its bytes when loaded as they are. */
  readonly editedGraph: string;
  readonly onnxruntime: string;
  readonly platform: string;
  readonly arch: string;
  readonly cpu: string;
  readonly sessionOptions: string;
  readonly edits: string;
}

/** The host's part of a key; a parameter so tests can stand in another onnxruntime or CPU. */
export interface ProbeHost {
  readonly onnxruntime: string;
  readonly platform: string;
  readonly arch: string;
  readonly cpu: string;
}

export function thisHost(): ProbeHost {
  return {
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    platform: process.platform,
    arch: process.arch,
    cpu: cpus()[0]?.model ?? "unknown",
  };
}

function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The key of a probe of the edited graph (by its digest) against `modelBytes` (as stored). */
export function probeKey(
  modelBytes: Uint8Array,
  editedGraph: string,
  sessionOptions: ort.InferenceSession.SessionOptions,
  edits: Readonly<Record<string, unknown>>,
  host: ProbeHost = thisHost(),
): ProbeKey {
  return {
    version: PROBE_RECORD_VERSION,
    modelSha256: sha256(modelBytes),
    editedGraph,
    onnxruntime: host.onnxruntime,
    platform: host.platform,
    arch: host.arch,
    cpu: host.cpu,
    sessionOptions: JSON.stringify(sessionOptions),
    edits: JSON.stringify(edits),
  };
}

/** A probe that passed earlier, as recorded. */
export interface PassedProbe {
  readonly file: string;
  /** The probe's own words when it passed ("13 dead-leaves crops: largest relative difference ..."). */
  readonly result: string;
  readonly recordedAt: string;
}

/** Passed probes kept in a folder, one small JSON file per key. */
export interface ProbeCache {
  /** The record for `key`, or undefined; a record that is there but unusable costs a line. */
  find(key: ProbeKey): Promise<PassedProbe | undefined>;
  /** Keeps a passed probe; a folder that cannot be written costs a line, never the load. */
  record(key: ProbeKey, result: string): Promise<void>;
}

const RECORD_KIND = "googlenet-eval onnxruntime graph-edit probe";

// One line per folder and process: a worker loading many models need not repeat it.
const unwritable = new Set<string>();

/**
 * The probe cache in `folder` (its `onnxruntime-probe/` subfolder). Only passed probes are
 * recorded: a failed one is probed again at every load, so a fixed cause is seen at once.
 * Files are written whole and renamed into place, so processes loading at once never read half
 * a record.
 */
export function openProbeCache(folder: string, log: (line: string) => void): ProbeCache {
  const records = join(folder, "onnxruntime-probe");
  const fileOf = (key: ProbeKey) => join(records, `${sha256(JSON.stringify(key)).slice(0, 32)}.json`);
  return {
    async find(key) {
      const file = fileOf(key);
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (error) {
        // No record yet, or no folder to hold one (record() says once if it cannot make it).
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "ENOTDIR") log(`googlenet-eval: probe cache file ${file} not read (${(error as Error).message}); probing`);
        return undefined;
      }
      const why = unusable(text, key);
      if (why !== undefined) {
        log(`googlenet-eval: probe cache file ${file} ignored (${why}); probing`);
        return undefined;
      }
      const record = JSON.parse(text) as { result: string; recordedAt: string };
      return { file, result: record.result, recordedAt: record.recordedAt };
    },
    async record(key, result) {
      const file = fileOf(key);
      const partial = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
      try {
        await mkdir(records, { recursive: true });
        await writeFile(partial, `${JSON.stringify({ kind: RECORD_KIND, key, result, recordedAt: new Date().toISOString() }, null, 2)}\n`);
        await rename(partial, file);
      } catch (error) {
        await rm(partial, { force: true }).catch(() => undefined);
        if (unwritable.has(folder)) return;
        unwritable.add(folder);
        log(`googlenet-eval: probe cache ${folder} cannot be written (${(error as Error).message}); each load probes the graph edits`);
      }
    },
  };
}

/** Why a record's text cannot vouch for `key`, or undefined when it can. */
function unusable(text: string, key: ProbeKey): string | undefined {
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (error) {
    return `not JSON: ${(error as Error).message}`;
  }
  if (typeof record !== "object" || record === null) return "not a probe record";
  const { kind, key: recorded, result, recordedAt } = record as Record<string, unknown>;
  if (kind !== RECORD_KIND || typeof result !== "string" || typeof recordedAt !== "string") return "not a probe record";
  // The file is named by a hash of its key; a different key inside means it was written by hand or damaged.
  if (JSON.stringify(recorded) !== JSON.stringify(key)) return "its key is not this load's";
  return undefined;
}

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { BackendUnavailableError, ConfigurationError } from "../errors.js";

/** The tfjs backends `--backend` accepts; "auto" takes the fastest one that loads here. */
export const BACKEND_PREFERENCES = ["auto", "tensorflow", "wasm", "cpu"] as const;
export type BackendPreference = (typeof BACKEND_PREFERENCES)[number];

/** The outcome of a selection: the tfjs backend now active, and why faster ones were passed over. */
export interface BackendSelection {
  /** "tensorflow", "wasm" or "cpu", as tf.getBackend() names it. */
  readonly backend: string;
  /** One line per backend tried before this one (or probed after a failed explicit choice). */
  readonly reasons: readonly string[];
}

export interface SelectBackendOptions {
  /** Where the one-line choice goes. Default: a line on stderr. */
  readonly log?: (line: string) => void;
}

/** Parses a `--backend` value; anything else is a ConfigurationError listing the choices. */
export function parseBackendPreference(value: string): BackendPreference {
  if ((BACKEND_PREFERENCES as readonly string[]).includes(value)) return value as BackendPreference;
  throw new ConfigurationError(`unknown backend "${value}"; use one of: ${BACKEND_PREFERENCES.join(", ")}`);
}

const NVIDIA_DRIVER = "/proc/driver/nvidia/version";

/**
 * Why the threaded wasm build is not used: tfjs-backend-wasm 4.22 starts its pthread workers
 * from blob: URLs, which Node's worker_threads refuses (ERR_WORKER_PATH), and the failed start
 * leaves process-wide exception handlers behind (tfjs issue #3830; tried on Node 20).
 */
export const WASM_THREADS_NOTE = "single-threaded SIMD; the threaded build cannot start its workers in Node (blob: worker URLs, ERR_WORKER_PATH, tfjs#3830)";

type Attempt = () => Promise<string | undefined>;

function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? text;
}

/** Activates a backend already registered with tfjs; the reason it failed, or undefined. */
async function activate(name: string): Promise<string | undefined> {
  if (tf.getBackend() === name) return undefined;
  // tfjs logs and returns false on an initialisation failure; the reason goes to our log line.
  const ok = await tf.setBackend(name).catch((error: unknown) => messageOf(error));
  if (ok === true && tf.getBackend() === name) return undefined;
  return typeof ok === "string" ? ok : `tf.setBackend("${name}") failed`;
}

/** Loads an optional native package; a missing or broken one is a reason, not an error. */
async function tryNative(packageName: string): Promise<string | undefined> {
  try {
    // A variable specifier keeps tsc and bundlers from requiring this optional dependency.
    const specifier: string = packageName;
    await import(specifier);
  } catch (error) {
    return `${packageName} does not load (${messageOf(error)})`;
  }
  if (!tf.findBackend("tensorflow")) {
    return `${packageName} loaded but registered no "tensorflow" backend with this copy of @tensorflow/tfjs-core (versions differ?)`;
  }
  return activate("tensorflow");
}

let wasmPathsSet = false;

const attempts: Record<Exclude<BackendPreference, "auto">, { label: string; run: Attempt }[]> = {
  tensorflow: [
    {
      label: "tensorflow (GPU, @tensorflow/tfjs-node-gpu)",
      run: async () =>
        existsSync(NVIDIA_DRIVER) ? tryNative("@tensorflow/tfjs-node-gpu") : `no NVIDIA driver (${NVIDIA_DRIVER} absent)`,
    },
    { label: "tensorflow (CPU, @tensorflow/tfjs-node)", run: () => tryNative("@tensorflow/tfjs-node") },
  ],
  wasm: [
    {
      label: "wasm",
      run: async () => {
        if (!wasmPathsSet) {
          try {
            const require = createRequire(import.meta.url);
            // Node reads the .wasm files from disk, so point tfjs at the package's own dist folder.
            setWasmPaths(`${dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"))}/`);
            wasmPathsSet = true;
          } catch (error) {
            return `cannot locate the tfjs-backend-wasm binaries (${messageOf(error)})`;
          }
        }
        return activate("wasm");
      },
    },
  ],
  cpu: [{ label: "cpu", run: () => activate("cpu") }],
};

const AUTO_ORDER: Exclude<BackendPreference, "auto">[] = ["tensorflow", "wasm", "cpu"];

let lastLogged: string | undefined;
const selections = new Map<BackendPreference, BackendSelection>();

function describeChoice(backend: string): string {
  return backend === "wasm" ? `wasm (${WASM_THREADS_NOTE})` : backend;
}

/**
 * Makes a tfjs backend active. "auto" tries tensorflow on a GPU, tensorflow on the CPU, wasm,
 * then the plain JavaScript cpu backend, and keeps the reason each faster one was skipped. The
 * choice is logged once (one line) per process unless a later call changes it.
 *
 * @throws BackendUnavailableError when an explicitly named backend cannot run here; the message
 *   lists the backends that can.
 */
export async function selectBackend(
  preference: BackendPreference = "auto",
  options: SelectBackendOptions = {},
): Promise<BackendSelection> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  parseBackendPreference(preference);
  const cached = selections.get(preference);
  if (cached) {
    // Another caller may have switched backends since; switching back is cheap once initialised.
    const failure = await activate(cached.backend);
    if (failure === undefined) return cached;
    selections.delete(preference);
  }
  const wanted = preference === "auto" ? AUTO_ORDER : [preference];
  const reasons: string[] = [];
  for (const kind of wanted) {
    for (const attempt of attempts[kind]) {
      const failure = await attempt.run();
      if (failure === undefined) {
        const selection: BackendSelection = { backend: tf.getBackend(), reasons };
        selections.set(preference, selection);
        if (lastLogged !== selection.backend) {
          lastLogged = selection.backend;
          const skipped = reasons.length > 0 ? `; skipped: ${reasons.join("; ")}` : "";
          log(`googlenet-eval: tfjs backend ${describeChoice(selection.backend)}${skipped}`);
        }
        return selection;
      }
      reasons.push(`${attempt.label}: ${failure}`);
    }
  }
  // Only an explicit choice gets here (auto always ends at cpu): say what would have worked.
  const previous = tf.getBackend();
  const available: string[] = [];
  for (const kind of AUTO_ORDER.filter((k) => k !== preference)) {
    for (const attempt of attempts[kind]) {
      if ((await attempt.run()) === undefined && !available.includes(kind)) available.push(kind);
    }
  }
  if (previous) await activate(previous);
  throw new BackendUnavailableError(
    `tfjs backend "${preference}" is not available here (${reasons.join("; ")}); available: ${["auto", ...available].join(", ")}`,
  );
}

/**
 * Makes tfjs run on native TensorFlow with the GPU, or throws naming why not. For a worker that
 * must never run on a CPU backend at GPU prices (`--require-gpu`): "auto" would quietly fall
 * back to tfjs-node, wasm or onnxruntime on the CPU.
 *
 * @throws BackendUnavailableError with the reason the GPU backend did not load.
 */
export async function requireGpuBackend(options: SelectBackendOptions = {}): Promise<BackendSelection> {
  const gpu = attempts.tensorflow[0] as { label: string; run: Attempt };
  const failure = await gpu.run();
  if (failure !== undefined) {
    throw new BackendUnavailableError(`a GPU is required, but ${gpu.label} is not available: ${failure}`);
  }
  return selectBackend("tensorflow", options);
}

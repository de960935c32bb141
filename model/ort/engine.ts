import { availableParallelism } from "node:os";
import * as ort from "onnxruntime-node";
import { CROP_SIDE } from "../image/crop-types.js";
import type { Engine } from "../engine.js";
import { NUM_CLASSES } from "../engine.js";
import { BackendUnavailableError, ConfigurationError, ModelFormatError } from "../errors.js";
import { createCheckedCpuSession, probeCacheFolder, rewriteSlowNodes, type CheckedSession, type CpuSessionOptions } from "./graph-edits/index.js";
import { rowsAreDistributions, softmaxRows } from "../predict.js";
import type { Flavour } from "../preprocess.js";
import { preprocessFor } from "../preprocess.js";

// For the command line, which checks the probe cache's variable at start-up (handlers/graph-edits.ts).
export { CACHE_DIR_ENV, PROBE_CACHE_ENV, probeCacheFolder } from "./graph-edits/index.js";

const CROP_VALUES = 3 * CROP_SIDE * CROP_SIDE;

/** Where onnxruntime runs the graph: its CPU provider, or its CUDA execution provider. */
export type OrtDevice = "cpu" | "cuda";
export const ORT_DEVICES: readonly OrtDevice[] = ["cpu", "cuda"];

/**
 * onnxruntime's execution providers for a device, in order of preference. With "cuda", nodes
 * the CUDA provider has no kernel for still run on the CPU provider.
 */
export function executionProvidersFor(device: OrtDevice): ("cuda" | "cpu")[] {
  return device === "cuda" ? ["cuda", "cpu"] : ["cpu"];
}

export interface OrtEngineOptions {
  /** The path or URL the bytes came from, for messages. */
  readonly source: string;
  /** The input convention of the graph: which channel order and normalisation it was trained with. */
  readonly flavour: Flavour;
  /** Intra-op threads of the session. Default: the machine's cores (`os.availableParallelism()`). */
  readonly threads?: number;
  /**
   * Edit the graph for speed on the CPU at all: the LRN rewrite and the layout edits below, each
   * kept only where a probe batch gives the graph as stored's probabilities through it
   * (model/ort/graph-edits/checked-session.ts). Default: true. Off, the file runs exactly as stored, nothing probed:
   * the switch for when an onnxruntime upgrade is suspected of changing what the edits rely on.
   * The CUDA device never gets the edits (measured on the CPU only).
   */
  readonly graphEdits?: boolean;
  /**
   * The folder where passed graph-edit probes are recorded, so that loading the same file again
   * with the same onnxruntime on the same CPU skips the probe (about 2 s of a 3 s load here); a
   * failed probe is never recorded, and a folder that cannot be written only costs a line.
   * false probes at every load. Default: from the environment (`probeCacheFolder`):
   * `GOOGLENET_EVAL_PROBE_CACHE=off` for false, else `GOOGLENET_EVAL_CACHE_DIR`, else
   * `$XDG_CACHE_HOME/googlenet-eval`, else `~/.cache/googlenet-eval`.
   */
  readonly probeCache?: string | false;
  /**
   * Rewrite nodes onnxruntime runs slowly (LRN) into exact equivalents before loading.
   * Default: true. Off, the file runs exactly as stored (benchmarks compare the two).
   */
  readonly rewriteSlowNodes?: boolean;
  /**
   * On the CPU, run the rewritten LRNs' elementwise steps on onnxruntime's blocked (NCHWc)
   * tensors, without the layout reorders its optimizer puts around them (model/ort/graph-edits/layout.ts):
   * the session is built twice, once to have onnxruntime optimize and save the graph, once
   * from the edited graph. Default: true. Off, the graph runs as onnxruntime lays it out
   * (benchmarks compare the two), and so do `blockRows` and `stemCropsPerPart`.
   */
  readonly blockedLrnSteps?: boolean;
  /**
   * With `blockedLrnSteps`, sum each LRN window over the blocked tensor's block rows, one 3x1
   * convolution instead of the band convolutions (model/ort/graph-edits/block-rows.ts). Default: true.
   */
  readonly blockRows?: boolean;
  /**
   * With `blockedLrnSteps`, run the layers up to the first branch after the LRNs this many crops
   * at a time (model/ort/graph-edits/stem.ts); 0 runs the batch whole. Default: 4.
   */
  readonly stemCropsPerPart?: number;
  /**
   * Let onnxruntime's idle intra-op threads spin waiting for work instead of sleeping.
   * Default: false: the scorer samples the next batch on the main thread while a batch runs,
   * and spinning threads take the core it needs (measured in bench/: faster pipeline on 2
   * cores, same raw speed).
   */
  readonly allowSpinning?: boolean;
  /**
   * Whether the graph already ends in a softmax (from model/onnx/googlenet-recognition.ts `describeOnnxModel`).
   * Default: decided on the first batch, by whether every row is a probability distribution.
   */
  readonly softmaxed?: boolean;
  /**
   * Where the graph runs. "cuda" needs onnxruntime-node's CUDA add-on
   * (libonnxruntime_providers_cuda.so, which this project's .npmrc keeps from being downloaded;
   * the onnxruntime GPU image adds it) with CUDA 12 and cuDNN 9 libraries beside it.
   * Default: "cpu".
   */
  readonly device?: OrtDevice;
  /**
   * With device "cuda": throw a BackendUnavailableError naming the model when the CUDA provider
   * cannot start, instead of falling back to the CPU with a logged line (a GPU worker must never
   * quietly run at CPU speed). Default: false.
   */
  readonly requireGpu?: boolean;
  /** For tests: model/ort/graph-edits/layout.ts's hook on the edited graph, before it loads. Default: none. */
  readonly editedGraphHook?: CpuSessionOptions["editedGraphHook"];
  /**
   * Where the engine's lines go: the graph edits in the session and, when device "cuda" was
   * asked for, the providers in use. Default: a line on stderr.
   */
  readonly log?: (line: string) => void;
}

function dimMatches(dim: number | string | undefined, expected: number): boolean {
  // A symbolic or unknown dimension is checked at run time by onnxruntime itself.
  return typeof dim !== "number" || dim === expected || dim === -1;
}

/**
 * Any ImageNet classifier in ONNX with one float input [N,3,224,224] and 1000 outputs, run by
 * onnxruntime on the CPU or, with `device: "cuda"`, its CUDA execution provider. The flavour must be named because an ONNX graph does not record the
 * normalisation it was trained with.
 *
 * @throws ModelFormatError when the bytes are not ONNX or the graph's input/output do not fit.
 * @throws BackendUnavailableError when `device: "cuda"` and `requireGpu` are set and the CUDA
 *   provider cannot start.
 */
export async function createOrtEngine(modelBytes: Uint8Array, options: OrtEngineOptions): Promise<Engine> {
  const { source, flavour } = options;
  const threads = checkedThreads(options);
  const { session, device } = await createSession(modelBytes, threads, options);
  // Providers only for a GPU request: a GPU host's log says whether the batch ran on CUDA.
  if (options.device === "cuda") {
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    log(`googlenet-eval: onnxruntime execution providers ${executionProvidersFor(device).join(", ")} for ${source}`);
  }

  const input = session.inputMetadata[0];
  if (session.inputMetadata.length !== 1 || !input) {
    await session.release();
    throw new ModelFormatError(
      `${source}: expected exactly one input ([N,3,224,224] float), found ${session.inputNames.length}: ${session.inputNames.join(", ")}`,
    );
  }
  // Batch size 1 graphs (some exporters fix it) are run in slices of that size.
  let fixedBatch: number | undefined;
  if (input.isTensor) {
    const [n, c, h, w] = input.shape;
    const fits =
      input.type === "float32" &&
      input.shape.length === 4 &&
      dimMatches(c, 3) &&
      dimMatches(h, CROP_SIDE) &&
      dimMatches(w, CROP_SIDE);
    if (!fits) {
      await session.release();
      throw new ModelFormatError(
        `${source}: input "${input.name}" is ${input.type} [${input.shape.join(",")}]; expected float32 [N,3,224,224] (NCHW)`,
      );
    }
    if (typeof n === "number" && n > 0) fixedBatch = n;
  }
  // Prefer the output with 1000 classes; a graph may also expose auxiliary outputs.
  const output =
    session.outputMetadata.find((meta) => meta.isTensor && meta.shape[meta.shape.length - 1] === NUM_CLASSES) ??
    session.outputMetadata[0];
  if (!output) {
    await session.release();
    throw new ModelFormatError(`${source}: the graph has no output`);
  }

  let softmaxed = options.softmaxed;
  let released = false;

  const runSlice = async (data: Float32Array, count: number): Promise<Float32Array> => {
    const feed = new ort.Tensor("float32", data, [count, 3, CROP_SIDE, CROP_SIDE]);
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await session.run({ [input.name]: feed }, [output.name]);
    } catch (error) {
      throw new ModelFormatError(`${source}: onnxruntime failed on a batch of ${count}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const values = results[output.name]?.data;
    if (!(values instanceof Float32Array) || values.length !== count * NUM_CLASSES) {
      throw new ModelFormatError(
        `${source}: output "${output.name}" gave ${values?.length ?? 0} values for ${count} crops; ` +
          `expected ${count} x ${NUM_CLASSES} float32 (an ImageNet classifier)`,
      );
    }
    return values;
  };

  return {
    engine: "onnxruntime",
    backend: device,
    flavour,
    inputLayout: "nchw",
    preprocess: preprocessFor(flavour),
    async classify(batch: Float32Array, count: number): Promise<Float32Array> {
      if (released) throw new ModelFormatError(`${source}: the onnxruntime session was disposed`);
      if (!Number.isInteger(count) || count < 1 || batch.length < count * CROP_VALUES) {
        throw new RangeError(`classify: ${count} crops need ${count * CROP_VALUES} values, got ${batch.length}`);
      }
      let scores: Float32Array;
      if (fixedBatch === undefined || fixedBatch === count) {
        scores = await runSlice(batch.subarray(0, count * CROP_VALUES), count);
      } else {
        scores = new Float32Array(count * NUM_CLASSES);
        const slice = new Float32Array(fixedBatch * CROP_VALUES);
        for (let start = 0; start < count; start += fixedBatch) {
          const n = Math.min(fixedBatch, count - start);
          slice.fill(0);
          slice.set(batch.subarray(start * CROP_VALUES, (start + n) * CROP_VALUES));
          const out = await runSlice(slice, fixedBatch);
          scores.set(out.subarray(0, n * NUM_CLASSES), start * NUM_CLASSES);
        }
      }
      // Decided once, so a run cannot mix softmaxed and raw rows.
      softmaxed ??= rowsAreDistributions(scores, count, NUM_CLASSES);
      return softmaxed ? Float32Array.from(scores) : softmaxRows(scores, count, NUM_CLASSES);
    },
    async dispose(): Promise<void> {
      if (released) return;
      released = true;
      await session.release();
    },
  };
}

/** The session's thread count, once the counts among the options are checked. */
function checkedThreads(options: OrtEngineOptions): number {
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new ConfigurationError(`threads must be a positive integer, got ${threads}`);
  }
  const stemCropsPerPart = options.stemCropsPerPart;
  if (stemCropsPerPart !== undefined && !(Number.isInteger(stemCropsPerPart) && stemCropsPerPart >= 0)) {
    throw new ConfigurationError(`stemCropsPerPart must be a whole number of crops (0 runs the batch whole), got ${stemCropsPerPart}`);
  }
  return threads;
}

function rewriteGraph(modelBytes: Uint8Array, source: string): ReturnType<typeof rewriteSlowNodes> {
  try {
    return rewriteSlowNodes(modelBytes, source);
  } catch (error) {
    throw new ModelFormatError(`${source}: onnxruntime cannot load this model: ${(error as Error).message}`, { cause: error });
  }
}

function sessionOptions(threads: number, options: OrtEngineOptions, device: OrtDevice): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: executionProvidersFor(device),
    intraOpNumThreads: threads,
    // The graph is a single chain; one batch at a time keeps the cores on its convolutions.
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    // Passed through as session config entries (onnxruntime's "session.intra_op.allow_spinning").
    extra: { session: { intra_op: { allow_spinning: options.allowSpinning === true ? "1" : "0" } } },
  };
}

/**
 * A session on the requested device. onnxruntime refuses the whole session, not just the
 * provider, when the CUDA add-on or a CUDA library is missing ("Failed to load shared
 * library"), so a CUDA failure is told apart from a bad model by retrying on the CPU. CUDA runs
 * the file as stored: the LRN rewrite and the layout edits were measured on the CPU alone, and
 * the layout edits are of onnxruntime's CPU graph. One line says which edits the session has.
 */
async function createSession(modelBytes: Uint8Array, threads: number, options: OrtEngineOptions): Promise<{ session: ort.InferenceSession; device: OrtDevice }> {
  const { source } = options;
  const device = options.device ?? "cpu";
  if (!ORT_DEVICES.includes(device)) {
    throw new ConfigurationError(`unknown onnxruntime device "${String(device)}"; use one of: ${ORT_DEVICES.join(", ")}`);
  }
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const editsLine = (summary: string) => log(`googlenet-eval: onnxruntime graph edits for ${source}: ${summary}`);
  let cudaError: unknown;
  if (device === "cuda") {
    try {
      const session = await ort.InferenceSession.create(modelBytes, sessionOptions(threads, options, "cuda"));
      editsLine("off (on CUDA the graph runs as stored: the edits are measured on the CPU only)");
      return { session, device };
    } catch (error) {
      cudaError = error;
    }
  }
  const reason = () =>
    `${source}: onnxruntime's CUDA execution provider could not start (${(cudaError as Error).message}); ` +
    "it needs onnxruntime-node's CUDA add-on (libonnxruntime_providers_cuda.so), CUDA 12, cuDNN 9 and an NVIDIA GPU";
  if (cudaError !== undefined && options.requireGpu === true) {
    await (await loadOrThrow(source, () => ort.InferenceSession.create(modelBytes, sessionOptions(threads, options, "cpu")))).release();
    throw new BackendUnavailableError(`${reason()}; the GPU is required, so the model is not run on the CPU`, { cause: cudaError });
  }
  const { session, summary } = await createCpuSessionChecked(modelBytes, threads, options);
  if (cudaError !== undefined) log(`googlenet-eval: ${reason()}; falling back to the CPU`);
  editsLine(summary);
  return { session, device: "cpu" };
}

/** The CPU session, with the graph edits the engine options allow and the probe keeps. */
async function createCpuSessionChecked(modelBytes: Uint8Array, threads: number, options: OrtEngineOptions): Promise<CheckedSession> {
  const { source } = options;
  const cpuOptions = sessionOptions(threads, options, "cpu");
  if (options.graphEdits === false) {
    const session = await loadOrThrow(source, () => ort.InferenceSession.create(modelBytes, cpuOptions));
    return { session, summary: "off (turned off by the graphEdits setting: the graph runs as stored)" };
  }
  const rewrite = options.rewriteSlowNodes === false ? undefined : rewriteGraph(modelBytes, source);
  const probeCache = options.probeCache === undefined ? probeCacheFolder() : options.probeCache || undefined;
  return loadOrThrow(source, () =>
    createCheckedCpuSession(modelBytes, cpuOptions, {
      source,
      preprocess: preprocessFor(options.flavour),
      ...(rewrite ? { rewrite } : {}),
      blockedLrnSteps: options.blockedLrnSteps !== false,
      ...(options.blockRows !== undefined ? { blockRows: options.blockRows } : {}),
      ...(options.stemCropsPerPart !== undefined ? { stemCropsPerPart: options.stemCropsPerPart } : {}),
      ...(options.editedGraphHook ? { editedGraphHook: options.editedGraphHook } : {}),
      ...(probeCache !== undefined ? { probeCache } : {}),
      ...(options.log ? { log: options.log } : {}),
    }),
  );
}

/** onnxruntime's refusal of a graph, as the ModelFormatError naming the model. */
async function loadOrThrow<T>(source: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    throw new ModelFormatError(`${source}: onnxruntime cannot load this model: ${(error as Error).message}`, { cause: error });
  }
}

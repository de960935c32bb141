import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import type { BackendPreference } from "./tfjs/backend.js";
import type { Engine, EngineName, ModelInfo } from "./engine.js";
import { ENGINE_NAMES } from "./engine.js";
import { ConfigurationError, ModelFormatError } from "./errors.js";
import { describeOnnxModel } from "./onnx/googlenet-recognition.js";
import { createOrtEngine, type OrtDevice } from "./ort/engine.js";
import type { Flavour } from "./preprocess.js";
import { FLAVOURS } from "./preprocess.js";

/** An engine by name, or "auto": tfjs when a native TensorFlow backend loads, else onnxruntime. */
export type EngineChoice = EngineName | "auto";
export const ENGINE_CHOICES: readonly EngineChoice[] = [...ENGINE_NAMES, "auto"];

/**
 * backend.ts's BACKEND_PREFERENCES, repeated so that validating a flag does not load tfjs
 * (backend.ts imports it, about half a second) on hosts that run onnxruntime.
 */
export const BACKEND_CHOICES: readonly BackendPreference[] = ["auto", "tensorflow", "wasm", "cpu"];


export interface LoadEngineOptions {
  /** The path or URL the bytes came from; in ModelInfo and every message. */
  readonly source: string;
  /** Which engine runs the model. No default here (the CLI's is "auto"). */
  readonly engine: EngineChoice;
  /**
   * tfjs backend. Default: "auto". One other than "auto" needs engine "tfjs": with engine "auto"
   * it is refused, since auto may pick onnxruntime, where no tfjs backend applies.
   */
  readonly backend?: BackendPreference;
  /**
   * Input convention for a graph the architecture reader does not recognise (onnxruntime only).
   * Default: the recognised flavour; none for an unrecognised graph, which is then refused.
   */
  readonly preprocess?: Flavour;
  /** onnxruntime intra-op threads. Default: the machine's cores. */
  readonly threads?: number;
  /** Where onnxruntime runs the graph. Default: "cpu". */
  readonly device?: OrtDevice;
  /**
   * onnxruntime on the CPU: edit the graph for speed (the LRN rewrite and the layout edits),
   * each edit kept only where a probe batch agrees with the graph as stored. Default: true;
   * false runs the file as stored (model/ort/engine.ts `graphEdits`). tfjs ignores it.
   */
  readonly graphEdits?: boolean;
  /**
   * onnxruntime on the CPU: the folder where passed graph-edit probes are recorded, or false to
   * probe at every load. Default: from the environment (model/ort/engine.ts `probeCache`).
   */
  readonly probeCache?: string | false;
  /**
   * Refuse to run anywhere but a GPU: tfjs must load native TensorFlow on the GPU, onnxruntime
   * must start its CUDA provider (`device: "cuda"`). Default: false.
   */
  readonly requireGpu?: boolean;
  /**
   * Worker threads for the tfjs engine on the wasm or cpu backend, each running its own copy of
   * the network (those backends use one core each in Node). 1 runs the engine in this thread.
   * Ignored when tfjs runs on native TensorFlow, which is multi-threaded already.
   * Default: the machine's cores (`os.availableParallelism()`).
   */
  readonly tfjsWorkers?: number;
}

let nativeTensorflow: Promise<boolean> | undefined;

/**
 * Whether tfjs-node or tfjs-node-gpu loads here and gives tfjs a "tensorflow" backend. Loading
 * is the only real test: the package may be installed while libtensorflow is missing or built
 * for another CPU. backend.ts (and with it tfjs) is imported only when "auto" asks.
 */
export function nativeTensorflowLoads(): Promise<boolean> {
  nativeTensorflow ??= (async () => {
    const { selectBackend } = await import("./tfjs/backend.js");
    try {
      await selectBackend("tensorflow");
      return true;
    } catch (error) {
      // Said once, loudly: on a GPU host this is the difference between GPU and CPU speed.
      process.stderr.write(`googlenet-eval: engine auto: native TensorFlow does not load, so onnxruntime runs on the CPU (${(error as Error).message})\n`);
      return false;
    }
  })();
  return nativeTensorflow;
}

/**
 * Loads a model file into an engine and describes it (file, sha256, flavour).
 *
 * @throws ConfigurationError for an unknown engine, backend or preprocess name.
 * @throws ModelFormatError when the graph is not an ImageNet classifier the engine can run, or
 *   when onnxruntime gets an unrecognised graph without `preprocess`.
 */
export async function loadEngine(
  modelBytes: Uint8Array,
  options: LoadEngineOptions,
): Promise<{ engine: Engine; info: ModelInfo }> {
  const { source } = options;
  if (!ENGINE_CHOICES.includes(options.engine)) {
    throw new ConfigurationError(`unknown engine "${String(options.engine)}"; use one of: ${ENGINE_CHOICES.join(", ")}`);
  }
  const backend = options.backend ?? "auto";
  if (!BACKEND_CHOICES.includes(backend)) {
    throw new ConfigurationError(`unknown backend "${String(backend)}"; use one of: ${BACKEND_CHOICES.join(", ")}`);
  }
  if (options.engine === "auto" && backend !== "auto") {
    // Once this silently meant tfjs; but a caller naming "cpu" may well mean onnxruntime on the
    // CPU, and tfjs's cpu backend is the slowest path there is, so the caller says which.
    throw new ConfigurationError(
      `backend ${backend} is a tfjs backend, but engine auto picks the engine itself (and may pick onnxruntime); ` +
        `set engine tfjs to run tfjs on ${backend}, or leave backend at auto`,
    );
  }
  if (options.preprocess !== undefined && !FLAVOURS.includes(options.preprocess)) {
    throw new ConfigurationError(
      `unknown preprocess "${String(options.preprocess)}"; use one of: ${FLAVOURS.join(", ")}`,
    );
  }
  const sha256 = createHash("sha256").update(modelBytes).digest("hex");
  const description = describeOnnxModel(modelBytes, source);
  const recognised = description.flavour;
  if (recognised !== undefined && options.preprocess !== undefined && options.preprocess !== recognised) {
    throw new ConfigurationError(
      `${source} is recognised as a ${recognised} GoogLeNet, but preprocess ${options.preprocess} was asked for; ` +
        `leave preprocess unset, or set it to ${recognised}`,
    );
  }

  let engineName: EngineName;
  if (options.engine === "auto") {
    // tfjs builds GoogLeNet itself, so it can only take graphs it recognises; for those, the
    // native TensorFlow backend is the fastest thing here, and otherwise onnxruntime beats
    // tfjs's wasm/cpu backends on the CPU.
    // A CUDA device names onnxruntime's GPU path; a GPU required without it names tfjs's.
    const wantsTfjs =
      options.device !== "cuda" && (options.requireGpu === true || (await nativeTensorflowLoads()));
    engineName = recognised !== undefined && wantsTfjs ? "tfjs" : "onnxruntime";
  } else {
    engineName = options.engine;
  }

  if (engineName === "tfjs") {
    if (recognised === undefined) {
      throw new ModelFormatError(
        `${source}: the tfjs engine builds GoogLeNet from the graph and does not recognise this one; ` +
          `use the onnxruntime engine with preprocess ${FLAVOURS.join(" or ")}`,
      );
    }
    const workers = options.tfjsWorkers ?? availableParallelism();
    if (!Number.isInteger(workers) || workers < 1) {
      throw new ConfigurationError(`tfjs workers must be a positive integer (default: the number of cores), got ${String(workers)}`);
    }
    if (options.requireGpu === true) {
      // Before anything is built: tfjs-node on the CPU or wasm would otherwise run at GPU prices.
      await (await import("./tfjs/backend.js")).requireGpuBackend();
    }
    const native = options.requireGpu === true || backend === "tensorflow" || (backend === "auto" && (await nativeTensorflowLoads()));
    const engine =
      native || workers === 1
        ? await (await import("./tfjs/engine.js")).createTfjsEngine(modelBytes, { source, backend })
        : await (await import("./tfjs/pool.js")).createTfjsPoolEngine(modelBytes, { source, backend, workers });
    return { engine, info: { file: source, sha256, flavour: recognised } };
  }

  const flavour = recognised ?? options.preprocess;
  if (flavour === undefined) {
    throw new ModelFormatError(
      `${source}: not a GoogLeNet this tool recognises, so its input convention is unknown; ` +
        `name it with preprocess bvlc (BGR, 0..255 minus means, Caffe) or preprocess torchvision (RGB, ImageNet mean/std)` +
        (description.unrecognisedReason ? ` (not recognised because: ${description.unrecognisedReason})` : ""),
    );
  }
  if (options.requireGpu === true && options.device !== "cuda") {
    throw new ConfigurationError(`a GPU is required for ${source}, but onnxruntime was asked to run on the CPU; use device cuda`);
  }
  const engine = await createOrtEngine(modelBytes, {
    source,
    flavour,
    softmaxed: description.softmaxed,
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(options.requireGpu !== undefined ? { requireGpu: options.requireGpu } : {}),
    ...(options.graphEdits !== undefined ? { graphEdits: options.graphEdits } : {}),
    ...(options.probeCache !== undefined ? { probeCache: options.probeCache } : {}),
  });
  return { engine, info: { file: source, sha256, flavour } };
}

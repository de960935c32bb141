import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { BackendPreference } from "./backend.js";
import { CROP_SIDE } from "../image/crop-types.js";
import { NUM_CLASSES, type Engine } from "../engine.js";
import { BackendUnavailableError, ConfigurationError, GoogLeNetEvalError, ImageDecodeError, LabelFileError, ModelFormatError } from "../errors.js";
import { preprocessFor, type Flavour, type Preprocess } from "../preprocess.js";

export interface TfjsPoolEngineOptions {
  /** The path or URL the model came from, for messages. */
  readonly source: string;
  /**
   * tfjs backend each worker selects. No default: the pool exists for the wasm and cpu backends
   * (native TensorFlow is multi-threaded already), so the caller says which.
   */
  readonly backend: BackendPreference;
  /** Worker threads, each with its own copy of the network. Default: `os.availableParallelism()`. */
  readonly workers?: number;
  /** Most crops per forward pass inside one worker; larger slices are split. Default: 16. */
  readonly maxBatch?: number;
  /** Where the backend choice is logged (one line for the whole pool). Default: one line on stderr. */
  readonly log?: (line: string) => void;
}

/** What a worker gets as `workerData`; the model bytes are shared, not copied per worker. */
export interface PoolWorkerData {
  readonly modelBytes: SharedArrayBuffer;
  readonly source: string;
  readonly backend: BackendPreference;
  readonly maxBatch: number;
}

/** An error crossing the thread boundary: enough to rebuild it on this side. */
export interface SerialisedError {
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
}

/** Main thread to worker: classify `count` NHWC crops held in `input` (transferred). */
export interface PoolRequest {
  readonly id: number;
  readonly input: ArrayBuffer;
  readonly count: number;
}

/** Worker to main thread. */
export type PoolReply =
  | { readonly type: "ready"; readonly backend: string; readonly flavour: Flavour; readonly log: readonly string[] }
  | { readonly type: "failed"; readonly error: SerialisedError }
  | { readonly type: "result"; readonly id: number; readonly output: ArrayBuffer }
  | { readonly type: "error"; readonly id: number; readonly error: SerialisedError };

const DEFAULT_MAX_BATCH = 16;
const PER_CROP = CROP_SIDE * CROP_SIDE * 3;

type ErrorClass = new (message: string, options?: { cause?: unknown }) => Error;

/** Project errors keep their class across the thread boundary, so callers can still tell them apart. */
const ERROR_CLASSES: Record<string, ErrorClass> = {
  GoogLeNetEvalError,
  ModelFormatError,
  ImageDecodeError,
  LabelFileError,
  ConfigurationError,
  BackendUnavailableError,
  RangeError,
  TypeError,
};

function rebuildError(error: SerialisedError, message: string): Error {
  const cause = new Error(error.message);
  cause.name = error.name;
  if (error.stack !== undefined) cause.stack = error.stack;
  const Class = ERROR_CLASSES[error.name] ?? GoogLeNetEvalError;
  return new Class(message, { cause });
}

/**
 * How to start a worker: the compiled pool-worker.js next to this module (dist/), or, when
 * this module itself runs from its .ts source (tsx, vitest), the .ts entry behind a small
 * bootstrap. `execArgv: ["--import", "tsx"]` does not do it on Node 20: tsx registers its
 * hooks only on the main thread there (tsx 4.23 checks isMainThread before Node 22.22), and
 * workers do not inherit them, so the bootstrap registers tsx's ESM hooks inside the worker
 * through tsx's API, then imports the entry.
 */
function workerEntry(): { entry: URL | string; eval: boolean } {
  const js = new URL("./pool-worker.js", import.meta.url);
  if (existsSync(fileURLToPath(js))) return { entry: js, eval: false };
  const ts = new URL("./pool-worker.ts", import.meta.url);
  if (!existsSync(fileURLToPath(ts))) {
    throw new BackendUnavailableError(
      `the tfjs worker pool cannot find its worker entry: neither ${fileURLToPath(js)} nor ${fileURLToPath(ts)} exists ` +
        `(was model/ bundled into one file?); use the in-process engine (1 worker) instead`,
    );
  }
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve("tsx/esm/api");
  } catch (error) {
    throw new BackendUnavailableError(
      `the tfjs worker pool runs from TypeScript sources (${fileURLToPath(ts)}) but cannot resolve tsx to load them in its ` +
        `workers; build with \`npm run build\` and run dist/, or install tsx`,
      { cause: error },
    );
  }
  const code =
    `import(${JSON.stringify(tsxApi)})` +
    `.then((tsx) => { tsx.register(); return import(${JSON.stringify(ts.href)}); })`;
  return { entry: code, eval: true };
}

/** Request ids are unique across pools, so a stray reply can never settle another call. */
let nextRequestId = 1;

interface Pending {
  readonly resolve: (output: Float32Array) => void;
  readonly reject: (error: Error) => void;
}

/** One worker thread and the requests it still owes an answer to. */
class PoolThread {
  readonly pending = new Map<number, Pending>();
  /** Set once the thread can no longer answer: it failed, crashed or was disposed. */
  broken: Error | undefined;
  readonly ready: Promise<Extract<PoolReply, { type: "ready" }>>;

  constructor(
    readonly index: number,
    readonly worker: Worker,
    source: string,
  ) {
    this.ready = new Promise((resolve, reject) => {
      worker.on("message", (reply: PoolReply) => {
        switch (reply.type) {
          case "ready":
            resolve(reply);
            break;
          case "failed": {
            // createTfjsEngine's own messages already name the model; keep them as they are.
            const text = reply.error.message.includes(source) ? reply.error.message : `${source}: ${reply.error.message}`;
            const error = rebuildError(reply.error, text);
            this.fail(error);
            reject(error);
            break;
          }
          case "result":
            this.settle(reply.id, (p) => p.resolve(new Float32Array(reply.output)));
            break;
          case "error": {
            const error = rebuildError(reply.error, `${source}: tfjs pool worker ${index}: ${reply.error.message}`);
            this.settle(reply.id, (p) => p.reject(error));
            break;
          }
        }
      });
      worker.on("error", (cause: unknown) => {
        const message = cause instanceof Error ? cause.message : String(cause);
        const error = new GoogLeNetEvalError(`${source}: tfjs pool worker ${index} crashed: ${message}`, { cause });
        this.fail(error);
        reject(error);
      });
      worker.on("exit", (code) => {
        const error = new GoogLeNetEvalError(`${source}: tfjs pool worker ${index} exited (code ${code}); this pool cannot classify any more`);
        this.fail(error);
        reject(error);
      });
    });
    // Nobody awaits `ready` after a failure during start-up teardown; that is not unhandled.
    this.ready.catch(() => undefined);
  }

  run(input: Float32Array, count: number): Promise<Float32Array> {
    if (this.broken) return Promise.reject(this.broken);
    const id = nextRequestId++;
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const request: PoolRequest = { id, input: input.buffer as ArrayBuffer, count };
      this.worker.postMessage(request, [request.input]);
    });
  }

  private settle(id: number, action: (pending: Pending) => void): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    action(pending);
  }

  /** Marks the thread unusable and rejects everything it still owes; the first reason wins. */
  fail(error: Error): void {
    this.broken ??= error;
    for (const pending of this.pending.values()) pending.reject(this.broken);
    this.pending.clear();
  }
}

class TfjsPoolEngine implements Engine {
  readonly engine = "tfjs" as const;
  readonly inputLayout = "nhwc" as const;
  readonly preprocess: Preprocess;
  private threads: PoolThread[] | undefined;
  private rotation = 0;

  constructor(
    readonly backend: string,
    readonly flavour: Flavour,
    threads: PoolThread[],
    private readonly source: string,
  ) {
    this.threads = threads;
    this.preprocess = preprocessFor(flavour);
  }

  async classify(input: Float32Array, count: number): Promise<Float32Array> {
    const threads = this.threads;
    if (!threads) throw new Error(`tfjs pool engine for ${this.source} used after dispose()`);
    if (!Number.isInteger(count) || count < 0 || input.length !== count * PER_CROP) {
      throw new RangeError(`classify: expected ${count} crops of ${CROP_SIDE}x${CROP_SIDE}x3 = ${count * PER_CROP} values, got ${input.length}`);
    }
    const out = new Float32Array(count * NUM_CLASSES);
    // Contiguous slices, the first `count % n` one crop longer, so no worker idles on a full batch.
    const used = Math.min(threads.length, count);
    const base = Math.floor(count / Math.max(used, 1));
    const extra = count - base * used;
    // Overlapping small calls would all land on the first workers; rotating spreads them.
    const first = this.rotation++ % threads.length;
    const jobs: Promise<void>[] = [];
    let start = 0;
    for (let k = 0; k < used; k++) {
      const n = base + (k < extra ? 1 : 0);
      const from = start;
      // slice() copies into a fresh buffer we may transfer; the caller's buffer stays theirs.
      const part = input.slice(from * PER_CROP, (from + n) * PER_CROP);
      const thread = threads[(first + k) % threads.length] as PoolThread;
      jobs.push(thread.run(part, n).then((probabilities) => out.set(probabilities, from * NUM_CLASSES)));
      start += n;
    }
    await Promise.all(jobs);
    return out;
  }

  async dispose(): Promise<void> {
    const threads = this.threads;
    this.threads = undefined;
    if (!threads) return;
    await terminateAll(threads, `tfjs pool engine for ${this.source} was disposed`);
  }
}

async function terminateAll(threads: readonly PoolThread[], reason: string): Promise<void> {
  const error = new GoogLeNetEvalError(reason);
  for (const thread of threads) thread.fail(error);
  await Promise.all(threads.map((thread) => thread.worker.terminate()));
}

function checkCount(name: string, value: number, fallback: string): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new ConfigurationError(`${name} must be a positive integer (default ${fallback}), got ${String(value)}`);
  }
}

/**
 * GoogLeNet in TensorFlow.js on every core: `workers` worker threads, each with its own tfjs and
 * backend and a network built from the same ONNX bytes. tfjs-backend-wasm runs single-threaded
 * in Node (backend.ts, WASM_THREADS_NOTE), so this is how the wasm and cpu backends use more
 * than one core. `classify` splits a batch into contiguous slices of crops, one per worker, and
 * returns the probabilities in input order; `dispose` terminates the workers, which otherwise
 * keep the process alive.
 *
 * @throws ModelFormatError (from the first worker to fail) when the graph is not a GoogLeNet of
 *   a known flavour; the message names `source`.
 * @throws BackendUnavailableError when the backend cannot run in a worker, or the worker entry
 *   file is missing.
 * @throws ConfigurationError when `workers` or `maxBatch` is not a positive integer.
 */
export async function createTfjsPoolEngine(modelBytes: Uint8Array, options: TfjsPoolEngineOptions): Promise<Engine> {
  const { source, backend } = options;
  const workers = options.workers ?? availableParallelism();
  const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH;
  checkCount("workers", workers, "the number of cores");
  checkCount("maxBatch", maxBatch, String(DEFAULT_MAX_BATCH));
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const entry = workerEntry();

  // One copy of the bytes for all workers instead of one structured clone each.
  const shared = new SharedArrayBuffer(modelBytes.byteLength);
  new Uint8Array(shared).set(modelBytes);
  const workerData: PoolWorkerData = { modelBytes: shared, source, backend, maxBatch };

  const threads = Array.from(
    { length: workers },
    (_, index) =>
      new PoolThread(index, new Worker(entry.entry, { workerData, eval: entry.eval }), source),
  );
  let replies: Extract<PoolReply, { type: "ready" }>[];
  try {
    replies = await Promise.all(threads.map((thread) => thread.ready));
  } catch (error) {
    await terminateAll(threads, `tfjs pool for ${source} failed to start`);
    throw error;
  }
  const [first] = replies as [Extract<PoolReply, { type: "ready" }>, ...unknown[]];
  const differing = replies.find((r) => r.backend !== first.backend);
  if (differing) {
    await terminateAll(threads, `tfjs pool for ${source} got mixed backends`);
    throw new BackendUnavailableError(
      `${source}: tfjs pool workers selected different backends (${first.backend}, ${differing.backend}) for "${backend}"; name one backend: tensorflow, wasm or cpu`,
    );
  }
  for (const line of first.log) log(`${line}; ${workers} worker threads, a network in each`);
  return new TfjsPoolEngine(first.backend, first.flavour, threads, source);
}

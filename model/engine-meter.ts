import { readFileSync, readdirSync } from "node:fs";
import { takesWindows } from "./window-engine.js";
import type { ImageWindows } from "./window-engine.js";
import type { Engine } from "./engine.js";

/** What engines did over a stretch of wall time (one batch of a worker, one bench run). */
export interface EngineUsage {
  /** Engine, backend and, for a GPU, its model name: "tfjs/tensorflow on Tesla T4", "onnxruntime/cpu". */
  readonly device: string;
  /** Crops handed to the engines. */
  readonly crops: number;
  readonly wallSeconds: number;
  /** Seconds during which at least one engine call was running (upload, compute and download). */
  readonly engineSeconds: number;
  /** crops / wallSeconds. */
  readonly cropsPerSecond: number;
  /**
   * 1 - engineSeconds / wallSeconds: the share of the stretch in which no engine call was
   * running, i.e. the device waited for the host (reading, decoding, sampling, records). On a
   * GPU worker this is the GPU-idle share the feeder leaves.
   */
  readonly idleShare: number;
}

/** Calls in flight and busy time of one engine, kept across batches. */
interface Counter {
  readonly clock: Clock;
  active: number;
  since: number;
  busyMs: number;
  crops: number;
}

const counters = new WeakMap<Engine, Counter>();

/** Milliseconds from some fixed origin. */
export type Clock = () => number;

const wallClock: Clock = () => performance.now();

/**
 * Counts an engine's calls from now on, in place: `classify` (and `classifyWindows` of an
 * engine that cuts its own crops) is wrapped once per engine object, so engines kept in a
 * cache across batches keep one counter.
 */
function counterOf(engine: Engine, clock: Clock): Counter {
  let counter = counters.get(engine);
  if (counter !== undefined) return counter;
  const created: Counter = { clock, active: 0, since: 0, busyMs: 0, crops: 0 };
  counter = created;
  counters.set(engine, counter);
  const timed = async (count: number, call: () => Promise<Float32Array>): Promise<Float32Array> => {
    if (created.active++ === 0) created.since = clock();
    created.crops += count;
    try {
      return await call();
    } finally {
      if (--created.active === 0) created.busyMs += clock() - created.since;
    }
  };
  const classify = engine.classify.bind(engine);
  engine.classify = (input: Float32Array, count: number) => timed(count, () => classify(input, count));
  if (takesWindows(engine)) {
    const classifyWindows = engine.classifyWindows.bind(engine);
    engine.classifyWindows = (batch: readonly ImageWindows[]) =>
      timed(
        batch.reduce((sum, { crops }) => sum + crops.length, 0),
        () => classifyWindows(batch),
      );
  }
  return counter;
}

/** Busy milliseconds so far, counting a call still running up to now. */
function busyNow(counter: Counter, now: number): number {
  return counter.busyMs + (counter.active > 0 ? now - counter.since : 0);
}

let gpuName: string | undefined | null = null;

/** The NVIDIA driver's name for the first GPU (/proc/driver/nvidia/gpus/<bus>/information), if there is one. */
function nvidiaGpuName(): string | undefined {
  if (gpuName !== null) return gpuName;
  gpuName = undefined;
  try {
    const root = "/proc/driver/nvidia/gpus";
    const [bus] = readdirSync(root);
    const model = /^Model:\s*(.+)$/m.exec(readFileSync(`${root}/${bus}/information`, "utf8"));
    gpuName = model?.[1]?.trim();
  } catch {
    // No driver: not a GPU host.
  }
  return gpuName;
}

/** "engine/backend", plus the GPU's name when the backend runs on one (native TensorFlow with the NVIDIA driver, CUDA). */
export function deviceOf(engine: Pick<Engine, "engine" | "backend">): string {
  const onGpu = engine.backend === "cuda" || (engine.engine === "tfjs" && engine.backend === "tensorflow" && nvidiaGpuName() !== undefined);
  const name = onGpu ? nvidiaGpuName() : undefined;
  return `${engine.engine}/${engine.backend}${onGpu ? ` on ${name ?? "a GPU"}` : ""}`;
}

/**
 * Starts measuring what `engines` do from now until `finish()`: crops, busy time and the idle
 * share. Calls of several engines (an ensemble) that overlap in time count once per engine
 * towards busy time, so with more than one engine `engineSeconds` is their summed busy time
 * capped at the wall time.
 *
 * A worker logs `...usage.finish()` in its per-batch line; `npm run bench -- --gpu` reports
 * the same figures for a whole run.
 *
 * `clock` is the time source, performance.now() by default; an engine keeps the clock of its
 * first measurement, so one engine is never timed on two clocks.
 */
export function measureEngines(engines: readonly Engine[], clock: Clock = wallClock): { finish(): EngineUsage } {
  const start = clock();
  const counted = engines.map((engine) => {
    const counter = counterOf(engine, clock);
    return { counter, busy: busyNow(counter, start), crops: counter.crops };
  });
  return {
    finish(): EngineUsage {
      const now = clock();
      const wallMs = Math.max(now - start, 1e-9);
      const busyMs = Math.min(
        wallMs,
        counted.reduce((sum, c) => sum + busyNow(c.counter, now) - c.busy, 0),
      );
      const crops = counted.reduce((sum, c) => sum + c.counter.crops - c.crops, 0);
      return {
        device: [...new Set(engines.map(deviceOf))].join(", "),
        crops,
        wallSeconds: round(wallMs / 1000, 3),
        engineSeconds: round(busyMs / 1000, 3),
        cropsPerSecond: round(crops / (wallMs / 1000), 1),
        idleShare: round(1 - busyMs / wallMs, 3),
      };
    },
  };
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

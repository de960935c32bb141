import type { LoadEngineOptions } from "../model/load.js";

/** The engine settings that decide whether, and which, GPU a worker must have. */
export type GpuSettings = Pick<LoadEngineOptions, "requireGpu" | "device">;

/**
 * With `requireGpu`, starts the GPU path this worker's engines will take before any message is
 * received: onnxruntime's CUDA provider when `device` is "cuda", tfjs on native TensorFlow's GPU
 * otherwise (as model/load.ts picks). A worker that found out only at its first model load would
 * hand the message back and exit, and ECS's restarts would spend the message's receives until a
 * healthy batch reached the dead-letter queue.
 *
 * @throws BackendUnavailableError naming why the GPU did not start.
 */
export async function assertGpuStarts(settings: GpuSettings | undefined): Promise<void> {
  if (settings?.requireGpu !== true) return;
  if (settings.device === "cuda") {
    await (await import("../model/ort/gpu-probe.js")).probeCudaProvider();
    return;
  }
  await (await import("../model/tfjs/backend.js")).requireGpuBackend();
}

import { BackendUnavailableError } from "../model/errors.js";
import type { Report } from "./report.js";
import { round } from "./report.js";
import { run } from "./run-task.js";

export interface GpuSettings {
  readonly batch: number;
  readonly threads: number;
  readonly rawSeconds: number;
  readonly images: number;
  readonly feederImages: number;
}

/**
 * `npm run bench -- --gpu`: the tfjs engine on native TensorFlow with the GPU, alone and in the
 * 144-crop pipeline, beside the feeder ceiling of the same host, and the share of the pipeline
 * run in which the GPU had no call to work on. Refuses, before measuring anything, on a host
 * where tfjs-node-gpu does not load with an NVIDIA driver.
 *
 * @throws BackendUnavailableError naming why the GPU backend did not load.
 */
export async function runGpu(report: Report, settings: GpuSettings): Promise<Record<string, unknown>> {
  const { requireGpuBackend } = await import("../model/tfjs/backend.js");
  try {
    await requireGpuBackend({ log: (line) => report.log(line) });
  } catch (error) {
    throw new BackendUnavailableError(
      `--gpu measures the tfjs engine on a GPU and there is none here: ${(error as Error).message}. ` +
        "Run it on a GPU worker host (the gpu-tfjs image target); without --gpu the bench measures this machine's CPU",
      { cause: error },
    );
  }
  const { batch, threads } = settings;
  const raw = await run({ kind: "raw", engine: "tfjs", backend: "tensorflow", tfjsWorkers: 1, requireGpu: true, batch, threads, seconds: settings.rawSeconds, minCalls: 3 });
  report.add("tfjs on the GPU alone", raw);
  const pipeline = await run({ kind: "pipeline", engine: "tfjs", backend: "tensorflow", requireGpu: true, batch, threads, images: settings.images });
  report.add(`pipeline tfjs on the GPU, ${pipeline.images} images x 144`, pipeline, `GPU idle ${(100 * (pipeline.idleShare ?? 0)).toFixed(1)}% of the run`);
  const hostFeeder = await run({ kind: "feeder", batch, images: settings.feederImages });
  report.add(`feeder ceiling, crops sampled on the host (engine answering at once), ${hostFeeder.images} images x 144`, hostFeeder);
  const feeder = await run({ kind: "feeder", batch, images: settings.feederImages, path: "device" });
  report.add(`feeder ceiling, crops cut on the device (the tfjs engine's path here), ${feeder.images} images x 144`, feeder);
  const cut = await run({ kind: "device-cut", backend: "tensorflow", batch, images: 4 });
  report.add(`device-side cutting alone on the GPU, ${cut.crops} crops`, cut);
  report.table();
  return {
    device: pipeline.device ?? raw.device,
    backend: "tensorflow",
    tfjsRawCropsPerSec: round(raw.cropsPerSec),
    tfjsPipelineCropsPerSec: round(pipeline.cropsPerSec),
    tfjsEfficiency: round(pipeline.cropsPerSec / raw.cropsPerSec, 3),
    gpuIdleShare: pipeline.idleShare,
    feederCropsPerSec: round(feeder.cropsPerSec),
    feederToEngine: round(feeder.cropsPerSec / raw.cropsPerSec, 2),
    feederHostCropsPerSec: round(hostFeeder.cropsPerSec),
    deviceCutCropsPerSec: { tensorflow: round(cut.cropsPerSec) },
    tfjsPeakRssMB: round(pipeline.peakRssMB, 0),
    batch,
  };
}

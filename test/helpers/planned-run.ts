import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Synsets } from "../../model/synsets.js";
import { planRun, type PlanOptions } from "../../queue/plan.js";
import { S3Location } from "../../storage/s3-location.js";
import type { Emulator, QueuePair } from "./emulator.js";

/** The photos, synsets and model in ../shared that the queue tests stage (paths from the repository root). */
export const SAMPLES = "../shared/imagenet/samples";
export const SYNSETS = "../shared/imagenet/synset_words.txt";
export const MODEL = "../shared/models/bvlc-googlenet.onnx";

/** Where stageDataBucket puts the photos and the model. */
export const DATA_IMAGES = "s3://data/images";
export const DATA_MODEL = "s3://data/models/bvlc-googlenet.onnx";

/** Four photos of four classes, one batch of two each at planDataRun's batch size. */
export const FOUR_PHOTOS = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01484850_great_white_shark.JPEG", "n01491361_tiger_shark.JPEG"] as const;

/** The bucket "data" on the emulator with `photos` from SAMPLES under images/ and, unless `model` is false, MODEL at DATA_MODEL. */
export async function stageDataBucket(emulator: Emulator, photos: readonly string[], options: { model?: boolean } = {}): Promise<S3Location> {
  emulator.server.createBucket("data");
  const data = new S3Location("s3://data", emulator.s3);
  for (const name of photos) await data.write(`images/${name}`, await readFile(join(SAMPLES, name)));
  if (options.model !== false) await data.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
  return data;
}

/**
 * Plans DATA_IMAGES with DATA_MODEL, 1 crop, 2 images a batch, on onnxruntime, through the
 * emulator's own clients (plan runs beside the workers, not behind their fault proxy). `options`
 * names the queue and output and may change any other setting.
 */
export function planDataRun(
  emulator: Emulator,
  synsets: Synsets,
  options: Pick<PlanOptions, "queueUrl" | "out"> & Partial<PlanOptions>,
): ReturnType<typeof planRun> {
  return planRun({
    input: DATA_IMAGES,
    models: [DATA_MODEL],
    synsets,
    crops: 1,
    batchSize: 2,
    engine: "onnxruntime",
    clients: { s3: emulator.s3, sqs: emulator.sqs },
    ...options,
  });
}

/** A fresh queue `name` and planDataRun on it into s3://data/runs/<name> with run id `name`. */
export async function plannedDataRun(
  emulator: Emulator,
  synsets: Synsets,
  name: string,
  queue: { visibilityTimeoutSeconds: number; maxReceiveCount: number },
  more: Partial<PlanOptions> = {},
): Promise<QueuePair & { out: S3Location }> {
  const pair = emulator.createQueue(name, queue);
  const out = `s3://data/runs/${name}`;
  await planDataRun(emulator, synsets, { queueUrl: pair.queueUrl, out, runId: name, ...more });
  return { ...pair, out: new S3Location(out, emulator.s3) };
}

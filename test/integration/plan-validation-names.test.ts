import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { readManifestWithDigest } from "../../queue/manifest.js";
import { planRun } from "../../queue/plan.js";
import { S3Location } from "../../storage/s3-location.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

const SAMPLES = "../shared/imagenet/samples";
const MODEL = "../shared/models/bvlc-googlenet.onnx";

// Validation numbers of each photo's own class, read off ../shared/imagenet (data, not code):
// line 293 of the TF-slim file is n01440764 (tench, class 0), line 236 n01443537 (goldfish, 1);
// samples-val.txt gives the classes 0 and 1.
const PHOTOS: [photo: string, key: string, label: number][] = [
  ["n01440764_tench.JPEG", "ILSVRC2012_val_00000293.JPEG", 0],
  ["n01443537_goldfish.JPEG", "ILSVRC2012_val_00000236.JPEG", 1],
];

describe("plan labels validation-named keys from the built-in labels (S3/SQS emulator)", () => {
  let emulator: Emulator;
  let synsets: Synsets;

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    synsets = await readSynsets("../shared/imagenet/synset_words.txt");
    const data = new S3Location("s3://data", emulator.s3);
    for (const [photo, key] of PHOTOS) await data.write(`val/${key}`, await readFile(`${SAMPLES}/${photo}`));
    await data.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
  });

  afterAll(async () => {
    await emulator?.stop();
  });

  it.each([
    ["no labels: the built-in validation labels", {}, "built-in ilsvrc2012_validation_synset_labels.txt", [1, 0], 2],
    ["--labels none: WNIDs only, none here", { builtInLabels: false }, "wnid-in-key", [null, null], 0],
  ] as const)("%s", async (_, more, source, labels, labelled) => {
    // Prepare
    const queue = emulator.createQueue(`val-${labelled}`, { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const out = `s3://data/runs/val-${labelled}`;

    // Act
    const planned = await planRun({
      input: "s3://data/val",
      out,
      queueUrl: queue.queueUrl,
      models: ["s3://data/models/bvlc-googlenet.onnx"],
      synsets,
      crops: 1,
      engine: "onnxruntime",
      clients: { s3: emulator.s3, sqs: emulator.sqs },
      ...more,
    });

    // Assess: keys are listed in name order, val 236 (goldfish, 1) before val 293 (tench, 0).
    expect(planned.labelled).toBe(labelled);
    const { manifest } = await readManifestWithDigest(new S3Location(out, emulator.s3));
    expect(manifest.labels).toBe(source);
    expect(manifest.batches.flatMap((b) => b.keys)).toEqual([PHOTOS[1]?.[1], PHOTOS[0]?.[1]]);
    expect(manifest.batches.flatMap((b) => b.labels)).toEqual(labels);
  });
});

import { readFile } from "node:fs/promises";
import * as tf from "@tensorflow/tfjs-core";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { selectBackend } from "../../model/tfjs/backend.js";
import { DeviceCropper } from "../../model/tfjs/device-crops.js";
import type { ImageWindows, WindowEngine } from "../../model/window-engine.js";
import type { Engine, ModelInfo } from "../../model/engine.js";
import { NUM_CLASSES } from "../../model/engine.js";
import { preprocessFor } from "../../model/preprocess.js";
import { readSynsets } from "../../model/synsets.js";
import type { ResultRecord } from "../../scoring/records.js";
import type { ImageInput } from "../../scoring/scorer.js";
import { scoreImages } from "../../scoring/scorer.js";
import { syntheticImage } from "../helpers/protocol-reference.js";

const SAMPLES = "../shared/imagenet/samples";
const INFO: ModelInfo = { file: "mean-colour", sha256: "0".repeat(64), flavour: "bvlc" };
const PIXELS = 224 * 224;

/**
 * A stand-in network that any difference in the crops shows through: each crop's mean of its
 * three channels places a peak over the classes, whose softmax is the crop's distribution.
 */
function meanColourModel(means: ArrayLike<number>, count: number): Float32Array {
  const out = new Float32Array(count * NUM_CLASSES);
  for (let k = 0; k < count; k++) {
    const centre = 500 + 2 * means[3 * k]! + means[3 * k + 1]! - means[3 * k + 2]!;
    let sum = 0;
    for (let c = 0; c < NUM_CLASSES; c++) sum += out[k * NUM_CLASSES + c] = Math.exp(-((c - centre) ** 2) / 400);
    for (let c = 0; c < NUM_CLASSES; c++) out[k * NUM_CLASSES + c] = out[k * NUM_CLASSES + c]! / sum;
  }
  return out;
}

const base = { engine: "tfjs", backend: "wasm", flavour: "bvlc", inputLayout: "nhwc", preprocess: preprocessFor("bvlc") } as const;

/** The model on crops the scorer sampled on the host. */
const sampledEngine: Engine = {
  ...base,
  async classify(input: Float32Array, count: number): Promise<Float32Array> {
    const means = new Float64Array(count * 3);
    for (let k = 0; k < count; k++) {
      for (let p = 0; p < PIXELS; p++) for (let c = 0; c < 3; c++) means[3 * k + c] = means[3 * k + c]! + input[(k * PIXELS + p) * 3 + c]! / PIXELS;
    }
    return meanColourModel(means, count);
  },
  async dispose(): Promise<void> {},
};

/** The same model on crops cut from the images by DeviceCropper on tfjs's wasm backend. */
function windowEngine(cropper: DeviceCropper, seen: ImageWindows[][]): WindowEngine {
  return {
    ...base,
    classify: () => Promise.reject(new Error("a window engine is handed windows, not sampled crops")),
    async classifyWindows(batch: readonly ImageWindows[]): Promise<Float32Array> {
      seen.push([...batch]);
      const crops = cropper.cut(batch);
      const means = tf.tidy(() => tf.mean(crops, [1, 2]).dataSync());
      crops.dispose();
      return meanColourModel(means, means.length / 3);
    },
    async dispose(): Promise<void> {},
  };
}

let classNames: readonly string[];
let inputs: ImageInput[];

beforeAll(async () => {
  await selectBackend("wasm", { log: () => undefined });
  classNames = (await readSynsets("../shared/imagenet/synset_words.txt")).names;
  // A square image (three coinciding squares per scale) between two photos.
  const square = syntheticImage(48, 48, 5);
  const squarePng = await sharp(Buffer.from(square.data), { raw: { width: 48, height: 48, channels: 3 } }).png().toBuffer();
  const bytes: [string, Uint8Array][] = [
    ["tench.jpg", await readFile(`${SAMPLES}/n01440764_tench.JPEG`)],
    ["square.png", squarePng],
    ["ostrich.jpg", await readFile(`${SAMPLES}/n01518878_ostrich.JPEG`)],
  ];
  inputs = bytes.map(([key, data]) => ({ key, label: 7, read: async () => data }));
});

afterAll(async () => {
  await selectBackend("cpu", { log: () => undefined });
});

async function score(engine: Engine, crops: 10 | 144): Promise<ResultRecord[]> {
  const records: ResultRecord[] = [];
  for await (const record of scoreImages(inputs, { models: [{ engine, info: INFO }], crops, classNames, applyExifOrientation: false, batchCrops: 16 })) {
    records.push(record);
  }
  return records;
}

describe("scoreImages with an engine that cuts its own crops", () => {
  it.each([10, 144] as const)("gives the records the host-sampled crops give (%i crops)", async (crops) => {
    // Prepare
    const cropper = new DeviceCropper(preprocessFor("bvlc"), "nhwc");
    const seen: ImageWindows[][] = [];

    // Act
    const expected = await score(sampledEngine, crops);
    const actual = await score(windowEngine(cropper, seen), crops);
    cropper.dispose();

    // Assess: same classes in the same order; probabilities within 1e-4.
    expect(actual.map((r) => r.key)).toEqual(["tench.jpg", "square.png", "ostrich.jpg"]);
    actual.forEach((record, i) => {
      const reference = expected[i] as Extract<ResultRecord, { top5: unknown }>;
      const got = record as Extract<ResultRecord, { top5: unknown }>;
      expect(got.positions).toEqual(reference.positions);
      for (const scheme of Object.keys(reference.top5) as (keyof typeof reference.top5)[]) {
        const want = reference.top5[scheme]!;
        const have = got.top5[scheme]!;
        expect(have.map(([c]) => c)).toEqual(want.map(([c]) => c));
        have.forEach(([, p], k) => expect(Math.abs(p - want[k]![1])).toBeLessThanOrEqual(1e-4));
      }
    });
    // Batches of at most 16 crops, coinciding windows of the square image handed over once.
    const handed = seen.flat().reduce((sum, { crops: c }) => sum + c.length, 0);
    expect(Math.max(...seen.map((batch) => batch.reduce((sum, { crops: c }) => sum + c.length, 0)))).toBeLessThanOrEqual(16);
    expect(handed).toBe(crops === 144 ? 144 + 48 + 144 : 30);
  });
});

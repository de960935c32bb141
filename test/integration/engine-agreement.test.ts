import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage, type DecodedImage } from "../../model/image/decode.js";
import { NUM_CLASSES, type Engine } from "../../model/engine.js";
import { loadEngine } from "../../model/load.js";
import { meanOfRows, topK } from "../../model/predict.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");

/** A portrait photo and a grayscale one (a single-channel JPEG), the cases most likely to differ. */
const PHOTOS = ["n01518878_ostrich.JPEG", "n02096051_Airedale.JPEG"] as const;

const MODELS = [
  { name: "bvlc", file: "models/bvlc-googlenet.onnx" },
  // Untrained, but calibrated so its output depends strongly on its input: agreement still means something.
  { name: "torchvision", file: "models/torchvision-googlenet-untrained.onnx" },
] as const;

/** All 144 crops of an image through the project's own sampler, averaged as the protocol says. */
async function meanOver144(engine: Engine, image: DecodedImage): Promise<Float64Array> {
  const plan = cropPlan(image.width, image.height);
  const input = new Float32Array(plan.length * CROP_VALUES);
  sampleCrops(image, plan, { preprocess: engine.preprocess, layout: engine.inputLayout }, input);
  const probabilities = await engine.classify(input, plan.length);
  return meanOfRows(probabilities, NUM_CLASSES, plan.map((_, row) => row));
}

describe.each(MODELS)("tfjs and onnxruntime agree on 144 crops of real photos ($name)", ({ file }) => {
  let tfjs: Engine;
  let onnxruntime: Engine;
  const images = new Map<string, DecodedImage>();

  beforeAll(async () => {
    const bytes = await readFile(join(SHARED, file));
    tfjs = (await loadEngine(bytes, { source: file, engine: "tfjs" })).engine;
    onnxruntime = (await loadEngine(bytes, { source: file, engine: "onnxruntime" })).engine;
    for (const photo of PHOTOS) {
      const path = join(SHARED, "imagenet/samples", photo);
      images.set(photo, await decodeImage(await readFile(path), { source: path, applyExifOrientation: false }));
    }
  });

  afterAll(async () => {
    await tfjs?.dispose();
    await onnxruntime?.dispose();
  });

  it.each(PHOTOS)("%s: mean probabilities within 1e-4, same top-5", async (photo) => {
    // Prepare
    const image = images.get(photo) as DecodedImage;

    // Act
    const fromTfjs = await meanOver144(tfjs, image);
    const fromOnnxruntime = await meanOver144(onnxruntime, image);

    // Assess
    let largest = 0;
    for (let c = 0; c < NUM_CLASSES; c++) {
      largest = Math.max(largest, Math.abs((fromTfjs[c] as number) - (fromOnnxruntime[c] as number)));
    }
    console.log(`${file} ${photo} (${image.width}x${image.height}): max |tfjs - onnxruntime| = ${largest.toExponential(2)}`);
    expect(largest).toBeLessThanOrEqual(1e-4);
    expect(topK(fromTfjs, 5).map((entry) => entry.index)).toEqual(topK(fromOnnxruntime, 5).map((entry) => entry.index));
    // The photos were chosen to cover these cases; make sure they still do.
    if (photo.includes("ostrich")) expect(image.height).toBeGreaterThan(image.width);
  });
});

import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackendPreference } from "../../model/tfjs/backend.js";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage, type DecodedImage } from "../../model/image/decode.js";
import type { Engine } from "../../model/engine.js";
import { preprocessFor } from "../../model/preprocess.js";
import { CROP_VALUES } from "../../model/image/sampling.js";
import { createTfjsEngine } from "../../model/tfjs/engine.js";
import { takesWindows, type ImageWindows, type WindowEngine } from "../../model/window-engine.js";
import { wasmOrCpuBackend } from "../helpers/test-backend.js";
import { referenceCrop, syntheticImage } from "../helpers/protocol-reference.js";
import { maxAbsDifference, MODELS, onnxruntimeProbabilities, SAMPLES, topK } from "../helpers/real-crops.js";

const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const CLASSES = 1000;
const quiet = (): void => undefined;

/** Crops of a 144-crop plan: both mirrors, the first and last scale, all three squares. */
const SUBSET = [0, 11, 21, 58, 107, 136, 143];

describe("the tfjs engine cutting its crops on the backend (classifyWindows)", () => {
  let backend: BackendPreference;
  let bytes: Uint8Array;
  let windowEngine: Engine;
  let batch: ImageWindows[];

  beforeAll(async () => {
    backend = await wasmOrCpuBackend();
    bytes = readFileSync(BVLC);
    // maxBatch 4 splits the 11 crops into forward passes that cut across images.
    windowEngine = await createTfjsEngine(bytes, { source: BVLC, backend, log: quiet, cutOnDevice: true, maxBatch: 4 });
    const photo: DecodedImage = await decodeImage(readFileSync(`${SAMPLES}/n01440764_tench.JPEG`), {
      source: "tench",
      applyExifOrientation: false,
    });
    const subset = (image: DecodedImage, picks: readonly number[]) => {
      const plan = cropPlan(image.width, image.height);
      return { image, crops: picks.map((k) => plan[k]!) };
    };
    batch = [
      subset(photo, SUBSET),
      // Upscaled and clamped at every edge, and an extreme aspect ratio.
      subset(syntheticImage(3, 7, 2), [0, 143]),
      subset(syntheticImage(1000, 4, 5), [21, 136]),
    ];
  });

  afterAll(async () => {
    await windowEngine?.dispose();
  });

  it("gives onnxruntime's probabilities for PROTOCOL.md's crops, written pixel by pixel (within 1e-4, same top-5)", async () => {
    // Prepare: the reference crops straight from PROTOCOL.md, classified by the other engine.
    const preprocess = preprocessFor("bvlc");
    const crops = batch.flatMap(({ image, crops: windows }) => windows.map((crop) => ({ image, crop })));
    const nchw = new Float32Array(crops.length * CROP_VALUES);
    crops.forEach(({ image, crop }, k) => nchw.set(referenceCrop(image, crop, preprocess, "nchw"), k * CROP_VALUES));
    const reference = await onnxruntimeProbabilities(bytes, nchw, crops.length, true);

    // Act
    expect(takesWindows(windowEngine)).toBe(true);
    const probabilities = await (windowEngine as WindowEngine).classifyWindows(batch);

    // Assess
    expect(probabilities.length).toBe(crops.length * CLASSES);
    expect(maxAbsDifference(probabilities, reference)).toBeLessThanOrEqual(1e-4);
    crops.forEach((_, row) => expect(topK(probabilities, row, CLASSES, 5)).toEqual(topK(reference, row, CLASSES, 5)));
  });

  it("is not the default on wasm and cpu, where the host sampler is faster", async () => {
    // Act
    const engine = await createTfjsEngine(bytes, { source: BVLC, backend, log: quiet });
    await engine.dispose();

    // Assess
    expect(takesWindows(engine)).toBe(false);
  });

  it("refuses to run after dispose", async () => {
    // Prepare
    const engine = await createTfjsEngine(bytes, { source: BVLC, backend, log: quiet, cutOnDevice: true });
    await engine.dispose();

    // Act, Assess
    await expect((engine as WindowEngine).classifyWindows(batch)).rejects.toThrow(/after dispose/);
  });
});

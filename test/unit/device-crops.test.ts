import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { selectBackend } from "../../model/tfjs/backend.js";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage } from "../../model/image/decode.js";
import type { DecodedImage } from "../../model/image/decode.js";
import { DeviceCropper } from "../../model/tfjs/device-crops.js";
import { takesWindows } from "../../model/window-engine.js";
import type { InputLayout } from "../../model/engine.js";
import { preprocessFor } from "../../model/preprocess.js";
import type { Flavour } from "../../model/preprocess.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";
import { referenceCrop, syntheticImage } from "../helpers/protocol-reference.js";

const SAMPLES = fileURLToPath(new URL("../../../shared/imagenet/samples/", import.meta.url));
const quiet = () => undefined;

async function loadSample(name: string): Promise<DecodedImage> {
  return decodeImage(readFileSync(SAMPLES + name), { source: name, applyExifOrientation: false });
}

/** Every crop name, both mirrors, the first and last scale and all three squares. */
const SUBSET = [0, 11, 21, 58, 107, 136, 143];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let k = 0; k < a.length; k++) max = Math.max(max, Math.abs(a[k]! - b[k]!));
  return max;
}

/** Cuts `crops` of one image in calls of `perCall`, downloading each call's tensor. */
function cutAll(cropper: DeviceCropper, image: DecodedImage, crops: ReturnType<typeof cropPlan>, perCall: number): Float32Array {
  const out = new Float32Array(crops.length * CROP_VALUES);
  for (let start = 0; start < crops.length; start += perCall) {
    const tensor = cropper.cut([{ image, crops: crops.slice(start, start + perCall) }]);
    out.set(tensor.dataSync(), start * CROP_VALUES);
    tensor.dispose();
  }
  return out;
}

const IMAGES = [
  ["real landscape photo 500x375", "n01440764_tench.JPEG"],
  ["real portrait photo 375x500", "n01518878_ostrich.JPEG"],
  ["synthetic 5x3 (upscaled, clamped at every edge)", { width: 5, height: 3, seed: 1 }],
  ["synthetic 3x7", { width: 3, height: 7, seed: 2 }],
  ["synthetic 1x1", { width: 1, height: 1, seed: 3 }],
  ["synthetic 10000x20 panorama", { width: 10000, height: 20, seed: 4 }],
] as const;

// Both layouts and both channel orders.
const VARIANTS: [Flavour, InputLayout][] = [
  ["bvlc", "nhwc"],
  ["torchvision", "nchw"],
];

describe.each(["cpu", "wasm"] as const)("DeviceCropper on tfjs's %s backend", (backend) => {
  beforeAll(async () => {
    await selectBackend(backend, { log: quiet });
  });

  describe.each(IMAGES)("on %s", (_name, source) => {
    let image: DecodedImage;
    beforeAll(async () => {
      image = typeof source === "string" ? await loadSample(source) : syntheticImage(source.width, source.height, source.seed);
    });

    it.each(VARIANTS)("matches the per-pixel PROTOCOL reference and the host sampler within 1e-4 (%s, %s)", (flavour, layout) => {
      // Prepare
      const preprocess = preprocessFor(flavour);
      const plan = cropPlan(image.width, image.height);
      const crops = SUBSET.map((n) => plan[n]!);
      const cropper = new DeviceCropper(preprocess, layout);
      const host = new Float32Array(crops.length * CROP_VALUES);
      sampleCrops(image, crops, { preprocess, layout }, host);

      // Act: calls of 3 crops, so an upload serves several calls.
      const cut = cutAll(cropper, image, crops, 3);
      cropper.dispose();

      // Assess
      let worst = 0;
      crops.forEach((crop, k) => {
        worst = Math.max(worst, maxAbsDiff(cut.subarray(k * CROP_VALUES, (k + 1) * CROP_VALUES), referenceCrop(image, crop, preprocess, layout)));
      });
      expect(worst).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(cut, host)).toBeLessThanOrEqual(1e-4);
    });
  });

  it("cuts a batch spanning images in batch order, and keeps only the upload a next batch can use", async () => {
    // Prepare: the scorer's shape of batches, an image's windows split across two calls.
    const photo = await loadSample("n01440764_tench.JPEG");
    const small = syntheticImage(40, 30, 9);
    const preprocess = preprocessFor("bvlc");
    const photoPlan = cropPlan(photo.width, photo.height);
    const smallPlan = cropPlan(40, 30);
    const before = tf.memory().numTensors;
    const cropper = new DeviceCropper(preprocess, "nhwc");
    const constants = tf.memory().numTensors - before;

    // Act
    const first = cropper.cut([
      { image: photo, crops: photoPlan.slice(140, 144) },
      { image: small, crops: smallPlan.slice(0, 3) },
    ]);
    const firstValues = Float32Array.from(first.dataSync());
    first.dispose();
    const heldAfterFirst = tf.memory().numTensors - before - constants;
    const second = cropper.cut([{ image: small, crops: smallPlan.slice(3, 5) }]);
    const secondValues = Float32Array.from(second.dataSync());
    second.dispose();
    cropper.dispose();

    // Assess
    const host = new Float32Array(9 * CROP_VALUES);
    sampleCrops(photo, photoPlan.slice(140, 144), { preprocess, layout: "nhwc" }, host, 0);
    sampleCrops(small, smallPlan.slice(0, 5), { preprocess, layout: "nhwc" }, host, 4 * CROP_VALUES);
    expect(first.shape).toEqual([7, 224, 224, 3]);
    expect(maxAbsDiff(firstValues, host.subarray(0, 7 * CROP_VALUES))).toBeLessThanOrEqual(1e-4);
    expect(maxAbsDiff(secondValues, host.subarray(7 * CROP_VALUES))).toBeLessThanOrEqual(1e-4);
    expect(heldAfterFirst).toBe(1); // the small image's upload, still needed by the second call
    expect(tf.memory().numTensors).toBe(before);
  });

  it("refuses a batch with no crops", () => {
    // Prepare
    const cropper = new DeviceCropper(preprocessFor("bvlc"));

    // Act / Assess
    expect(() => cropper.cut([])).toThrow(/no crops to cut/);
    cropper.dispose();
  });
});

describe("takesWindows", () => {
  it("tells an engine that cuts its own crops from one that takes sampled ones", () => {
    // Prepare
    const base = { engine: "tfjs", backend: "cpu", flavour: "bvlc", inputLayout: "nhwc", preprocess: preprocessFor("bvlc") } as const;
    const sampled = { ...base, classify: async () => new Float32Array(0), dispose: async () => undefined };
    const windows = { ...sampled, classifyWindows: async () => new Float32Array(0) };

    // Act / Assess
    expect(takesWindows(sampled)).toBe(false);
    expect(takesWindows(windows)).toBe(true);
  });
});

afterAll(async () => {
  await selectBackend("cpu", { log: quiet });
});

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { beforeAll, describe, expect, it } from "vitest";

import type { Crop } from "../../model/image/crop-types.js";
import { cropPlan } from "../../model/image/crops.js";
import { decodeImage } from "../../model/image/decode.js";
import type { DecodedImage } from "../../model/image/decode.js";
import type { InputLayout } from "../../model/engine.js";
import { preprocessFor } from "../../model/preprocess.js";
import type { Flavour, Preprocess } from "../../model/preprocess.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";
import { outIndex, referenceCrop, syntheticImage } from "../helpers/protocol-reference.js";

const SAMPLES = fileURLToPath(new URL("../../../shared/imagenet/samples/", import.meta.url));
const S = 224;

async function loadSample(name: string): Promise<DecodedImage> {
  return decodeImage(readFileSync(SAMPLES + name), { source: name, applyExifOrientation: false });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let k = 0; k < a.length; k++) max = Math.max(max, Math.abs(a[k]! - b[k]!));
  return max;
}

/** Count of positions where two arrays differ bit for bit; toEqual is far too slow at this size. */
function countDifferent(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let k = 0; k < a.length; k++) if (!Object.is(a[k], b[k])) n++;
  return n;
}

function cropAt(out: Float32Array, n: number, offset = 0): Float32Array {
  return out.subarray(offset + n * CROP_VALUES, offset + (n + 1) * CROP_VALUES);
}

const VARIANTS: [Flavour, InputLayout][] = [
  ["bvlc", "nchw"],
  ["bvlc", "nhwc"],
  ["torchvision", "nchw"],
  ["torchvision", "nhwc"],
];

// Every scale, square, crop name and mirror appears in this subset.
const PHOTO_SUBSET = [0, 1, 14, 20, 21, 30, 35, 47, 50, 58, 69, 72, 81, 94, 107, 119, 121, 132, 136, 143];

describe.each([
  ["real landscape photo 500x375 (tench)", "n01440764_tench.JPEG", PHOTO_SUBSET],
  ["real portrait photo 375x500 (ostrich)", "n01518878_ostrich.JPEG", PHOTO_SUBSET],
  ["synthetic 5x3 (upscaled, clamped at every edge)", { width: 5, height: 3, seed: 1 }, null],
  ["synthetic 3x5 portrait", { width: 3, height: 5, seed: 2 }, null],
  ["synthetic 1x1", { width: 1, height: 1, seed: 3 }, null],
  ["synthetic 40x40 square (duplicate windows)", { width: 40, height: 40, seed: 4 }, null],
  ["synthetic 3x7 portrait (upscaled 85x)", { width: 3, height: 7, seed: 5 }, null],
  ["synthetic 10000x20 panorama (three squares far apart)", { width: 10000, height: 20, seed: 6 }, null],
  ["synthetic 20x10000 strip", { width: 20, height: 10000, seed: 7 }, null],
] as const)("sampleCrops on %s", (_name, source, subset) => {
  let image: DecodedImage;
  beforeAll(async () => {
    image = typeof source === "string" ? await loadSample(source) : syntheticImage(source.width, source.height, source.seed);
  });

  it.each(VARIANTS)("matches the per-pixel PROTOCOL reference (%s, %s) within 1e-4", (flavour, layout) => {
    // Prepare
    const plan = cropPlan(image.width, image.height);
    const pre = preprocessFor(flavour);
    const out = new Float32Array(plan.length * CROP_VALUES);
    // Tiny images get all 144 once; the subset already covers every kind of crop.
    const everything = subset === null && flavour === "bvlc" && layout === "nchw";
    const checked = everything ? plan.map((_, n) => n) : PHOTO_SUBSET;

    // Act
    sampleCrops(image, plan, { preprocess: pre, layout }, out);

    // Assess
    let worst = 0;
    for (const n of checked) {
      worst = Math.max(worst, maxAbsDiff(cropAt(out, n), referenceCrop(image, plan[n]!, pre, layout)));
    }
    expect(worst).toBeLessThanOrEqual(1e-4);
  });
});

/** Half-pixel bilinear resize of the whole image to rw x rh (clamped), in float64, RGB. */
function referenceResize(image: DecodedImage, rw: number, rh: number): Float64Array {
  const { width: W, height: H, data } = image;
  const out = new Float64Array(rw * rh * 3);
  for (let r = 0; r < rh; r++) {
    const oy = Math.min(Math.max(((r + 0.5) * H) / rh - 0.5, 0), H - 1);
    const y0 = Math.floor(oy);
    const y1 = Math.min(y0 + 1, H - 1);
    const fy = oy - y0;
    for (let c = 0; c < rw; c++) {
      const ox = Math.min(Math.max(((c + 0.5) * W) / rw - 0.5, 0), W - 1);
      const x0 = Math.floor(ox);
      const x1 = Math.min(x0 + 1, W - 1);
      const fx = ox - x0;
      for (let ch = 0; ch < 3; ch++) {
        const top = data[(y0 * W + x0) * 3 + ch]! * (1 - fx) + data[(y0 * W + x1) * 3 + ch]! * fx;
        const bottom = data[(y1 * W + x0) * 3 + ch]! * (1 - fx) + data[(y1 * W + x1) * 3 + ch]! * fx;
        out[(r * rw + c) * 3 + ch] = top * (1 - fy) + bottom * fy;
      }
    }
  }
  return out;
}

describe.each([
  ["real photo 500x375", "n01440764_tench.JPEG"],
  ["synthetic 5x3", { width: 5, height: 3, seed: 7 }],
] as const)("the 224 crops of %s", (_name, source) => {
  it.each(VARIANTS)("equal a half-pixel bilinear resize then an integer crop (%s, %s)", async (flavour, layout) => {
    // Prepare
    const image = typeof source === "string" ? await loadSample(source) : syntheticImage(source.width, source.height, source.seed);
    const plan = cropPlan(image.width, image.height);
    const pre = preprocessFor(flavour);
    const crops = plan.filter((c) => c.size === 224);
    const out = new Float32Array(crops.length * CROP_VALUES);
    const resized = new Map<number, Float64Array>();

    // Act
    sampleCrops(image, crops, { preprocess: pre, layout }, out);

    // Assess
    expect(crops).toHaveLength(120);
    let worst = 0;
    crops.forEach((crop, n) => {
      const [rw, rh] = crop.resized;
      let grid = resized.get(crop.scale);
      if (grid === undefined) {
        grid = referenceResize(image, rw, rh);
        resized.set(crop.scale, grid);
      }
      const expected = new Float32Array(CROP_VALUES);
      for (let i = 0; i < S; i++) {
        for (let j = 0; j < S; j++) {
          const col = crop.x + (crop.mirror ? S - 1 - j : j);
          for (let c = 0; c < 3; c++) {
            const ch = pre.channelOrder === "rgb" ? c : 2 - c;
            expected[outIndex(layout, i, j, c)] = grid[((crop.y + i) * rw + col) * 3 + ch]! * pre.scale[c]! + pre.offset[c]!;
          }
        }
      }
      worst = Math.max(worst, maxAbsDiff(cropAt(out, n), expected));
    });
    expect(worst).toBeLessThanOrEqual(1e-4);
  });
});

/**
 * Samples `crops` into a fresh buffer in calls of `perCall` crops, as a batcher with that room
 * would. The image is a fresh object each time, so regions the sampler kept from an earlier
 * call for the same object (it keeps the last image's) play no part.
 */
function sampleInCalls(image: DecodedImage, crops: readonly Crop[], options: { preprocess: Preprocess; layout: InputLayout }, perCall: number): Float32Array {
  const fresh = { ...image };
  const out = new Float32Array(crops.length * CROP_VALUES);
  for (let start = 0; start < crops.length; start += perCall) {
    sampleCrops(fresh, crops.slice(start, start + perCall), options, out, start * CROP_VALUES);
  }
  return out;
}

describe.each([
  ["real landscape photo 500x375", "n01440764_tench.JPEG"],
  ["real portrait photo 375x500", "n01518878_ostrich.JPEG"],
  ["synthetic 10000x20 panorama", { width: 10000, height: 20, seed: 8 }],
  ["synthetic 257x256 (squares one pixel apart)", { width: 257, height: 256, seed: 9 }],
  ["synthetic 40x40 square", { width: 40, height: 40, seed: 10 }],
] as const)("the shared-region path on %s", (_name, source) => {
  // Both layouts and both channel orders; the copy and flip code differs by layout only.
  it.each<[Flavour, InputLayout]>([
    ["bvlc", "nchw"],
    ["torchvision", "nhwc"],
  ])("writes the same values, bit for bit, as each window sampled alone, in one call or in calls of 16 (%s, %s)", async (flavour, layout) => {
    // Prepare: one call of all 144 cuts 224 windows out of shared resized regions; a call of one
    // crop always interpolates that window alone; calls of 16 are what the scorer makes.
    const image = typeof source === "string" ? await loadSample(source) : syntheticImage(source.width, source.height, source.seed);
    const plan = cropPlan(image.width, image.height);
    const options = { preprocess: preprocessFor(flavour), layout };

    // Act
    const together = sampleInCalls(image, plan, options, plan.length);
    const alone = sampleInCalls(image, plan, options, 1);
    const batched = sampleInCalls(image, plan, options, 16);

    // Assess
    expect(countDifferent(together, alone)).toBe(0);
    expect(countDifferent(batched, alone)).toBe(0);
  });
});

describe("sampleCrops batching and subsets", () => {
  let photo: DecodedImage;
  let plan: Crop[];
  let full: Float32Array;
  const options = { preprocess: preprocessFor("bvlc"), layout: "nchw" as const };
  beforeAll(async () => {
    photo = await loadSample("n01440764_tench.JPEG");
    plan = cropPlan(photo.width, photo.height);
    full = new Float32Array(plan.length * CROP_VALUES);
    sampleCrops(photo, plan, options, full);
  });

  it("writes any subset, in any order, exactly as the full plan does", () => {
    // Prepare: only mirrored crops (no unmirrored partner), reversed, plus a repeat.
    const picks = [143, 21, 1, 21, 88];

    // Act
    const out = new Float32Array(picks.length * CROP_VALUES);
    sampleCrops(photo, picks.map((n) => plan[n]!), options, out);

    // Assess
    picks.forEach((n, k) => expect(countDifferent(cropAt(out, k), cropAt(full, n))).toBe(0));
  });

  it("packs two images into one batch at an offset without touching anything else", () => {
    // Prepare
    const other = syntheticImage(7, 4, 11);
    const otherCrops = cropPlan(7, 4).slice(12, 22);
    const mine = [plan[20]!, plan[21]!];
    const offset = mine.length * CROP_VALUES + 5;
    const out = new Float32Array(offset + otherCrops.length * CROP_VALUES + 5).fill(Number.NaN);
    const alone = new Float32Array(otherCrops.length * CROP_VALUES);
    sampleCrops(other, otherCrops, options, alone);

    // Act
    sampleCrops(photo, mine, options, out, 0);
    sampleCrops(other, otherCrops, options, out, offset);

    // Assess
    expect(countDifferent(cropAt(out, 0), cropAt(full, 20))).toBe(0);
    expect(countDifferent(cropAt(out, 1), cropAt(full, 21))).toBe(0);
    expect(out.subarray(2 * CROP_VALUES, offset).every(Number.isNaN)).toBe(true);
    expect(countDifferent(out.subarray(offset, offset + alone.length), alone)).toBe(0);
    expect(out.subarray(offset + alone.length).every(Number.isNaN)).toBe(true);
  });

  it("gives a uniform image its preprocessed colour everywhere, exactly", () => {
    // Prepare: clamping and weights cannot change a constant, so values are exact.
    const data = new Uint8Array(9 * 6 * 3);
    for (let p = 0; p < 9 * 6; p++) data.set([200, 100, 50], p * 3);
    const uniform = { width: 9, height: 6, data };
    const crops = cropPlan(9, 6);
    const out = new Float32Array(crops.length * CROP_VALUES);

    // Act
    sampleCrops(uniform, crops, { preprocess: preprocessFor("bvlc"), layout: "nhwc" }, out);

    // Assess: BGR minus means 104, 117, 123.
    const expected = [50 - 104, 100 - 117, 200 - 123];
    let wrong = 0;
    for (let k = 0; k < out.length; k++) if (out[k] !== expected[k % 3]) wrong++;
    expect(wrong).toBe(0);
  });

  it("keeps no region of one image for another of the same size, nor across layouts", () => {
    // Prepare: two images of one size interleaved call by call, and two option sets for one
    // image, against each sampled fresh and whole.
    const first = syntheticImage(120, 90, 21);
    const second = syntheticImage(120, 90, 22);
    const crops = cropPlan(120, 90);
    const nhwc = { preprocess: preprocessFor("torchvision"), layout: "nhwc" as const };
    const expected = (image: DecodedImage, opts: typeof options | typeof nhwc) => sampleInCalls(image, crops, opts, crops.length);
    const outs = [first, second].map(() => new Float32Array(crops.length * CROP_VALUES));
    const other = new Float32Array(crops.length * CROP_VALUES);

    // Act
    for (let start = 0; start < crops.length; start += 16) {
      const slice = crops.slice(start, start + 16);
      sampleCrops(first, slice, options, outs[0]!, start * CROP_VALUES);
      sampleCrops(second, slice, options, outs[1]!, start * CROP_VALUES);
      sampleCrops(second, slice, nhwc, other, start * CROP_VALUES);
    }

    // Assess
    expect(countDifferent(outs[0]!, expected(first, options))).toBe(0);
    expect(countDifferent(outs[1]!, expected(second, options))).toBe(0);
    expect(countDifferent(other, expected(second, nhwc))).toBe(0);
  });

  it("refuses a buffer too small for the crops at that offset", () => {
    // Prepare
    const out = new Float32Array(2 * CROP_VALUES);

    // Act
    const act = () => sampleCrops(photo, [plan[0]!, plan[1]!], options, out, 1);

    // Assess
    expect(act).toThrow(RangeError);
    expect(act).toThrow(/2 crops from offset 1 need 301057 values, buffer holds 301056/);
  });

  it("refuses a crop planned for an image of another shape", () => {
    // Prepare
    const foreign = cropPlan(375, 500)[0]!;

    // Act
    const act = () => sampleCrops(photo, [foreign], options, new Float32Array(CROP_VALUES));

    // Assess
    expect(act).toThrow(/planned for resized 256x341, but a 500x375 image resizes to 341x256/);
  });
});


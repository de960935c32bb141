import { CROP_SIDE } from "./crop-types.js";
import type { Crop } from "./crop-types.js";
import { resizedSize } from "./crops.js";
import type { DecodedImage } from "./decode.js";
import type { InputLayout } from "./engine.js";
import type { Preprocess } from "./preprocess.js";

/** Float values one crop occupies in an engine batch: 224 x 224 x 3. */
export const CROP_VALUES = CROP_SIDE * CROP_SIDE * 3;

const PLANE = CROP_SIDE * CROP_SIDE;

/** How sampled values are laid out and mapped for the engine that will read them. */
export interface SampleOptions {
  /** Channel order and per-channel affine of the model's flavour (no default: it must match the model). */
  readonly preprocess: Preprocess;
  /** Layout of the engine's input batch (no default: it must match the engine). */
  readonly layout: InputLayout;
}

/**
 * Index and weight tables along one axis of one crop: output position k reads original
 * pixels a[k] and b[k] (already multiplied by the axis stride) and blends them with w[k].
 */
interface AxisTable {
  readonly a: Int32Array;
  readonly b: Int32Array;
  readonly w: Float64Array;
}

function newAxisTable(): AxisTable {
  return {
    a: new Int32Array(CROP_SIDE),
    b: new Int32Array(CROP_SIDE),
    w: new Float64Array(CROP_SIDE),
  };
}

/**
 * Fills `table` with ../shared/PROTOCOL.md "Sampling" along one axis: resized position
 * r = start + (k + 0.5) * size / 224 - 0.5, original o = (r + 0.5) * orig / resized - 0.5,
 * clamped to [0, orig - 1] because upscaled crops reach half a pixel past the edge. Tables
 * are always unmirrored: mirroring only changes where a value is written.
 */
function fillAxis(
  table: AxisTable,
  start: number,
  size: number,
  resized: number,
  orig: number,
  stride: number,
): void {
  const last = orig - 1;
  for (let k = 0; k < CROP_SIDE; k++) {
    const r = start + ((k + 0.5) * size) / CROP_SIDE - 0.5;
    let o = ((r + 0.5) * orig) / resized - 0.5;
    if (o < 0) o = 0;
    else if (o > last) o = last;
    const a = Math.floor(o);
    table.a[k] = a * stride;
    table.b[k] = (a < last ? a + 1 : last) * stride;
    table.w[k] = o - a;
  }
}

function windowKey(crop: Crop): string {
  return `${crop.resized[0]}x${crop.resized[1]}:${crop.x},${crop.y},${crop.size}`;
}

/**
 * Samples `crops` (any subset of `cropPlan(image.width, image.height)`) from the decoded image
 * and writes `crops.length * CROP_VALUES` engine-ready values into `out` from element `offset`
 * on, crop after crop, each in `options.layout` (HWC or CHW) with `options.preprocess` applied.
 * Callers pack several images into one batch by advancing `offset`; nothing is allocated per
 * pixel and no tensor is created.
 *
 * Bilinear from the original pixels, half-pixel centres, clamped at the edges, no
 * antialiasing (../shared/PROTOCOL.md, "Sampling"); coordinates in float64, each value stored
 * as float32(blend * scale + offset).
 *
 * @param offset element index in `out` where the first crop starts; default 0.
 * @throws RangeError when `out` is too small, the image buffer does not match its size, or a
 *   crop was planned for an image of another shape (all caller bugs, not bad input).
 */
export function sampleCrops(
  image: DecodedImage,
  crops: readonly Crop[],
  options: SampleOptions,
  out: Float32Array,
  offset = 0,
): void {
  const { width: W, height: H, data } = image;
  if (!Number.isInteger(W) || !Number.isInteger(H) || W < 1 || H < 1 || data.length !== W * H * 3) {
    throw new RangeError(
      `sampleCrops: image data holds ${data.length} bytes, expected ${W} x ${H} x 3 = ${W * H * 3}`,
    );
  }
  const needed = offset + crops.length * CROP_VALUES;
  if (!Number.isInteger(offset) || offset < 0 || needed > out.length) {
    throw new RangeError(
      `sampleCrops: ${crops.length} crops from offset ${offset} need ${needed} values, buffer holds ${out.length}`,
    );
  }
  for (const crop of crops) {
    const [rw, rh] = resizedSize(W, H, crop.scale);
    if (crop.resized[0] !== rw || crop.resized[1] !== rh) {
      throw new RangeError(
        `sampleCrops: crop ${crop.scale}/${crop.square}/${crop.crop} was planned for resized ` +
          `${crop.resized[0]}x${crop.resized[1]}, but a ${W}x${H} image resizes to ${rw}x${rh}`,
      );
    }
  }

  const { preprocess, layout } = options;
  const pixelStride = layout === "nhwc" ? 3 : 1;
  const channelStride = layout === "nhwc" ? 1 : PLANE;
  // Output slot and affine for each SOURCE channel (R, G, B), so the loop reads each
  // neighbour once and scatters to wherever the flavour wants that colour.
  const bgr = preprocess.channelOrder === "bgr";
  const slotR = (bgr ? 2 : 0) * channelStride;
  const slotG = channelStride;
  const slotB = (bgr ? 0 : 2) * channelStride;
  const [scaleR, offR] = bgr ? [preprocess.scale[2], preprocess.offset[2]] : [preprocess.scale[0], preprocess.offset[0]];
  const [scaleG, offG] = [preprocess.scale[1], preprocess.offset[1]];
  const [scaleB, offB] = bgr ? [preprocess.scale[0], preprocess.offset[0]] : [preprocess.scale[2], preprocess.offset[2]];

  const rows = newAxisTable();
  const cols = newAxisTable();
  const rowStride = W * 3;
  const layoutInfo: Layout = { pixelStride, slotR, slotG, slotB, scaleR, offR, scaleG, offG, scaleB, offB };

  // A window and its mirror read the same neighbours (column j of one is column 223 - j of
  // the other), so both are written from one interpolation; exact repeats of a window (the
  // three squares of a square image) are copied afterwards.
  const groups = new Map<string, { crop: Crop; plain: number[]; mirrored: number[] }>();
  crops.forEach((crop, n) => {
    const key = windowKey(crop);
    let group = groups.get(key);
    if (group === undefined) {
      group = { crop, plain: [], mirrored: [] };
      groups.set(key, group);
    }
    (crop.mirror ? group.mirrored : group.plain).push(offset + n * CROP_VALUES);
  });
  let scratch: Float32Array | undefined;
  for (const { crop, plain, mirrored } of groups.values()) {
    fillAxis(rows, crop.y, crop.size, crop.resized[1], H, rowStride);
    fillAxis(cols, crop.x, crop.size, crop.resized[0], W, 3);
    // Without a partner the other half of the pair goes to a scratch crop, which keeps a
    // single branch-free inner loop.
    if (plain.length === 0 || mirrored.length === 0) scratch ??= new Float32Array(CROP_VALUES);
    const plainOut = plain.length > 0 ? out : scratch!;
    const mirroredOut = mirrored.length > 0 ? out : scratch!;
    interpolate(data, rows, cols, layoutInfo, plainOut, plain[0] ?? 0, mirroredOut, mirrored[0] ?? 0);
    for (const targets of [plain, mirrored]) {
      for (const base of targets.slice(1)) out.copyWithin(base, targets[0]!, targets[0]! + CROP_VALUES);
    }
  }
}

/** Where each source colour goes in an output pixel, and its affine. */
interface Layout {
  readonly pixelStride: number;
  readonly slotR: number;
  readonly slotG: number;
  readonly slotB: number;
  readonly scaleR: number;
  readonly offR: number;
  readonly scaleG: number;
  readonly offG: number;
  readonly scaleB: number;
  readonly offB: number;
}

/**
 * The one tight loop: bilinear blend of the four neighbours per output pixel and channel,
 * written unmirrored at `plainBase` of `plainOut` and left-right flipped at `mirroredBase` of
 * `mirroredOut`.
 */
function interpolate(
  data: Uint8Array,
  rows: AxisTable,
  cols: AxisTable,
  layout: Layout,
  plainOut: Float32Array,
  plainBase: number,
  mirroredOut: Float32Array,
  mirroredBase: number,
): void {
  const { pixelStride, slotR, slotG, slotB, scaleR, offR, scaleG, offG, scaleB, offB } = layout;
  const ra = rows.a;
  const rb = rows.b;
  const rwt = rows.w;
  const ca = cols.a;
  const cb = cols.b;
  const cwt = cols.w;
  const rowValues = CROP_SIDE * pixelStride;
  for (let i = 0; i < CROP_SIDE; i++) {
    const top = ra[i]!;
    const bottom = rb[i]!;
    const wy = rwt[i]!;
    let o = plainBase + i * rowValues;
    let m = mirroredBase + i * rowValues + (CROP_SIDE - 1) * pixelStride;
    for (let j = 0; j < CROP_SIDE; j++, o += pixelStride, m -= pixelStride) {
      const left = ca[j]!;
      const right = cb[j]!;
      const wx = cwt[j]!;
      const p00 = top + left;
      const p01 = top + right;
      const p10 = bottom + left;
      const p11 = bottom + right;

      let u = data[p00]!;
      let v = data[p10]!;
      u += (data[p01]! - u) * wx;
      v += (data[p11]! - v) * wx;
      let value = (u + (v - u) * wy) * scaleR + offR;
      plainOut[o + slotR] = value;
      mirroredOut[m + slotR] = value;

      u = data[p00 + 1]!;
      v = data[p10 + 1]!;
      u += (data[p01 + 1]! - u) * wx;
      v += (data[p11 + 1]! - v) * wx;
      value = (u + (v - u) * wy) * scaleG + offG;
      plainOut[o + slotG] = value;
      mirroredOut[m + slotG] = value;

      u = data[p00 + 2]!;
      v = data[p10 + 2]!;
      u += (data[p01 + 2]! - u) * wx;
      v += (data[p11 + 2]! - v) * wx;
      value = (u + (v - u) * wy) * scaleB + offB;
      plainOut[o + slotB] = value;
      mirroredOut[m + slotB] = value;
    }
  }
}

/**
 * Groups crops whose sampling windows coincide exactly (same resized size, x, y, size and
 * mirror; e.g. the three squares of a square image), so a scorer classifies each window once.
 * `unique` keeps first occurrences in input order; `indexOf[k]` is the position in `unique`
 * of `crops[k]`'s window.
 */
export function uniqueCropWindows(crops: readonly Crop[]): { unique: Crop[]; indexOf: number[] } {
  const unique: Crop[] = [];
  const seen = new Map<string, number>();
  const indexOf = crops.map((crop) => {
    const key = `${windowKey(crop)}:${crop.mirror ? "m" : "n"}`;
    let index = seen.get(key);
    if (index === undefined) {
      index = unique.length;
      seen.set(key, index);
      unique.push(crop);
    }
    return index;
  });
  return { unique, indexOf };
}

import { CROP_SIDE } from "./crop-types.js";
import type { Crop } from "./crop-types.js";
import { cropPlan, resizedSize } from "./crops.js";
import type { DecodedImage } from "./decode.js";
import type { InputLayout } from "../engine.js";
import type { Preprocess } from "../preprocess.js";

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
 * Index and weight tables along one axis: output position k reads original pixels a[k] and
 * b[k] (already multiplied by the axis stride) and blends them with w[k].
 */
interface AxisTable {
  readonly a: Int32Array;
  readonly b: Int32Array;
  readonly w: Float64Array;
  /** Positions filled (the tables may be longer). */
  length: number;
}

function newAxisTable(capacity: number): AxisTable {
  return { a: new Int32Array(capacity), b: new Int32Array(capacity), w: new Float64Array(capacity), length: 0 };
}

/** Grows `table` to hold `length` positions; its old contents are not kept. */
function sized(table: AxisTable, length: number): AxisTable {
  const grown = table.a.length >= length ? table : newAxisTable(Math.max(length, 2 * table.a.length));
  grown.length = length;
  return grown;
}

/**
 * Fills `table` with ../shared/PROTOCOL.md "Sampling" along one axis: for output position k,
 * resized position r(k), original o = (r + 0.5) * orig / resized - 0.5, clamped to
 * [0, orig - 1] because upscaled crops reach half a pixel past the edge.
 *
 * A crop window (start, size) has r = start + (k + 0.5) * size / 224 - 0.5; a span of whole
 * resized pixels (`size` undefined) has r = start + k. For a 224 window the two are the same
 * double (every step is exact for these small integers and halves), which is what lets
 * `sampleCrops` cut 224 crops out of one resized region and still write the values the
 * per-window path writes, bit for bit. Tables are always unmirrored: mirroring only changes
 * where a value is written.
 */
function fillAxis(
  table: AxisTable,
  start: number,
  size: number | undefined,
  resized: number,
  orig: number,
  stride: number,
): void {
  const last = orig - 1;
  const { a: as, b: bs, w: ws, length } = table;
  for (let k = 0; k < length; k++) {
    const r = size === undefined ? start + k : start + ((k + 0.5) * size) / CROP_SIDE - 0.5;
    let o = ((r + 0.5) * orig) / resized - 0.5;
    if (o < 0) o = 0;
    else if (o > last) o = last;
    const a = Math.floor(o);
    as[k] = a * stride;
    bs[k] = (a < last ? a + 1 : last) * stride;
    ws[k] = o - a;
  }
}

/**
 * Original-pixel indices and weights along one axis of one crop, unmirrored: output position k
 * (0..223) reads pixels a[k] and b[k] (plain indices along that axis) and blends them with
 * w[k] (../shared/PROTOCOL.md "Sampling", clamped at the edges). The same tables the host
 * sampler uses, for cutting crops elsewhere (model/tfjs/device-crops.ts).
 */
export function cropAxis(crop: Crop, axis: "x" | "y", original: number): { a: Int32Array; b: Int32Array; w: Float64Array } {
  const table = sized(newAxisTable(CROP_SIDE), CROP_SIDE);
  const [start, resized] = axis === "x" ? [crop.x, crop.resized[0]] : [crop.y, crop.resized[1]];
  fillAxis(table, start, crop.size, resized, original, 1);
  return { a: table.a, b: table.b, w: table.w };
}

function windowKey(crop: Crop): string {
  return `${crop.resized[0]}x${crop.resized[1]}:${crop.x},${crop.y},${crop.size}`;
}

/** One sampling window of a call and the output offsets of its unmirrored and mirrored copies. */
interface WindowGroup {
  readonly crop: Crop;
  readonly plain: number[];
  readonly mirrored: number[];
}

/** Where each source colour goes in an output pixel, and its affine. */
interface Layout {
  readonly nhwc: boolean;
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

/** Where interpolated values go: `rowStride` values between rows, `planeStride` between channels (NCHW). */
interface Target {
  readonly out: Float32Array;
  readonly base: number;
  readonly rowStride: number;
  readonly planeStride: number;
}

function layoutOf({ preprocess, layout }: SampleOptions): Layout {
  // Output slot and affine for each SOURCE channel (R, G, B), so the loop reads each
  // neighbour once and scatters to wherever the flavour wants that colour.
  const bgr = preprocess.channelOrder === "bgr";
  const [r, g, b] = bgr ? ([2, 1, 0] as const) : ([0, 1, 2] as const);
  return {
    nhwc: layout === "nhwc",
    slotR: r,
    slotG: g,
    slotB: b,
    scaleR: preprocess.scale[r],
    offR: preprocess.offset[r],
    scaleG: preprocess.scale[g],
    offG: preprocess.offset[g],
    scaleB: preprocess.scale[b],
    offB: preprocess.offset[b],
  };
}

/**
 * Module-level scratch, reused across calls so a long run allocates nothing per batch: the
 * axis tables and a crop for the unused half of a window's mirror pair.
 */
const scratch = {
  rows: newAxisTable(CROP_SIDE),
  cols: newAxisTable(CROP_SIDE),
  crop: new Float32Array(0),
};

function scratchArray(name: "crop", length: number): Float32Array {
  if (scratch[name].length < length) scratch[name] = new Float32Array(length);
  return scratch[name];
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
 * How it is fast and still exact: the 224 windows of one scale are integer crops of the same
 * half-pixel resize (PROTOCOL.md says so), so overlapping ones are cut from one resized region,
 * interpolated once (separably: each original row blended horizontally once), with row copies,
 * a mirrored window from the region's flip. The regions of the image sampled last are kept
 * (the image itself only weakly), so the calls a batched run makes for one image interpolate
 * each scale once; an image's pixels must therefore not change between calls. `full` windows,
 * and windows a region would not save work for, are interpolated alone, a window and its
 * mirror in one pass. Every path computes each value with the same float64 operations in the
 * same order, so the values do not depend on the path or on how the crops were split into
 * calls.
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
  checkArguments(image, crops, out, offset);
  const layout = layoutOf(options);
  // A window and its mirror read the same neighbours, so both are written from one
  // interpolation; exact repeats of a window (the three squares of a square image) are copied.
  const groups = new Map<string, WindowGroup>();
  crops.forEach((crop, n) => {
    const key = windowKey(crop);
    let group = groups.get(key);
    if (group === undefined) {
      group = { crop, plain: [], mirrored: [] };
      groups.set(key, group);
    }
    (crop.mirror ? group.mirrored : group.plain).push(offset + n * CROP_VALUES);
  });
  const alone: WindowGroup[] = [];
  const byScale = new Map<number, WindowGroup[]>();
  for (const group of groups.values()) {
    if (group.crop.size !== CROP_SIDE) alone.push(group);
    else byScale.set(group.crop.scale, [...(byScale.get(group.crop.scale) ?? []), group]);
  }
  const cache = regionsOf(image, options);
  for (const [scale, windows] of byScale) {
    const placed = new Set<WindowGroup>();
    for (const cluster of cache.clustersOf(scale)) {
      const inside = windows.filter(({ crop }) => contains(cluster.box, crop));
      if (inside.length === 0) continue;
      for (const window of inside) placed.add(window);
      // A region pays off once it serves two windows: later calls for this image reuse it.
      const region = cache.regions.get(cluster) ?? (inside.length >= 2 && cluster.saves ? makeRegion(image, cluster, layout, cache) : undefined);
      if (region) cutWindows(region, inside, layout, out);
      else alone.push(...inside);
    }
    alone.push(...windows.filter((window) => !placed.has(window)));
  }
  for (const group of alone) sampleWindow(image, group, layout, out);
  for (const { plain, mirrored } of groups.values()) {
    for (const targets of [plain, mirrored]) {
      for (const base of targets.slice(1)) out.copyWithin(base, targets[0]!, targets[0]! + CROP_VALUES);
    }
  }
}

function checkArguments(image: DecodedImage, crops: readonly Crop[], out: Float32Array, offset: number): void {
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
}

interface Box {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

function contains(box: Box, crop: Crop): boolean {
  return crop.x >= box.x && crop.y >= box.y && crop.x + CROP_SIDE <= box.x + box.width && crop.y + CROP_SIDE <= box.y + box.height;
}

function boundingBox(crops: readonly Crop[]): Box {
  const xs = crops.map((crop) => crop.x);
  const ys = crops.map((crop) => crop.y);
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  return { x, y, width: Math.max(...xs) + CROP_SIDE - x, height: Math.max(...ys) + CROP_SIDE - y };
}

/**
 * 224 windows of one scale grouped so that windows that overlap (directly or through others)
 * share a group: the squares of a photo overlap and give one group, while the three squares of
 * a 10000x20 panorama lie far apart and give three.
 */
function overlapping(crops: readonly Crop[]): Crop[][] {
  const clusters: Crop[][] = [];
  for (const crop of crops) {
    const joined = clusters.filter((cluster) => cluster.some((c) => Math.abs(c.x - crop.x) < CROP_SIDE && Math.abs(c.y - crop.y) < CROP_SIDE));
    for (const cluster of joined) clusters.splice(clusters.indexOf(cluster), 1);
    clusters.push([crop, ...joined.flat()]);
  }
  return clusters;
}

/** Overlapping 224 windows of the crop plan at one scale, and whether one region for them costs less than sampling each. */
interface Cluster {
  readonly resized: readonly [number, number];
  readonly box: Box;
  readonly saves: boolean;
}

/** A cluster's resized region, interpolated once, and its left-right flip once a mirrored window needs it. */
interface Region {
  readonly cluster: Cluster;
  readonly values: Float32Array;
  flipped: Float32Array | undefined;
}

/**
 * The regions of the image sampled last: the scorer samples an image in calls of a batch's
 * room (16 crops), so each scale's region is interpolated once per image instead of once per
 * call. The image is held weakly; its buffers go back to `spare` when another image comes.
 */
interface RegionCache {
  image: WeakRef<DecodedImage> | undefined;
  options: string;
  readonly clusters: Map<number, Cluster[]>;
  readonly regions: Map<Cluster, Region>;
  readonly spare: Float32Array[];
  clustersOf(scale: number): Cluster[];
}

const cache: RegionCache = {
  image: undefined,
  options: "",
  clusters: new Map(),
  regions: new Map(),
  spare: [],
  clustersOf(scale: number): Cluster[] {
    return this.clusters.get(scale) ?? [];
  },
};

function regionsOf(image: DecodedImage, options: SampleOptions): RegionCache {
  const key = JSON.stringify([options.layout, options.preprocess]);
  if (cache.image?.deref() === image && cache.options === key) return cache;
  for (const region of cache.regions.values()) {
    cache.spare.push(region.values);
    if (region.flipped) cache.spare.push(region.flipped);
  }
  // Keep the largest few: enough for the next image of any shape to need no new buffer often,
  // and a bound on what a long run holds.
  cache.spare.sort((a, b) => b.length - a.length).splice(MAX_SPARES);
  cache.regions.clear();
  cache.clusters.clear();
  cache.image = new WeakRef(image);
  cache.options = key;
  const windows = new Map<string, Crop>();
  for (const crop of cropPlan(image.width, image.height)) {
    if (crop.size === CROP_SIDE && !crop.mirror) windows.set(windowKey(crop), crop);
  }
  for (const scale of new Set([...windows.values()].map((crop) => crop.scale))) {
    const crops = [...windows.values()].filter((crop) => crop.scale === scale);
    cache.clusters.set(
      scale,
      overlapping(crops).map((cluster) => {
        const box = boundingBox(cluster);
        return { resized: cluster[0]!.resized, box, saves: box.width * box.height < cluster.length * PLANE };
      }),
    );
  }
  return cache;
}

/** Spare region buffers kept between images: one image's regions and flips (4 scales). */
const MAX_SPARES = 8;

/**
 * A buffer of at least `length` values: the smallest spare that fits (so a run of photos of
 * one shape reuses the same buffers), or a new one.
 */
function buffer(length: number): Float32Array {
  let best = -1;
  cache.spare.forEach((spare, at) => {
    if (spare.length >= length && (best < 0 || spare.length < cache.spare[best]!.length)) best = at;
  });
  return best >= 0 ? (cache.spare.splice(best, 1)[0] as Float32Array) : new Float32Array(length);
}

/** One window (and its mirror) interpolated on its own. */
function sampleWindow(image: DecodedImage, group: WindowGroup, layout: Layout, out: Float32Array): void {
  const { crop, plain, mirrored } = group;
  const rows = (scratch.rows = sized(scratch.rows, CROP_SIDE));
  const cols = (scratch.cols = sized(scratch.cols, CROP_SIDE));
  fillAxis(rows, crop.y, crop.size, crop.resized[1], image.height, image.width * 3);
  fillAxis(cols, crop.x, crop.size, crop.resized[0], image.width, 3);
  const rowStride = layout.nhwc ? CROP_SIDE * 3 : CROP_SIDE;
  const planeStride = layout.nhwc ? 1 : PLANE;
  // Without a partner the other half of the pair goes to a scratch crop, which keeps a
  // single branch-free inner loop.
  const spare: Target = { out: plain.length === 0 || mirrored.length === 0 ? scratchArray("crop", CROP_VALUES) : out, base: 0, rowStride, planeStride };
  const plainTarget = plain.length > 0 ? { out, base: plain[0]!, rowStride, planeStride } : spare;
  const mirroredTarget = mirrored.length > 0 ? { out, base: mirrored[0]!, rowStride, planeStride } : spare;
  interpolate(image.data, rows, cols, layout, plainTarget, mirroredTarget);
}

/**
 * The resized image inside a cluster's box, interpolated once in the output layout (affine
 * applied) and kept in the cache for the image's later calls.
 */
function makeRegion(image: DecodedImage, cluster: Cluster, layout: Layout, regions: RegionCache): Region {
  const [rw, rh] = cluster.resized;
  const { box } = cluster;
  const rows = (scratch.rows = sized(scratch.rows, box.height));
  const cols = (scratch.cols = sized(scratch.cols, box.width));
  fillAxis(rows, box.y, undefined, rh, image.height, image.width * 3);
  fillAxis(cols, box.x, undefined, rw, image.width, 3);
  const values = buffer(box.width * box.height * 3);
  const rowStride = layout.nhwc ? box.width * 3 : box.width;
  const planeStride = layout.nhwc ? 1 : box.width * box.height;
  interpolate(image.data, rows, cols, layout, { out: values, base: 0, rowStride, planeStride }, undefined);
  const region: Region = { cluster, values, flipped: undefined };
  regions.regions.set(cluster, region);
  return region;
}

/** Windows of a region copied out row by row, a mirrored one from the region's flip. */
function cutWindows(region: Region, windows: readonly WindowGroup[], layout: Layout, out: Float32Array): void {
  const { width, height } = region.cluster.box;
  if (region.flipped === undefined && windows.some((w) => w.mirrored.length > 0)) {
    region.flipped = flip(region.values, buffer(width * height * 3), width, height, layout.nhwc);
  }
  for (const { crop, plain, mirrored } of windows) {
    const dy = crop.y - region.cluster.box.y;
    const dx = crop.x - region.cluster.box.x;
    if (plain.length > 0) copyWindow(region.values, width, height, dx, dy, layout.nhwc, out, plain[0]!);
    if (mirrored.length > 0) copyWindow(region.flipped!, width, height, width - CROP_SIDE - dx, dy, layout.nhwc, out, mirrored[0]!);
  }
}

/** The region mirrored left-right, into `flipped`. */
function flip(region: Float32Array, flipped: Float32Array, width: number, height: number, nhwc: boolean): Float32Array {
  if (nhwc) {
    const rowValues = width * 3;
    for (let r = 0; r < height; r++) {
      let from = r * rowValues + rowValues - 3;
      let to = r * rowValues;
      for (let c = 0; c < width; c++, from -= 3, to += 3) {
        flipped[to] = region[from]!;
        flipped[to + 1] = region[from + 1]!;
        flipped[to + 2] = region[from + 2]!;
      }
    }
  } else {
    for (let row = 0; row < 3 * height; row++) {
      let from = row * width + width - 1;
      let to = row * width;
      for (let c = 0; c < width; c++, from--, to++) flipped[to] = region[from]!;
    }
  }
  return flipped;
}

/** The 224 x 224 window at (dx, dy) of a region, in the output layout, to `out` at `base`. */
function copyWindow(region: Float32Array, width: number, height: number, dx: number, dy: number, nhwc: boolean, out: Float32Array, base: number): void {
  if (nhwc) {
    const rowValues = CROP_SIDE * 3;
    for (let i = 0; i < CROP_SIDE; i++) {
      const from = ((dy + i) * width + dx) * 3;
      out.set(region.subarray(from, from + rowValues), base + i * rowValues);
    }
    return;
  }
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < CROP_SIDE; i++) {
      const from = (c * height + dy + i) * width + dx;
      out.set(region.subarray(from, from + CROP_SIDE), base + c * PLANE + i * CROP_SIDE);
    }
  }
}

/**
 * Horizontal pass of one original row: for every output column j and channel c, the blend of
 * the row's two neighbours a[j] and b[j] with weight w[j], in float64 (the `u` of the 2-D
 * blend, so the vertical pass gives the same doubles a per-pixel loop would).
 */
function blendRow(data: Uint8Array, rowStart: number, cols: AxisTable, into: Float64Array): void {
  const { a: ca, b: cb, w: cwt, length } = cols;
  for (let j = 0, k = 0; j < length; j++, k += 3) {
    const left = rowStart + ca[j]!;
    const right = rowStart + cb[j]!;
    const wx = cwt[j]!;
    let u = data[left]!;
    into[k] = u + (data[right]! - u) * wx;
    u = data[left + 1]!;
    into[k + 1] = u + (data[right + 1]! - u) * wx;
    u = data[left + 2]!;
    into[k + 2] = u + (data[right + 2]! - u) * wx;
  }
}

/**
 * Separable bilinear: each original row an output row needs is blended horizontally once
 * (kept while the next output row still reads it), then pairs of blended rows vertically,
 * with the affine and channel order applied, written at `plain` and left-right flipped at
 * `mirrored` when given. The same float64 operations in the same order as the textbook
 * four-neighbour blend: u = p00 + (p01 - p00) wx, v likewise, value = u + (v - u) wy.
 */
function interpolate(
  data: Uint8Array,
  rows: AxisTable,
  cols: AxisTable,
  layout: Layout,
  plain: Target,
  mirrored: Target | undefined,
): void {
  const pixelStride = layout.nhwc ? 3 : 1;
  const planeStride = plain.planeStride;
  // The layout with its slots as offsets into this target (channel planes apart in NCHW).
  const slots: Layout = { ...layout, slotR: layout.slotR * planeStride, slotG: layout.slotG * planeStride, slotB: layout.slotB * planeStride };
  const width = cols.length;
  const plainOut = plain.out;
  const mirroredOut = mirrored?.out ?? plainOut;
  let upper = blendedRows(width, 0);
  let lower = blendedRows(width, 1);
  let upperRow = -1;
  let lowerRow = -1;
  for (let i = 0; i < rows.length; i++) {
    const top = rows.a[i]!;
    const bottom = rows.b[i]!;
    const wy = rows.w[i]!;
    // Rows only move down, so the two blended rows of the previous output row are reused.
    if (upperRow !== top) {
      if (lowerRow === top) {
        [upper, lower] = [lower, upper];
        [upperRow, lowerRow] = [lowerRow, upperRow];
      } else {
        blendRow(data, top, cols, upper);
        upperRow = top;
      }
    }
    if (lowerRow !== bottom) {
      blendRow(data, bottom, cols, lower);
      lowerRow = bottom;
    }
    const o = plain.base + i * plain.rowStride;
    if (mirrored) {
      const m = mirrored.base + i * mirrored.rowStride + (width - 1) * pixelStride;
      blendRowPairMirrored(upper, lower, wy, width, pixelStride, slots, plainOut, o, mirroredOut, m);
    } else {
      blendRowPair(upper, lower, wy, width, pixelStride, slots, plainOut, o);
    }
  }
}

/** Vertical pass of one output row: value = (u + (v - u) wy) * scale + offset, per channel. */
function blendRowPair(upper: Float64Array, lower: Float64Array, wy: number, width: number, pixelStride: number, slots: Layout, out: Float32Array, at: number): void {
  const { slotR: r, slotG: g, slotB: b, scaleR, offR, scaleG, offG, scaleB, offB } = slots;
  for (let k = 0, o = at; k < 3 * width; k += 3, o += pixelStride) {
    let u = upper[k]!;
    out[o + r] = (u + (lower[k]! - u) * wy) * scaleR + offR;
    u = upper[k + 1]!;
    out[o + g] = (u + (lower[k + 1]! - u) * wy) * scaleG + offG;
    u = upper[k + 2]!;
    out[o + b] = (u + (lower[k + 2]! - u) * wy) * scaleB + offB;
  }
}

/** As blendRowPair, each value also written left-right flipped from `mirrorAt` (the last pixel) down. */
function blendRowPairMirrored(
  upper: Float64Array,
  lower: Float64Array,
  wy: number,
  width: number,
  pixelStride: number,
  slots: Layout,
  out: Float32Array,
  at: number,
  mirrorOut: Float32Array,
  mirrorAt: number,
): void {
  const { slotR: r, slotG: g, slotB: b, scaleR, offR, scaleG, offG, scaleB, offB } = slots;
  for (let k = 0, o = at, m = mirrorAt; k < 3 * width; k += 3, o += pixelStride, m -= pixelStride) {
    let u = upper[k]!;
    let value = (u + (lower[k]! - u) * wy) * scaleR + offR;
    out[o + r] = value;
    mirrorOut[m + r] = value;
    u = upper[k + 1]!;
    value = (u + (lower[k + 1]! - u) * wy) * scaleG + offG;
    out[o + g] = value;
    mirrorOut[m + g] = value;
    u = upper[k + 2]!;
    value = (u + (lower[k + 2]! - u) * wy) * scaleB + offB;
    out[o + b] = value;
    mirrorOut[m + b] = value;
  }
}

const blended: [Float64Array, Float64Array] = [new Float64Array(3 * CROP_SIDE), new Float64Array(3 * CROP_SIDE)];

/** One of the two scratch rows of horizontally blended values, at least `width` pixels long. */
function blendedRows(width: number, which: 0 | 1): Float64Array {
  if (blended[which].length < 3 * width) blended[which] = new Float64Array(3 * width);
  return blended[which];
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

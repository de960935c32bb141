import { CROP_NAMES, CROP_SIDE, SCALES } from "./crop-types.js";
import type { Crop, CropName, Scale, Scheme, SquareName } from "./crop-types.js";
import { ConfigurationError } from "../errors.js";

/** Number of crops in the full protocol: 4 scales x 3 squares x 6 crops x 2 mirrors. */
export const CROPS_PER_IMAGE = SCALES.length * 3 * CROP_NAMES.length * 2;

const LANDSCAPE_SQUARES = ["left", "center", "right"] as const satisfies readonly SquareName[];
const PORTRAIT_SQUARES = ["top", "center", "bottom"] as const satisfies readonly SquareName[];

/** Crop counts a run can compute; each one is the largest scheme it serves. */
export type CropCount = 1 | 10 | 144;

function assertImageSize(width: number, height: number): void {
  // 352 * long must stay an exact integer in a double for the floor division below.
  const limit = Math.floor(Number.MAX_SAFE_INTEGER / SCALES[SCALES.length - 1]!);
  for (const [name, value] of [
    ["width", width],
    ["height", height],
  ] as const) {
    if (!Number.isInteger(value) || value < 1 || value > limit) {
      throw new ConfigurationError(
        `invalid image size ${String(width)}x${String(height)}: ${name} must be a positive integer ` +
          `no larger than ${limit} (got ${String(value)})`,
      );
    }
  }
}

/**
 * floor(a / b) for non-negative integers whose product terms stay below 2^53. The double
 * quotient can round up across an integer when a is large, so correct it with exact products.
 */
function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q -= 1;
  else if ((q + 1) * b <= a) q += 1;
  return q;
}

/**
 * `[rw, rh]` of a W x H image resized so its short side is `scale`: the long side is
 * floor(scale * long / short) in exact integers (multiply first: floating
 * floor(long * (scale / short)) gives 431 instead of 432 for 500x750 at 288). Sizes are
 * assumed valid; `cropPlan` checks them.
 */
export function resizedSize(width: number, height: number, scale: number): [number, number] {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const L = floorDiv(scale * long, short);
  return width >= height ? [L, scale] : [scale, L];
}

/** Window corner inside an s x s square, per crop name (`full` is the square itself). */
function cropCorner(name: CropName, s: number): [number, number] {
  const d = s - CROP_SIDE;
  switch (name) {
    case "tl":
      return [0, 0];
    case "tr":
      return [d, 0];
    case "bl":
      return [0, d];
    case "br":
      return [d, d];
    case "center":
      // d is even for every protocol scale, so this is exact.
      return [d / 2, d / 2];
    case "full":
      return [0, 0];
  }
}

/**
 * The 144 crops of ../shared/PROTOCOL.md ("Geometry") for a W x H image, in protocol order:
 * scale, square, crop, mirror. Objects carry their keys in the order the `crops --json`
 * output documents, because that output is compared as text.
 *
 * @throws ConfigurationError when width or height is not a positive integer.
 */
export function cropPlan(width: number, height: number): Crop[] {
  assertImageSize(width, height);
  const landscape = width >= height;
  const squares = landscape ? LANDSCAPE_SQUARES : PORTRAIT_SQUARES;
  const plan: Crop[] = [];
  for (const scale of SCALES) {
    const resized = resizedSize(width, height, scale);
    const L = landscape ? resized[0] : resized[1];
    const offsets = [0, Math.floor((L - scale) / 2), L - scale];
    squares.forEach((square, q) => {
      const along = offsets[q]!;
      for (const crop of CROP_NAMES) {
        const [cx, cy] = cropCorner(crop, scale);
        const x = landscape ? along + cx : cx;
        const y = landscape ? cy : along + cy;
        const size = crop === "full" ? scale : CROP_SIDE;
        for (const mirror of [false, true]) {
          plan.push(makeCrop(scale, resized, square, crop, mirror, x, y, size));
        }
      }
    });
  }
  return plan;
}

function makeCrop(
  scale: Scale,
  resized: readonly [number, number],
  square: SquareName,
  crop: CropName,
  mirror: boolean,
  x: number,
  y: number,
  size: number,
): Crop {
  // Key order is part of the printed contract; keep it literal.
  return { scale, resized: [resized[0], resized[1]], square, crop, mirror, x, y, size };
}

/** Position in the plan of (scale index, square index, crop name, mirror). */
function planIndex(scaleIndex: number, squareIndex: number, crop: CropName, mirror: boolean): number {
  return ((scaleIndex * 3 + squareIndex) * CROP_NAMES.length + CROP_NAMES.indexOf(crop)) * 2 + (mirror ? 1 : 0);
}

const SCHEME_INDICES: Readonly<Record<Scheme, readonly number[]>> = {
  // Scale 256, center square, center crop, unmirrored.
  "1": [planIndex(0, 1, "center", false)],
  // Scale 256, center square, the five 224 crops, both mirrors.
  "10": (["tl", "tr", "bl", "br", "center"] as const).flatMap((crop) => [
    planIndex(0, 1, crop, false),
    planIndex(0, 1, crop, true),
  ]),
  "144": Array.from({ length: CROPS_PER_IMAGE }, (_, i) => i),
};

/**
 * Indices into `cropPlan(...)` of the crops a scheme averages over (../shared/PROTOCOL.md,
 * "Averaging and schemes"), ascending.
 *
 * @throws ConfigurationError for an unknown scheme.
 */
export function schemeCropIndices(scheme: Scheme): number[] {
  const indices = SCHEME_INDICES[scheme] as readonly number[] | undefined;
  if (indices === undefined) {
    throw new ConfigurationError(`unknown crop scheme "${String(scheme)}"; use one of: 1, 10, 144`);
  }
  return [...indices];
}

/**
 * Indices into `cropPlan(...)` a run with `--crops count` must compute: the union of every
 * scheme it reports (10 crops also yield scheme 1, 144 yield all three), ascending.
 *
 * @throws ConfigurationError for a count other than 1, 10 or 144.
 */
export function cropsForCount(count: CropCount): number[] {
  if (count !== 1 && count !== 10 && count !== 144) {
    throw new ConfigurationError(`unknown crop count ${String(count)}; use one of: 1, 10, 144`);
  }
  // Each scheme contains the smaller ones, so the largest scheme is the union.
  return schemeCropIndices(String(count) as Scheme);
}

/** `{"width":W,"height":H,"crops":[...]}`, the exact text `googlenet-eval crops --json` prints. */
export function formatCropPlanJson(width: number, height: number): string {
  return JSON.stringify({ width, height, crops: cropPlan(width, height) });
}

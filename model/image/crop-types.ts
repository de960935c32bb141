/** The four scales of the paper's 144-crop protocol, in protocol order. */
export const SCALES = [256, 288, 320, 352] as const;
export type Scale = (typeof SCALES)[number];

/** Squares along the long side: left/center/right for landscape, top/center/bottom for portrait. */
export type SquareName = "left" | "center" | "right" | "top" | "bottom";

/** Crop names inside a square, in protocol order. */
export const CROP_NAMES = ["tl", "tr", "bl", "br", "center", "full"] as const;
export type CropName = (typeof CROP_NAMES)[number];

/** The side of every crop fed to the network. */
export const CROP_SIDE = 224;

/**
 * One crop of the plan, in the exact shape `googlenet-eval crops --json` prints
 * (../shared/PROTOCOL.md, "Interfaces the checks read").
 */
export interface Crop {
  readonly scale: Scale;
  /** [width, height] of the resized image this crop is taken from. */
  readonly resized: readonly [number, number];
  readonly square: SquareName;
  readonly crop: CropName;
  readonly mirror: boolean;
  /** Top-left corner of the window, in resized-image pixels (square offset included). */
  readonly x: number;
  readonly y: number;
  /** Side of the window in resized-image pixels: 224, or the scale for `full`. */
  readonly size: number;
}

/** The crop schemes of the paper's Table 3; each is a subset of the 144. */
export const SCHEMES = ["1", "10", "144"] as const;
export type Scheme = (typeof SCHEMES)[number];

/**
 * How a flavour of GoogLeNet wants its input: which channel goes first and a per-channel affine
 * map of the 0..255 RGB sample values. Both flavours of ../shared/PROTOCOL.md ("Model input")
 * are affine, so sampling can write engine-ready values in the same pass that interpolates.
 */
export type Flavour = "bvlc" | "torchvision";

export const FLAVOURS: readonly Flavour[] = ["bvlc", "torchvision"];

export interface Preprocess {
  /** Channel order the network expects. */
  readonly channelOrder: "rgb" | "bgr";
  /**
   * For output channel c (in `channelOrder`): value = sample * scale[c] + offset[c], where
   * sample is that channel's interpolated 0..255 value.
   */
  readonly scale: readonly [number, number, number];
  readonly offset: readonly [number, number, number];
}

/** BVLC Caffe GoogLeNet: B, G, R, 0..255 minus the means B 104, G 117, R 123. */
const BVLC: Preprocess = {
  channelOrder: "bgr",
  scale: [1, 1, 1],
  offset: [-104, -117, -123],
};

const TORCHVISION_MEAN = [0.485, 0.456, 0.406] as const;
const TORCHVISION_STD = [0.229, 0.224, 0.225] as const;

/** torchvision: R, G, B scaled to 0..1, then (v - mean) / std. */
const TORCHVISION: Preprocess = {
  channelOrder: "rgb",
  scale: [
    1 / (255 * TORCHVISION_STD[0]),
    1 / (255 * TORCHVISION_STD[1]),
    1 / (255 * TORCHVISION_STD[2]),
  ],
  offset: [
    -TORCHVISION_MEAN[0] / TORCHVISION_STD[0],
    -TORCHVISION_MEAN[1] / TORCHVISION_STD[1],
    -TORCHVISION_MEAN[2] / TORCHVISION_STD[2],
  ],
};

export function preprocessFor(flavour: Flavour): Preprocess {
  return flavour === "bvlc" ? BVLC : TORCHVISION;
}

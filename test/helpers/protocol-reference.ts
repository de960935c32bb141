import type { Crop } from "../../model/image/crop-types.js";
import type { DecodedImage } from "../../model/image/decode.js";
import type { InputLayout } from "../../model/engine.js";
import type { Preprocess } from "../../model/preprocess.js";
import { CROP_VALUES } from "../../model/image/sampling.js";

const S = 224;

/** Deterministic pseudo-random pixels, so a failure reproduces. */
export function syntheticImage(width: number, height: number, seed: number): DecodedImage {
  const data = new Uint8Array(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = state >>> 24;
  }
  return { width, height, data };
}

/** Index of output (row i, column j, channel c) of one crop, written from the layout's definition. */
export function outIndex(layout: InputLayout, i: number, j: number, c: number): number {
  return layout === "nhwc" ? (i * S + j) * 3 + c : c * S * S + i * S + j;
}

/**
 * One crop, pixel by pixel, straight from PROTOCOL.md "Sampling" and "Model input", written
 * without any of the implementation's tables or helpers.
 */
export function referenceCrop(image: DecodedImage, crop: Crop, pre: Preprocess, layout: InputLayout): Float32Array {
  const { width: W, height: H, data } = image;
  const [rw, rh] = crop.resized;
  const out = new Float32Array(CROP_VALUES);
  const px = (y: number, x: number, ch: number) => data[(y * W + x) * 3 + ch]!;
  for (let i = 0; i < S; i++) {
    for (let j = 0; j < S; j++) {
      const jj = crop.mirror ? 223 - j : j;
      const ry = crop.y + ((i + 0.5) * crop.size) / 224 - 0.5;
      const rx = crop.x + ((jj + 0.5) * crop.size) / 224 - 0.5;
      const oy = Math.min(Math.max(((ry + 0.5) * H) / rh - 0.5, 0), H - 1);
      const ox = Math.min(Math.max(((rx + 0.5) * W) / rw - 0.5, 0), W - 1);
      const y0 = Math.floor(oy);
      const x0 = Math.floor(ox);
      const y1 = Math.min(y0 + 1, H - 1);
      const x1 = Math.min(x0 + 1, W - 1);
      const fy = oy - y0;
      const fx = ox - x0;
      for (let c = 0; c < 3; c++) {
        const ch = pre.channelOrder === "rgb" ? c : 2 - c;
        const v =
          (1 - fy) * (1 - fx) * px(y0, x0, ch) +
          (1 - fy) * fx * px(y0, x1, ch) +
          fy * (1 - fx) * px(y1, x0, ch) +
          fy * fx * px(y1, x1, ch);
        out[outIndex(layout, i, j, c)] = v * pre.scale[c]! + pre.offset[c]!;
      }
    }
  }
  return out;
}


import * as tf from "@tensorflow/tfjs-core";
import { CROP_SIDE } from "../image/crop-types.js";
import type { Crop } from "../image/crop-types.js";
import type { DecodedImage } from "../image/decode.js";
import type { InputLayout } from "../engine.js";
import type { Preprocess } from "../preprocess.js";
import { cropAxis } from "../image/sampling.js";
import type { ImageWindows } from "../window-engine.js";

/**
 * Cuts engine-ready crops out of decoded images on the current tfjs backend: each image is
 * uploaded once (8-bit values as float32, 4 bytes a pixel channel, against 600 KB of sampled
 * floats per crop) and its channel order and affine applied there; each crop is then four
 * gathers and three blends.
 *
 * Exact to PROTOCOL.md because the coordinates never reach the device: the row and column
 * tables (pixel indices and weights, clamping included, mirrors as reversed column tables) are
 * the host sampler's own (`cropAxis`), computed in float64; the device only gathers pixels by
 * integer index and blends with float32 weights (within 3.1e-5 of the host sampler on 0..255
 * values). tf.image.cropAndResize was tried and not used: its boxes are float32 fractions of
 * (size - 1) that the kernel multiplies back up, so positions drift by up to size * 2^-25 of a
 * pixel; with a one-pixel edge pad and boxes set to PROTOCOL.md's first and last sample
 * positions it was 2.2e-3 (cpu) and 8.4e-3 (wasm) off on a 500x375 photo.
 *
 * Tensors stay inside: `cut` returns one tensor the caller (an engine in model/) consumes and
 * disposes; uploads are kept only while a later batch may still cut from them.
 */
export class DeviceCropper {
  private readonly uploads = new Map<DecodedImage, tf.Tensor2D>();
  private readonly order: tf.Tensor1D | undefined;
  private readonly scale: tf.Tensor1D;
  private readonly offset: tf.Tensor1D;

  /**
   * @param preprocess the model's channel order and affine.
   * @param layout "nhwc" (tfjs) or "nchw" (onnxruntime); default "nhwc".
   */
  constructor(
    preprocess: Preprocess,
    private readonly layout: InputLayout = "nhwc",
  ) {
    // Per output channel: the source channel it reads and its affine.
    const bgr = preprocess.channelOrder === "bgr";
    this.order = bgr ? tf.tensor1d([2, 1, 0], "int32") : undefined;
    this.scale = tf.tensor1d([...preprocess.scale]);
    this.offset = tf.tensor1d([...preprocess.offset]);
  }

  /**
   * Engine-ready crops for `batch`: [n, 224, 224, 3] for "nhwc", [n, 3, 224, 224] for "nchw",
   * n the total number of crops, in batch order. The caller disposes the result.
   */
  cut(batch: readonly ImageWindows[]): tf.Tensor4D {
    if (batch.length === 0 || batch.every(({ crops }) => crops.length === 0)) {
      throw new RangeError("DeviceCropper.cut: no crops to cut");
    }
    const crops = tf.tidy(() => {
      const parts = batch.filter(({ crops: c }) => c.length > 0).map(({ image, crops: c }) => cutFrom(this.upload(image), image, c));
      const nhwc = (parts.length === 1 ? parts[0] : tf.concat(parts, 0)) as tf.Tensor4D;
      return this.layout === "nhwc" ? nhwc : tf.transpose(nhwc, [0, 3, 1, 2]);
    });
    // Windows of one image are consecutive in the scorer's batches, so only the last image of
    // this batch can have windows in the next one.
    const keep = batch[batch.length - 1]?.image;
    for (const [image, tensor] of this.uploads) {
      if (image !== keep) {
        tensor.dispose();
        this.uploads.delete(image);
      }
    }
    return crops;
  }

  /** Frees the uploads and constants. Safe to call twice. */
  dispose(): void {
    for (const tensor of this.uploads.values()) tensor.dispose();
    this.uploads.clear();
    this.order?.dispose();
    this.scale.dispose();
    this.offset.dispose();
  }

  /** The image on the device as [H*W, 3] engine-ready values (channel order and affine applied), uploaded once. */
  private upload(image: DecodedImage): tf.Tensor2D {
    let uploaded = this.uploads.get(image);
    if (uploaded === undefined) {
      const { width, height, data } = image;
      const pixels = (): tf.Tensor2D => {
        const values = tf.tensor2d(Float32Array.from(data), [width * height, 3]);
        const ordered = this.order ? tf.gather(values, this.order, 1) : values;
        return tf.add(tf.mul(ordered, this.scale), this.offset) as tf.Tensor2D;
      };
      // Made inside the caller's tidy but kept across calls until `cut` or `dispose` frees it.
      uploaded = tf.keep(tf.tidy(pixels));
      this.uploads.set(image, uploaded);
    }
    return uploaded;
  }
}

/**
 * The crops of one image as [n, 224, 224, 3]: pixel (i, j) of crop k blends the four pixels
 * rowA/rowB[k][i] x colA/colB[k][j] with weights wy[k][i], wx[k][j], like the host sampler:
 * u = p00 + (p01 - p00) wx, v likewise, value = u + (v - u) wy.
 */
function cutFrom(pixels: tf.Tensor2D, image: DecodedImage, crops: readonly Crop[]): tf.Tensor4D {
  const n = crops.length;
  const rowA = new Int32Array(n * CROP_SIDE);
  const rowB = new Int32Array(n * CROP_SIDE);
  const colA = new Int32Array(n * CROP_SIDE);
  const colB = new Int32Array(n * CROP_SIDE);
  const wy = new Float32Array(n * CROP_SIDE);
  const wx = new Float32Array(n * CROP_SIDE);
  crops.forEach((crop, k) => {
    const rows = cropAxis(crop, "y", image.height);
    const cols = cropAxis(crop, "x", image.width);
    for (let i = 0; i < CROP_SIDE; i++) {
      const at = k * CROP_SIDE + i;
      rowA[at] = rows.a[i]! * image.width;
      rowB[at] = rows.b[i]! * image.width;
      wy[at] = rows.w[i]!;
      // A mirrored crop reads its columns right to left.
      const j = crop.mirror ? CROP_SIDE - 1 - i : i;
      colA[at] = cols.a[j]!;
      colB[at] = cols.b[j]!;
      wx[at] = cols.w[j]!;
    }
  });
  const top = tf.tensor3d(rowA, [n, CROP_SIDE, 1], "int32");
  const bottom = tf.tensor3d(rowB, [n, CROP_SIDE, 1], "int32");
  const left = tf.tensor3d(colA, [n, 1, CROP_SIDE], "int32");
  const right = tf.tensor3d(colB, [n, 1, CROP_SIDE], "int32");
  const at = (r: tf.Tensor3D, c: tf.Tensor3D) => tf.gather(pixels, tf.add(r, c) as tf.Tensor3D) as unknown as tf.Tensor4D;
  const fx = tf.tensor4d(wx, [n, 1, CROP_SIDE, 1]);
  const fy = tf.tensor4d(wy, [n, CROP_SIDE, 1, 1]);
  const p00 = at(top, left);
  const p10 = at(bottom, left);
  const u = tf.add(p00, tf.mul(tf.sub(at(top, right), p00), fx));
  const v = tf.add(p10, tf.mul(tf.sub(at(bottom, right), p10), fx));
  return tf.add(u, tf.mul(tf.sub(v, u), fy)) as tf.Tensor4D;
}

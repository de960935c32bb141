import * as tf from "@tensorflow/tfjs-core";
import {
  allConvs,
  INCEPTION_NAMES,
  type ConvWeights,
  type GoogLeNetWeights,
  type InceptionWeights,
  type LrnSpec,
  type PoolSpec,
} from "../onnx/googlenet-weights.js";
import { pooledSize } from "../onnx/layer-readers.js";
import { ModelFormatError } from "../errors.js";
import type { Flavour } from "../preprocess.js";

/**
 * GoogLeNet in TensorFlow.js (NHWC), built from the plain weights model/onnx/googlenet-recognition.ts
 * reads out of an ONNX file. Tensors stay inside model/: callers hand in Float32Arrays (or, from
 * the tfjs engine, crops already cut on the backend), get back Float32Arrays, and free the
 * weights with dispose().
 */

type ExplicitPadding = [[number, number], [number, number], [number, number], [number, number]];
type Padding = "same" | "valid" | ExplicitPadding;

/** One row of the paper's Table 1 as this network has it. */
export interface LayerWidths {
  /** "conv1", "conv2", "inception 3a" ... "inception 5b", "classifier". */
  readonly layer: string;
  readonly n1x1?: number;
  readonly n3x3Reduce?: number;
  readonly n3x3?: number;
  readonly n5x5Reduce?: number;
  readonly n5x5?: number;
  readonly poolProj?: number;
  /** [height, width, channels] of the layer's output ([1, 1, classes] for the classifier). */
  readonly output: readonly [number, number, number];
}

/** Weights and biases of every conv and the classifier (a folded BatchNorm is not counted apart). */
export function parameterCount(weights: GoogLeNetWeights): number {
  const convs = allConvs(weights).reduce((sum, c) => sum + c.kernel.length + c.bias.length, 0);
  return convs + weights.classifier.weights.length + weights.classifier.bias.length;
}

function convOutput(size: number, conv: ConvWeights): number {
  return pooledSize(size, conv.shape[0], conv.strides[0], conv.pads[0], conv.pads[2], false);
}

function poolOutput(size: number, pool: PoolSpec): number {
  return pooledSize(size, pool.kernel[0], pool.strides[0], pool.pads[0], pool.pads[2], pool.ceilMode);
}

/** The channel columns and output sizes of the paper's Table 1, computed from the weights. */
export function layerWidths(weights: GoogLeNetWeights): LayerWidths[] {
  let size = convOutput(weights.inputSize, weights.conv1);
  const rows: LayerWidths[] = [{ layer: "conv1", output: [size, size, weights.conv1.shape[3]] }];
  size = poolOutput(size, weights.pool1);
  size = convOutput(convOutput(size, weights.conv2Reduce), weights.conv2);
  // Like Table 1, conv rows give the conv's own output; the pool after it is a row of its own there.
  rows.push({
    layer: "conv2",
    n3x3Reduce: weights.conv2Reduce.shape[3],
    n3x3: weights.conv2.shape[3],
    output: [size, size, weights.conv2.shape[3]],
  });
  size = poolOutput(size, weights.pool2);
  let channels = weights.conv2.shape[3];
  for (const name of INCEPTION_NAMES) {
    if (name === "4a") size = poolOutput(size, weights.pool3);
    if (name === "5a") size = poolOutput(size, weights.pool4);
    const m = weights.inception[name];
    channels = m.conv1x1.shape[3] + m.conv3x3.shape[3] + m.conv5x5.shape[3] + m.poolProj.shape[3];
    rows.push({
      layer: `inception ${name}`,
      n1x1: m.conv1x1.shape[3],
      n3x3Reduce: m.conv3x3Reduce.shape[3],
      n3x3: m.conv3x3.shape[3],
      n5x5Reduce: m.conv5x5Reduce.shape[3],
      n5x5: m.conv5x5.shape[3],
      poolProj: m.poolProj.shape[3],
      output: [size, size, channels],
    });
  }
  rows.push({ layer: "classifier", output: [1, 1, weights.classifier.shape[1]] });
  return rows;
}

/**
 * The tfjs padding that reproduces an ONNX/Caffe window geometry on an input of `size`. Caffe's
 * ceil-mode pools add implicit padding at the end; tfjs 'same' pads floor(total/2) at the start
 * and the rest at the end, so it matches only when that split is the ONNX one. Anything else is
 * given explicitly, and the output size is checked against tfjs's explicit-padding formula.
 */
export function windowPadding(
  size: number,
  kernel: number,
  stride: number,
  pads: readonly [number, number, number, number],
  ceilMode: boolean,
  where = "window",
): { padding: Padding; outputSize: number } {
  const outputSize = pooledSize(size, kernel, stride, pads[0], pads[2], ceilMode);
  const padEnd = (outputSize - 1) * stride + kernel - size - pads[0];
  const sameOut = Math.ceil(size / stride);
  const sameTotal = Math.max((sameOut - 1) * stride + kernel - size, 0);
  const symmetric = pads[1] === pads[0] && pads[3] === pads[2];
  if (symmetric && sameOut === outputSize && Math.floor(sameTotal / 2) === pads[0] && sameTotal - pads[0] === padEnd) {
    return { padding: "same", outputSize };
  }
  if (symmetric && pads[0] === 0 && padEnd <= 0 && Math.floor((size - kernel) / stride) + 1 === outputSize) {
    return { padding: "valid", outputSize };
  }
  const end = Math.max(padEnd, 0);
  if (!symmetric || Math.floor((size + pads[0] + end - kernel) / stride) + 1 !== outputSize) {
    throw new ModelFormatError(
      `${where} ${kernel}/${stride} with pads [${pads.join(", ")}] on ${size}x${size} has no tfjs equivalent (different vertical and horizontal padding)`,
    );
  }
  return { padding: [[0, 0], [pads[0], end], [pads[1], end], [0, 0]], outputSize };
}

/** A model ready to classify batches of NHWC crops. */
export interface GoogLeNetModel {
  readonly flavour: Flavour;
  /** Side of the square input in pixels. */
  readonly inputSize: number;
  readonly classes: number;
  /**
   * Softmax probabilities for `count` crops of inputSize x inputSize x 3 values, NHWC, already
   * preprocessed for the flavour. Returns count * classes values.
   */
  probabilities(input: Float32Array, count: number): Promise<Float32Array>;
  /**
   * The same for crops already on the backend as [count, inputSize, inputSize, 3] (cut there by
   * a DeviceCropper). The caller keeps and disposes `input`.
   */
  probabilitiesOf(input: tf.Tensor4D): Promise<Float32Array>;
  /** Frees the weight tensors. Safe to call twice. */
  dispose(): void;
}

interface ConvLayer {
  readonly filter: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
  readonly strides: [number, number];
  readonly padding: Padding;
}

interface PoolLayer {
  readonly kernel: [number, number];
  readonly strides: [number, number];
  readonly padding: Padding;
}

interface LrnLayer {
  /** [1, 1, C, C] 0/1 band: output channel c sums the squares of its `size` neighbours. */
  readonly band: tf.Tensor4D;
  readonly spec: LrnSpec;
}

interface InceptionLayer {
  /** The three 1x1 convs that read the module input (1x1, 3x3 reduce, 5x5 reduce) as one conv. */
  readonly entry: ConvLayer;
  readonly entrySplit: [number, number, number];
  readonly conv3x3: ConvLayer;
  readonly conv5x5: ConvLayer;
  readonly pool: PoolLayer;
  readonly poolProj: ConvLayer;
  readonly concatOrder: InceptionWeights["concatOrder"];
}

class TfjsGoogLeNet implements GoogLeNetModel {
  readonly flavour: Flavour;
  readonly inputSize: number;
  readonly classes: number;
  private readonly owned: tf.Tensor[] = [];
  private readonly affine?: { source?: tf.Tensor1D; scale: tf.Tensor1D; offset: tf.Tensor1D };
  private readonly conv1: ConvLayer;
  private readonly pool1: PoolLayer;
  private readonly lrn1?: LrnLayer;
  private readonly conv2Reduce: ConvLayer;
  private readonly conv2: ConvLayer;
  private readonly lrn2?: LrnLayer;
  private readonly pool2: PoolLayer;
  private readonly pool3: PoolLayer;
  private readonly pool4: PoolLayer;
  private readonly modules: InceptionLayer[] = [];
  private readonly classifierWeights: tf.Tensor2D;
  private readonly classifierBias: tf.Tensor1D;
  private disposed = false;

  constructor(weights: GoogLeNetWeights) {
    this.flavour = weights.flavour;
    this.inputSize = weights.inputSize;
    this.classes = weights.classifier.shape[1];
    let size = weights.inputSize;
    const where = (what: string): string => `${weights.source}: ${what}`;
    const conv = (w: ConvWeights): ConvLayer => {
      const { padding, outputSize } = windowPadding(size, w.shape[0], w.strides[0], w.pads, false, where("a convolution"));
      size = outputSize;
      return {
        filter: this.own(tf.tensor4d(w.kernel, [...w.shape])),
        bias: this.own(tf.tensor1d(w.bias)),
        strides: [w.strides[0], w.strides[1]],
        padding,
      };
    };
    const pool = (p: PoolSpec): PoolLayer => {
      const { padding, outputSize } = windowPadding(size, p.kernel[0], p.strides[0], p.pads, p.ceilMode, where("a max pool"));
      size = outputSize;
      return { kernel: [p.kernel[0], p.kernel[1]], strides: [p.strides[0], p.strides[1]], padding };
    };
    const lrn = (spec: LrnSpec | undefined, channels: number): LrnLayer | undefined => {
      if (!spec) return undefined;
      // ONNX's window for channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)].
      const before = Math.floor((spec.size - 1) / 2);
      const after = Math.ceil((spec.size - 1) / 2);
      const band = new Float32Array(channels * channels);
      for (let i = 0; i < channels; i++) {
        for (let c = Math.max(0, i - after); c <= Math.min(channels - 1, i + before); c++) band[i * channels + c] = 1;
      }
      return { band: this.own(tf.tensor4d(band, [1, 1, channels, channels])), spec };
    };

    if (weights.inputAffine) {
      const { source, scale, offset } = weights.inputAffine;
      const identity = source.every((s, c) => s === c);
      this.affine = {
        ...(identity ? {} : { source: this.own(tf.tensor1d([...source], "int32")) }),
        scale: this.own(tf.tensor1d([...scale])),
        offset: this.own(tf.tensor1d([...offset])),
      };
    }
    this.conv1 = conv(weights.conv1);
    this.pool1 = pool(weights.pool1);
    this.lrn1 = lrn(weights.lrn1, weights.conv1.shape[3]);
    this.conv2Reduce = conv(weights.conv2Reduce);
    this.conv2 = conv(weights.conv2);
    this.lrn2 = lrn(weights.lrn2, weights.conv2.shape[3]);
    this.pool2 = pool(weights.pool2);
    let pool3: PoolLayer | undefined;
    let pool4: PoolLayer | undefined;
    for (const name of INCEPTION_NAMES) {
      if (name === "4a") pool3 = pool(weights.pool3);
      if (name === "5a") pool4 = pool(weights.pool4);
      const m = weights.inception[name];
      const moduleSize = size;
      const entry = mergeOneByOne([m.conv1x1, m.conv3x3Reduce, m.conv5x5Reduce]);
      const layer: InceptionLayer = {
        entry: conv(entry),
        entrySplit: [m.conv1x1.shape[3], m.conv3x3Reduce.shape[3], m.conv5x5Reduce.shape[3]],
        conv3x3: conv(m.conv3x3),
        conv5x5: conv(m.conv5x5),
        pool: pool(m.pool),
        poolProj: conv(m.poolProj),
        concatOrder: m.concatOrder,
      };
      if (size !== moduleSize) {
        throw new ModelFormatError(`${weights.source}: inception ${name}: a branch changes the ${moduleSize}x${moduleSize} map size to ${size}x${size}`);
      }
      this.modules.push(layer);
    }
    this.pool3 = pool3 as PoolLayer;
    this.pool4 = pool4 as PoolLayer;
    this.classifierWeights = this.own(tf.tensor2d(weights.classifier.weights, [...weights.classifier.shape]));
    this.classifierBias = this.own(tf.tensor1d(weights.classifier.bias));
  }

  private own<T extends tf.Tensor>(tensor: T): T {
    this.owned.push(tensor);
    return tensor;
  }

  async probabilities(input: Float32Array, count: number): Promise<Float32Array> {
    const side = this.inputSize;
    if (!Number.isInteger(count) || count < 1 || input.length !== count * side * side * 3) {
      throw new RangeError(`expected ${count} crops of ${side}x${side}x3 = ${count * side * side * 3} values, got ${input.length}`);
    }
    const crops = tf.tensor4d(input, [count, side, side, 3]);
    try {
      return await this.probabilitiesOf(crops);
    } finally {
      crops.dispose();
    }
  }

  async probabilitiesOf(input: tf.Tensor4D): Promise<Float32Array> {
    if (this.disposed) throw new Error("GoogLeNet model used after dispose()");
    const side = this.inputSize;
    const [count, height, width, channels] = input.shape;
    if (count < 1 || height !== side || width !== side || channels !== 3) {
      throw new RangeError(`expected crops of [n, ${side}, ${side}, 3] with n >= 1, got [${input.shape.join(", ")}]`);
    }
    const output = tf.tidy(() => this.forward(input));
    try {
      return (await output.data()) as Float32Array;
    } finally {
      output.dispose();
    }
  }

  /**
   * Each stage runs in its own tidy and its input is freed as soon as the next stage has its
   * output, so a batch holds at most two stages' activations instead of the whole network's.
   */
  private forward(input: tf.Tensor4D): tf.Tensor2D {
    const stages: ((x: tf.Tensor4D) => tf.Tensor4D)[] = [
      (x) => this.stem1(x),
      (x) => this.stem2(x),
      ...this.modules.map((m, i) => (x: tf.Tensor4D) => {
        const pooled = i === 2 ? maxPool(x, this.pool3) : i === 7 ? maxPool(x, this.pool4) : x;
        return inception(pooled, m);
      }),
    ];
    let x = input;
    for (const stage of stages) {
      const next = tf.tidy(() => stage(x));
      if (x !== input) x.dispose();
      x = next;
    }
    // Global average pool, then the classifier; a logits graph (torchvision) gets its softmax here.
    const features = tf.mean(x, [1, 2]) as tf.Tensor2D;
    const logits = tf.fused.matMul({ a: features, b: this.classifierWeights, bias: this.classifierBias }) as tf.Tensor2D;
    return tf.softmax(logits);
  }

  private stem1(input: tf.Tensor4D): tf.Tensor4D {
    let x = input;
    if (this.affine) {
      const picked = this.affine.source ? (tf.gather(x, this.affine.source, 3) as tf.Tensor4D) : x;
      x = tf.add(tf.mul(picked, this.affine.scale), this.affine.offset);
    }
    x = maxPool(conv2d(x, this.conv1), this.pool1);
    return this.lrn1 ? lrn(x, this.lrn1) : x;
  }

  private stem2(input: tf.Tensor4D): tf.Tensor4D {
    let x = conv2d(conv2d(input, this.conv2Reduce), this.conv2);
    if (this.lrn2) x = lrn(x, this.lrn2);
    return maxPool(x, this.pool2);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const tensor of this.owned) tensor.dispose();
  }
}

function conv2d(x: tf.Tensor4D, layer: ConvLayer): tf.Tensor4D {
  return tf.fused.conv2d({
    x,
    filter: layer.filter,
    strides: layer.strides,
    pad: layer.padding,
    bias: layer.bias,
    activation: "relu",
  });
}

function maxPool(x: tf.Tensor4D, layer: PoolLayer): tf.Tensor4D {
  return tf.maxPool(x, layer.kernel, layer.strides, layer.padding);
}

/**
 * LRN across channels as x * (bias + alpha/size * S)^-beta, with S the windowed sum of x^2
 * taken by one 1x1 convolution with a 0/1 band matrix: every backend has conv2d, not every
 * backend (wasm) has LocalResponseNormalization, and the conv is fast.
 */
function lrn(x: tf.Tensor4D, layer: LrnLayer): tf.Tensor4D {
  const { size, alpha, beta, bias } = layer.spec;
  const sums = tf.conv2d(tf.square(x), layer.band, 1, "valid");
  return tf.mul(x, tf.pow(tf.add(tf.mul(sums, alpha / size), bias), -beta));
}

function inception(x: tf.Tensor4D, m: InceptionLayer): tf.Tensor4D {
  const [b1x1, r3, r5] = tf.split(conv2d(x, m.entry), m.entrySplit, 3) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  const branches = {
    "1x1": b1x1,
    "3x3": conv2d(r3, m.conv3x3),
    "5x5": conv2d(r5, m.conv5x5),
    pool: conv2d(maxPool(x, m.pool), m.poolProj),
  };
  return tf.concat(m.concatOrder.map((name) => branches[name]), 3);
}

/** 1x1 convs reading the same input, stacked along output channels into one conv. */
function mergeOneByOne(convs: readonly ConvWeights[]): ConvWeights {
  const [first] = convs as [ConvWeights];
  const inC = first.shape[2];
  const outC = convs.reduce((sum, c) => sum + c.shape[3], 0);
  const kernel = new Float32Array(inC * outC);
  const bias = new Float32Array(outC);
  let offset = 0;
  for (const c of convs) {
    const n = c.shape[3];
    for (let i = 0; i < inC; i++) kernel.set(c.kernel.subarray(i * n, (i + 1) * n), i * outC + offset);
    bias.set(c.bias, offset);
    offset += n;
  }
  return { shape: [1, 1, inC, outC], kernel, bias, strides: first.strides, pads: first.pads };
}

/**
 * Builds the network's tensors on the current tfjs backend (call model/tfjs/backend.ts
 * selectBackend first).
 */
export function buildGoogLeNet(weights: GoogLeNetWeights): GoogLeNetModel {
  return new TfjsGoogLeNet(weights);
}

import type { Flavour } from "../preprocess.js";

/**
 * GoogLeNet's weights and layer settings as plain data, the contract between the ONNX reader
 * (model/onnx/googlenet-recognition.ts) and the TensorFlow.js network (model/tfjs/googlenet.ts).
 */

/** [top, left, bottom, right], ONNX's [begin..., end...] order for two spatial axes. */
export type Pads = readonly [number, number, number, number];

export interface ConvWeights {
  /** [kh, kw, inC, outC], the HWIO layout tf.conv2d takes. */
  readonly shape: readonly [number, number, number, number];
  /** HWIO values; any BatchNormalization that followed the conv is already folded in. */
  readonly kernel: Float32Array;
  readonly bias: Float32Array;
  /** [vertical, horizontal]. */
  readonly strides: readonly [number, number];
  readonly pads: Pads;
}

export interface PoolSpec {
  readonly kernel: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly pads: Pads;
  /** Output size rounded up (Caffe's and ONNX's ceil_mode). */
  readonly ceilMode: boolean;
}

/** ONNX LRN: x / (bias + alpha / size * sum over `size` neighbouring channels of x^2) ^ beta. */
export interface LrnSpec {
  readonly size: number;
  readonly alpha: number;
  readonly beta: number;
  readonly bias: number;
}

/**
 * Per-channel affine at the network's input (torchvision's `transform_input`): output channel c
 * is input channel `source[c]` times `scale[c]` plus `offset[c]`, applied to the already
 * normalised input exactly as the ONNX graph does.
 */
export interface InputAffine {
  readonly source: readonly [number, number, number];
  readonly scale: readonly [number, number, number];
  readonly offset: readonly [number, number, number];
}

export const INCEPTION_NAMES = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"] as const;
export type InceptionName = (typeof INCEPTION_NAMES)[number];

/** The four branches of an inception module, by the paper's Table 1 column they fill. */
export type BranchName = "1x1" | "3x3" | "5x5" | "pool";

export interface InceptionWeights {
  readonly name: InceptionName;
  readonly conv1x1: ConvWeights;
  readonly conv3x3Reduce: ConvWeights;
  readonly conv3x3: ConvWeights;
  /** In torchvision's flavour this branch is 1x1 -> 3x3 although the paper says 5x5. */
  readonly conv5x5Reduce: ConvWeights;
  readonly conv5x5: ConvWeights;
  /** The 3x3 stride 1 max pool in front of the pool projection. */
  readonly pool: PoolSpec;
  readonly poolProj: ConvWeights;
  /** The branches in the Concat's input order, which fixes the output channel order. */
  readonly concatOrder: readonly BranchName[];
}

export interface GoogLeNetWeights {
  /** The file or URL the weights came from, for messages. */
  readonly source: string;
  readonly flavour: Flavour;
  /** Input side in pixels (224), from the graph's input shape when it is fixed. */
  readonly inputSize: number;
  readonly inputAffine?: InputAffine;
  readonly conv1: ConvWeights;
  readonly pool1: PoolSpec;
  /** After pool1 in BVLC's net; absent in torchvision's. */
  readonly lrn1?: LrnSpec;
  readonly conv2Reduce: ConvWeights;
  readonly conv2: ConvWeights;
  /** After conv2 (before pool2) in BVLC's net; absent in torchvision's. */
  readonly lrn2?: LrnSpec;
  readonly pool2: PoolSpec;
  readonly inception: Readonly<Record<InceptionName, InceptionWeights>>;
  /** Between 3b and 4a. */
  readonly pool3: PoolSpec;
  /** Between 4e and 5a: 3x3/2 in BVLC's net, 2x2/2 in torchvision's. */
  readonly pool4: PoolSpec;
  /** Global average pooling (AveragePool 7x7 or GlobalAveragePool), then the linear layer. */
  readonly classifier: {
    /** [inFeatures, outFeatures], the layout tf.matMul(x, W) takes. */
    readonly shape: readonly [number, number];
    readonly weights: Float32Array;
    readonly bias: Float32Array;
  };
  /** Whether the graph ends in Softmax (BVLC) or gives logits (torchvision). */
  readonly outputIsSoftmax: boolean;
}

/** Every conv in network order (stem, then each module's six), for counting and checks. */
export function allConvs(weights: GoogLeNetWeights): ConvWeights[] {
  return [
    weights.conv1,
    weights.conv2Reduce,
    weights.conv2,
    ...INCEPTION_NAMES.flatMap((name) => {
      const m = weights.inception[name];
      return [m.conv1x1, m.conv3x3Reduce, m.conv3x3, m.conv5x5Reduce, m.conv5x5, m.poolProj];
    }),
  ];
}

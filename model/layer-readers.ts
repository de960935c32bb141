import { ModelFormatError } from "./errors.js";
import {
  floatAttribute,
  intAttribute,
  intsAttribute,
  readOnnxModel,
  stringAttribute,
  tensorAttribute,
  type OnnxFloatTensor,
  type OnnxGraph,
  type OnnxNode,
  type OnnxTensor,
} from "./onnx.js";
import type { Flavour } from "./preprocess.js";

/**
 * GoogLeNet recognised from an ONNX graph's STRUCTURE (operator types, how tensors connect,
 * weight shapes), never from node or tensor names, so renamed, re-ordered or re-exported files
 * map the same way. Everything here is plain data; model/googlenet.ts turns it into tensors.
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

/** Facts about any ONNX image classifier, cheap to compute and never throwing on structure. */
export interface OnnxModelDescription {
  readonly inputName: string;
  /** As declared: numbers, symbolic names (batch "N") or undefined for unknown dimensions. */
  readonly inputShape: readonly (number | string | undefined)[];
  readonly outputName: string;
  /** Size of the output's last dimension (classes), when declared. */
  readonly outputSize: number | undefined;
  /** True when the output is already softmaxed (produced by a Softmax node). */
  readonly softmaxed: boolean;
  /** The recognised GoogLeNet flavour, or undefined for any other network. */
  readonly flavour: Flavour | undefined;
  /** Why the flavour is undefined (the structural mismatch found), for logs. */
  readonly unrecognisedReason?: string;
}

// ---------------------------------------------------------------------------------------------
// Walking the graph

/** One step of the network's main chain, in forward order. */
type Step =
  | { readonly kind: "node"; readonly node: OnnxNode }
  | { readonly kind: "concat"; readonly node: OnnxNode; readonly branches: readonly (readonly Step[])[] };

const ELEMENTWISE = new Set(["Add", "Mul", "Sub", "Div"]);

class GraphIndex {
  readonly producer = new Map<string, OnnxNode>();
  readonly consumers = new Map<string, number>();
  readonly inputName: string;

  constructor(readonly graph: OnnxGraph) {
    for (const node of graph.nodes) {
      for (const output of node.outputs) if (output) this.producer.set(output, node);
      for (const input of new Set(node.inputs)) {
        if (input) this.consumers.set(input, (this.consumers.get(input) ?? 0) + 1);
      }
    }
    const [input, ...others] = graph.inputs;
    if (!input || others.length > 0) {
      throw this.error(`expected one image input, found ${graph.inputs.length} (${graph.inputs.map((i) => i.name).join(", ")})`);
    }
    this.inputName = input.name;
  }

  error(message: string): ModelFormatError {
    return new ModelFormatError(`${this.graph.source}: ${message}`);
  }

  isConstant(tensor: string): boolean {
    return this.graph.initializers.has(tensor) || this.producer.get(tensor)?.opType === "Constant";
  }

  /** The initializer or Constant value of a tensor, or undefined when it is computed. */
  constantOf(tensor: string): OnnxTensor | undefined {
    const initializer = this.graph.initializers.get(tensor);
    if (initializer) return initializer;
    const node = this.producer.get(tensor);
    if (node?.opType !== "Constant") return undefined;
    const value = tensorAttribute(node, "value", this.graph.source);
    if (value) return value;
    const floats = node.attributes.get("value_float") ?? node.attributes.get("value_floats");
    if (floats?.type === "float") return { kind: "float", name: tensor, dims: [], data: Float32Array.of(floats.value) };
    if (floats?.type === "floats") return { kind: "float", name: tensor, dims: [floats.value.length], data: Float32Array.from(floats.value) };
    const ints = node.attributes.get("value_int") ?? node.attributes.get("value_ints");
    if (ints?.type === "int") return { kind: "int", name: tensor, dims: [], data: [ints.value] };
    if (ints?.type === "ints") return { kind: "int", name: tensor, dims: [ints.value.length], data: ints.value };
    throw this.error(`Constant node ${describeNode(node)} has no value this reader understands`);
  }

  floatConstant(tensor: string, role: string, node: OnnxNode): OnnxFloatTensor {
    const value = this.constantOf(tensor);
    if (value?.kind !== "float") {
      throw this.error(`${role} of ${describeNode(node)} must be a float initializer or Constant, found ${value ? "integers" : "a computed tensor"}`);
    }
    return value;
  }

  /** The inputs that carry activations, as opposed to weights, shapes and indices. */
  dataInputs(node: OnnxNode): string[] {
    if (node.opType === "Concat" || ELEMENTWISE.has(node.opType)) {
      return node.inputs.filter((input) => input !== "" && !this.isConstant(input));
    }
    const first = node.inputs[0];
    return first && !this.isConstant(first) ? [first] : [];
  }

  /**
   * The chain of steps that ends in `tensor`, walking backwards until `stop` says so. A Concat
   * becomes one step whose branches are walked back to the tensor they fork from (the first
   * tensor read by more than one node); all branches must fork from the same tensor.
   */
  walkBack(tensor: string, stop: (tensor: string) => boolean, budget = { steps: this.graph.nodes.length * 2 }): { steps: Step[]; start: string } {
    const steps: Step[] = [];
    let current = tensor;
    while (!stop(current)) {
      if (--budget.steps < 0) throw this.error("the graph has a cycle");
      const node = this.producer.get(current);
      if (!node) {
        throw this.error(`tensor "${current}" is read but no node produces it and it is neither the input nor an initializer`);
      }
      const inputs = this.dataInputs(node);
      if (node.opType === "Concat") {
        const walked = inputs.map((input) =>
          this.walkBack(input, (t) => t === this.inputName || (this.consumers.get(t) ?? 0) > 1, budget),
        );
        const forks = new Set(walked.map((w) => w.start));
        const [fork] = forks;
        if (fork === undefined || forks.size > 1) {
          throw this.error(`the branches of Concat ${describeNode(node)} start from ${forks.size} different tensors; an inception module's branches share one input`);
        }
        steps.push({ kind: "concat", node, branches: walked.map((w) => w.steps) });
        current = fork;
        continue;
      }
      if (inputs.length !== 1 || !inputs[0]) {
        throw this.error(`${describeNode(node)} has ${inputs.length} activation inputs; a GoogLeNet chain has exactly one per node (residual or multi-input graphs are not GoogLeNet)`);
      }
      steps.push({ kind: "node", node });
      current = inputs[0];
    }
    return { steps: steps.reverse(), start: current };
  }
}

function describeNode(node: OnnxNode): string {
  return `${node.opType} "${node.name || node.outputs[0] || "?"}"`;
}

// ---------------------------------------------------------------------------------------------
// The input affine (torchvision's transform_input), evaluated symbolically

interface ChannelAffine {
  readonly source: number;
  readonly scale: number;
  readonly offset: number;
}

type SymbolicValue =
  | { readonly kind: "const"; readonly dims: readonly number[]; readonly data: readonly number[] }
  /** A function of the input: per channel an affine of one input channel; rank 4 with a channel axis, or rank 3 after a scalar Gather. */
  | { readonly kind: "affine"; readonly channels: readonly ChannelAffine[]; readonly channelAxis: boolean };

const MAX_INT32 = 2 ** 31 - 1;

function evaluateInputAffine(index: GraphIndex, tensor: string, channels: number): InputAffine | undefined {
  const source = index.graph.source;
  const memo = new Map<string, SymbolicValue>();
  const fail = (node: OnnxNode, why: string): never => {
    throw index.error(`${describeNode(node)} before the first convolution: ${why}; only a per-channel affine of the input (Gather, Slice, Unsqueeze, Mul, Add, Sub, Div, Concat) may come before conv1`);
  };
  const constOf = (name: string): SymbolicValue & { kind: "const" } => {
    const value = index.constantOf(name);
    if (!value) throw index.error(`tensor "${name}" before the first convolution is neither constant nor derived from the input`);
    return { kind: "const", dims: value.dims, data: Array.from(value.data) };
  };
  const channelAxisOf = (axis: number, rank: number, node: OnnxNode): number => {
    const normalised = axis < 0 ? axis + rank : axis;
    if (normalised < 0 || normalised >= rank) fail(node, `axis ${axis} is out of range`);
    return normalised;
  };
  const intsOf = (node: OnnxNode, position: number, attributeName: string): readonly number[] | undefined => {
    const name = node.inputs[position];
    if (name) return constOf(name).data;
    return intsAttribute(node, attributeName, source);
  };
  const evaluate = (name: string): SymbolicValue => {
    const known = memo.get(name);
    if (known) return known;
    let value: SymbolicValue;
    if (name === index.inputName) {
      value = {
        kind: "affine",
        channelAxis: true,
        channels: Array.from({ length: channels }, (_, c) => ({ source: c, scale: 1, offset: 0 })),
      };
    } else if (index.isConstant(name)) {
      value = constOf(name);
    } else {
      const node = index.producer.get(name);
      if (!node) throw index.error(`tensor "${name}" is read but no node produces it`);
      value = evaluateNode(node);
    }
    memo.set(name, value);
    return value;
  };
  const evaluateNode = (node: OnnxNode): SymbolicValue => {
    const args = node.inputs.map((input) => (input ? evaluate(input) : undefined));
    const [x] = args;
    if (x?.kind !== "affine" && node.opType !== "Concat" && !ELEMENTWISE.has(node.opType)) {
      fail(node, "its input is not derived from the image");
    }
    switch (node.opType) {
      case "Identity":
      case "Cast":
        return x as SymbolicValue;
      case "Gather": {
        const affine = x as SymbolicValue & { kind: "affine" };
        const axis = channelAxisOf(intAttribute(node, "axis", source) ?? 0, affine.channelAxis ? 4 : 3, node);
        if (!affine.channelAxis || axis !== 1) fail(node, "it gathers along an axis other than channels");
        const indices = constOf(node.inputs[1] ?? "");
        const picked = indices.data.map((i) => affine.channels[i < 0 ? i + affine.channels.length : i]);
        if (picked.some((c) => c === undefined)) fail(node, `index out of range [${indices.data.join(", ")}]`);
        return { kind: "affine", channels: picked as ChannelAffine[], channelAxis: indices.dims.length > 0 };
      }
      case "Slice": {
        const affine = x as SymbolicValue & { kind: "affine" };
        const starts = intsOf(node, 1, "starts") ?? [];
        const ends = intsOf(node, 2, "ends") ?? [];
        const rank = affine.channelAxis ? 4 : 3;
        const axes = intsOf(node, 3, "axes") ?? starts.map((_, i) => i);
        const stepsList = intsOf(node, 4, "steps") ?? starts.map(() => 1);
        let picked = affine.channels;
        axes.forEach((rawAxis, i) => {
          const axis = channelAxisOf(rawAxis, rank, node);
          const start = starts[i] ?? 0;
          const end = ends[i] ?? MAX_INT32;
          const step = stepsList[i] ?? 1;
          if (axis === 1 && affine.channelAxis) {
            const n = picked.length;
            const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + n : v, lo), hi);
            const from = step > 0 ? clamp(start, 0, n) : clamp(start, -1, n - 1);
            const to = step > 0 ? clamp(end, 0, n) : clamp(end, -1, n - 1);
            const next: ChannelAffine[] = [];
            for (let c = from; step > 0 ? c < to : c > to; c += step) next.push(picked[c] as ChannelAffine);
            picked = next;
          } else if (!(start === 0 && end >= MAX_INT32 && step === 1)) {
            fail(node, "it slices a spatial or batch axis");
          }
        });
        return { kind: "affine", channels: picked, channelAxis: affine.channelAxis };
      }
      case "Unsqueeze": {
        const affine = x as SymbolicValue & { kind: "affine" };
        const axes = intsOf(node, 1, "axes") ?? [];
        if (affine.channelAxis || axes.length !== 1 || channelAxisOf(axes[0] ?? 0, 4, node) !== 1) {
          fail(node, "it adds an axis other than the channel axis");
        }
        return { kind: "affine", channels: affine.channels, channelAxis: true };
      }
      case "Concat": {
        const parts = args.filter((a): a is SymbolicValue => a !== undefined);
        if (parts.some((p) => p.kind !== "affine" || !p.channelAxis)) fail(node, "it joins something other than image channels");
        const axis = channelAxisOf(intAttribute(node, "axis", source) ?? 1, 4, node);
        if (axis !== 1) fail(node, "it concatenates along an axis other than channels");
        return {
          kind: "affine",
          channelAxis: true,
          channels: parts.flatMap((p) => (p.kind === "affine" ? p.channels : [])),
        };
      }
      case "Add":
      case "Sub":
      case "Mul":
      case "Div": {
        const [a, b] = args;
        const affineFirst = a?.kind === "affine";
        const affine = (affineFirst ? a : b) as SymbolicValue;
        const constant = (affineFirst ? b : a) as SymbolicValue;
        if (affine?.kind !== "affine" || constant?.kind !== "const") fail(node, "it combines two image-derived tensors");
        const affineValue = affine as SymbolicValue & { kind: "affine" };
        const k = perChannel(constant as SymbolicValue & { kind: "const" }, affineValue, node, fail);
        return {
          kind: "affine",
          channelAxis: affineValue.channelAxis,
          channels: affineValue.channels.map((ch, c) => {
            const v = k[c] as number;
            switch (node.opType) {
              case "Add": return { ...ch, offset: ch.offset + v };
              case "Mul": return { ...ch, scale: ch.scale * v, offset: ch.offset * v };
              case "Sub": return affineFirst ? { ...ch, offset: ch.offset - v } : { ...ch, scale: -ch.scale, offset: v - ch.offset };
              default:
                if (!affineFirst) fail(node, "it divides by the image");
                return { ...ch, scale: ch.scale / v, offset: ch.offset / v };
            }
          }),
        };
      }
      default:
        return fail(node, "this operator is not a per-channel affine");
    }
  };
  const result = evaluate(tensor);
  if (result.kind !== "affine" || !result.channelAxis || result.channels.length !== 3) {
    throw index.error(`the input of the first convolution is not a 3-channel image (found ${result.kind === "affine" ? result.channels.length : 0} channels)`);
  }
  const [c0, c1, c2] = result.channels as [ChannelAffine, ChannelAffine, ChannelAffine];
  const identity = result.channels.every((ch, c) => ch.source === c && ch.scale === 1 && ch.offset === 0);
  if (identity) return undefined;
  return {
    source: [c0.source, c1.source, c2.source],
    scale: [c0.scale, c1.scale, c2.scale],
    offset: [c0.offset, c1.offset, c2.offset],
  };
}

/** A constant broadcast against [N, C, H, W] (or [N, H, W]) as one value per channel. */
function perChannel(
  constant: { readonly dims: readonly number[]; readonly data: readonly number[] },
  affine: { readonly channels: readonly ChannelAffine[]; readonly channelAxis: boolean },
  node: OnnxNode,
  fail: (node: OnnxNode, why: string) => never,
): number[] {
  const n = affine.channels.length;
  if (constant.data.length === 1) return Array.from({ length: n }, () => constant.data[0] as number);
  const rank = affine.channelAxis ? 4 : 3;
  const padded = [...Array.from({ length: Math.max(0, rank - constant.dims.length) }, () => 1), ...constant.dims];
  const varying = padded.map((d, axis) => (d !== 1 ? axis : -1)).filter((axis) => axis >= 0);
  if (!affine.channelAxis || padded.length !== 4 || varying.length !== 1 || varying[0] !== 1 || padded[1] !== n) {
    fail(node, `its constant of shape [${constant.dims.join(", ")}] is not per-channel`);
  }
  return [...constant.data];
}

// ---------------------------------------------------------------------------------------------
// Layers

function spatial(node: OnnxNode, name: string, fallback: number, source: string, index: GraphIndex): [number, number] {
  const values = intsAttribute(node, name, source);
  if (!values) return [fallback, fallback];
  if (values.length !== 2) throw index.error(`${describeNode(node)}: ${name} has ${values.length} values, expected 2 (a 2-D image network)`);
  return [values[0] as number, values[1] as number];
}

function padsOf(node: OnnxNode, index: GraphIndex): Pads {
  const source = index.graph.source;
  const autoPad = stringAttribute(node, "auto_pad", source) ?? "NOTSET";
  if (autoPad !== "NOTSET" && autoPad !== "VALID") {
    throw index.error(`${describeNode(node)}: auto_pad ${autoPad} is not supported; use explicit pads (NOTSET) or VALID`);
  }
  const pads = intsAttribute(node, "pads", source) ?? [0, 0, 0, 0];
  if (autoPad === "VALID" || pads.length === 0) return [0, 0, 0, 0];
  if (pads.length !== 4) throw index.error(`${describeNode(node)}: pads has ${pads.length} values, expected 4`);
  return [pads[0], pads[1], pads[2], pads[3]] as unknown as Pads;
}

function checkUnitDilations(node: OnnxNode, index: GraphIndex): void {
  const dilations = intsAttribute(node, "dilations", index.graph.source);
  if (dilations && dilations.some((d) => d !== 1)) {
    throw index.error(`${describeNode(node)}: dilations [${dilations.join(", ")}] are not GoogLeNet's (all 1)`);
  }
}

function convWeights(conv: OnnxNode, batchNorm: OnnxNode | undefined, index: GraphIndex): ConvWeights {
  const source = index.graph.source;
  checkUnitDilations(conv, index);
  const group = intAttribute(conv, "group", source) ?? 1;
  if (group !== 1) throw index.error(`${describeNode(conv)}: group ${group} (grouped convolutions are not GoogLeNet's)`);
  const w = index.floatConstant(conv.inputs[1] ?? "", "the weight", conv);
  if (w.dims.length !== 4) throw index.error(`${describeNode(conv)}: weight has dims [${w.dims.join(", ")}], expected [outC, inC, kh, kw]`);
  const [outC, inC, kh, kw] = w.dims as [number, number, number, number];
  const kernelShape = intsAttribute(conv, "kernel_shape", source);
  if (kernelShape && (kernelShape[0] !== kh || kernelShape[1] !== kw)) {
    throw index.error(`${describeNode(conv)}: kernel_shape [${kernelShape.join(", ")}] disagrees with its weight dims [${w.dims.join(", ")}]`);
  }
  const biasName = conv.inputs[2];
  const bias = new Float64Array(outC);
  if (biasName) {
    const b = index.floatConstant(biasName, "the bias", conv);
    if (b.data.length !== outC) throw index.error(`${describeNode(conv)}: bias has ${b.data.length} values for ${outC} output channels`);
    bias.set(b.data);
  }
  const factor = new Float64Array(outC).fill(1);
  if (batchNorm) {
    // Folding BatchNormalization into the conv is exact in real arithmetic; doing it in float64
    // keeps the float32 result within rounding of what onnxruntime computes with the BN node.
    const [scale, shift, mean, variance] = [1, 2, 3, 4].map((i) => index.floatConstant(batchNorm.inputs[i] ?? "", `BatchNormalization input ${i}`, batchNorm));
    const epsilon = floatAttribute(batchNorm, "epsilon", source) ?? 1e-5;
    for (let o = 0; o < outC; o++) {
      const s = (scale?.data[o] ?? NaN) / Math.sqrt((variance?.data[o] ?? NaN) + epsilon);
      factor[o] = s;
      bias[o] = ((bias[o] as number) - (mean?.data[o] ?? NaN)) * s + (shift?.data[o] ?? NaN);
    }
    if (bias.some((v) => Number.isNaN(v))) throw index.error(`${describeNode(batchNorm)}: parameters do not have ${outC} values each`);
  }
  // ONNX keeps [outC, inC, kh, kw]; tfjs wants [kh, kw, inC, outC].
  const kernel = new Float32Array(w.data.length);
  for (let o = 0; o < outC; o++) {
    const f = factor[o] as number;
    for (let i = 0; i < inC; i++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          kernel[((y * kw + x) * inC + i) * outC + o] = (w.data[((o * inC + i) * kh + y) * kw + x] as number) * f;
        }
      }
    }
  }
  return {
    shape: [kh, kw, inC, outC],
    kernel,
    bias: Float32Array.from(bias),
    strides: spatial(conv, "strides", 1, source, index),
    pads: padsOf(conv, index),
  };
}

function poolSpec(node: OnnxNode, index: GraphIndex): PoolSpec {
  const source = index.graph.source;
  checkUnitDilations(node, index);
  const kernel = spatial(node, "kernel_shape", 0, source, index);
  if (kernel[0] === 0) throw index.error(`${describeNode(node)} has no kernel_shape`);
  return {
    kernel,
    strides: spatial(node, "strides", 1, source, index),
    pads: padsOf(node, index),
    ceilMode: (intAttribute(node, "ceil_mode", source) ?? 0) === 1,
  };
}

/**
 * Output size of a pool or conv along one axis, as ONNX and Caffe define it. With ceil mode a
 * last window that would start inside the end padding only is dropped (PyTorch's rule, which
 * onnxruntime follows).
 */
export function pooledSize(size: number, kernel: number, stride: number, padBegin: number, padEnd: number, ceilMode: boolean): number {
  const span = size + padBegin + padEnd - kernel;
  let out = (ceilMode ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  if (ceilMode && (out - 1) * stride >= size + padBegin) out -= 1;
  return out;
}

/** Channels and spatial size flowing along the chain, so each layer is checked as it is read. */
interface Flow {
  channels: number;
  size: number;
}

class ChainReader {
  private position = 0;

  constructor(
    private readonly steps: readonly Step[],
    private readonly index: GraphIndex,
    private readonly where: string,
  ) {}

  get done(): boolean {
    return this.position >= this.steps.length;
  }

  peek(): Step | undefined {
    return this.steps[this.position];
  }

  peekOp(): string | undefined {
    const step = this.peek();
    return step?.kind === "node" ? step.node.opType : step ? "Concat" : undefined;
  }

  next(): Step {
    const step = this.steps[this.position++];
    if (!step) throw this.index.error(`${this.where}: the graph ends early`);
    return step;
  }

  expect(opType: string, what: string): OnnxNode {
    const step = this.next();
    if (step.kind !== "node" || step.node.opType !== opType) {
      throw this.index.error(`${this.where}: expected ${opType} (${what}), found ${step.kind === "node" ? describeNode(step.node) : `Concat ${describeNode(step.node)}`}`);
    }
    return step.node;
  }

  optional(opType: string): OnnxNode | undefined {
    return this.peekOp() === opType ? (this.next() as { node: OnnxNode }).node : undefined;
  }

  /** Conv, an optional BatchNormalization, Relu. */
  conv(flow: Flow, what: string, kernel?: number): ConvWeights {
    const conv = this.expect("Conv", what);
    const batchNorm = this.optional("BatchNormalization");
    this.expect("Relu", `the ReLU after ${what}`);
    const weights = convWeights(conv, batchNorm, this.index);
    const [kh, kw, inC, outC] = weights.shape;
    if (inC !== flow.channels) {
      throw this.index.error(`${this.where}: ${what} ${describeNode(conv)} reads ${inC} channels but ${flow.channels} arrive`);
    }
    if (kernel !== undefined && (kh !== kernel || kw !== kernel)) {
      throw this.index.error(`${this.where}: ${what} ${describeNode(conv)} is ${kh}x${kw}, expected ${kernel}x${kernel}`);
    }
    flow.channels = outC;
    flow.size = pooledSize(flow.size, kh, weights.strides[0], weights.pads[0], weights.pads[2], false);
    return weights;
  }

  pool(flow: Flow, what: string): PoolSpec {
    const spec = poolSpec(this.expect("MaxPool", what), this.index);
    flow.size = pooledSize(flow.size, spec.kernel[0], spec.strides[0], spec.pads[0], spec.pads[2], spec.ceilMode);
    return spec;
  }

  lrn(): LrnSpec | undefined {
    const node = this.optional("LRN");
    if (!node) return undefined;
    const source = this.index.graph.source;
    const size = intAttribute(node, "size", source);
    if (size === undefined) throw this.index.error(`${describeNode(node)} has no size`);
    return {
      size,
      alpha: floatAttribute(node, "alpha", source) ?? 1e-4,
      beta: floatAttribute(node, "beta", source) ?? 0.75,
      bias: floatAttribute(node, "bias", source) ?? 1,
    };
  }
}

function readInception(step: Step & { kind: "concat" }, name: InceptionName, flow: Flow, index: GraphIndex): InceptionWeights {
  const where = `inception ${name} (Concat ${describeNode(step.node)})`;
  const axis = intAttribute(step.node, "axis", index.graph.source);
  if (axis !== 1 && axis !== -3) throw index.error(`${where}: concatenates along axis ${String(axis)}, expected the channel axis 1`);
  const singles: { position: number; conv: ConvWeights }[] = [];
  const doubles: { position: number; reduce: ConvWeights; conv: ConvWeights }[] = [];
  const pools: { position: number; pool: PoolSpec; conv: ConvWeights }[] = [];
  step.branches.forEach((branch, position) => {
    const reader = new ChainReader(branch, index, `${where}, branch ${position + 1}`);
    const branchFlow = { ...flow };
    if (reader.peekOp() === "MaxPool") {
      const pool = reader.pool(branchFlow, "the branch's 3x3 max pool");
      pools.push({ position, pool, conv: reader.conv(branchFlow, "the pool projection", 1) });
    } else {
      const first = reader.conv(branchFlow, "a 1x1 convolution", 1);
      if (reader.done) singles.push({ position, conv: first });
      else doubles.push({ position, reduce: first, conv: reader.conv(branchFlow, "the convolution after the reduce") });
    }
    if (!reader.done) throw index.error(`${where}, branch ${position + 1}: unexpected ${reader.peekOp() ?? "?"} after the branch's last ReLU`);
    if (branchFlow.size !== flow.size) {
      throw index.error(`${where}, branch ${position + 1}: outputs ${branchFlow.size}x${branchFlow.size}, the module's input is ${flow.size}x${flow.size}`);
    }
  });
  const [single] = singles;
  const [pool] = pools;
  if (singles.length !== 1 || doubles.length !== 2 || pools.length !== 1 || !single || !pool) {
    throw index.error(`${where}: expected branches 1x1, 1x1->3x3, 1x1->5x5 and maxpool->1x1, found ${singles.length} single-conv, ${doubles.length} two-conv and ${pools.length} pool branches`);
  }
  // The paper's 5x5 branch is the one with the larger kernel; torchvision made both 3x3, and
  // then the Concat order (3x3 before "5x5", as in both reference graphs) tells them apart.
  const [a, b] = doubles as [(typeof doubles)[number], (typeof doubles)[number]];
  const [three, five] = b.conv.shape[0] < a.conv.shape[0] ? [b, a] : [a, b];
  const order: BranchName[] = [];
  order[single.position] = "1x1";
  order[three.position] = "3x3";
  order[five.position] = "5x5";
  order[pool.position] = "pool";
  flow.channels = [single.conv, three.conv, five.conv, pool.conv].reduce((sum, c) => sum + c.shape[3], 0);
  return {
    name,
    conv1x1: single.conv,
    conv3x3Reduce: three.reduce,
    conv3x3: three.conv,
    conv5x5Reduce: five.reduce,
    conv5x5: five.conv,
    pool: pool.pool,
    poolProj: pool.conv,
    concatOrder: order,
  };
}

function readHead(reader: ChainReader, flow: Flow, index: GraphIndex): Pick<GoogLeNetWeights, "classifier" | "outputIsSoftmax"> {
  const where = "classifier head";
  const pooling = reader.next();
  const poolOp = pooling.kind === "node" ? pooling.node.opType : "Concat";
  if (pooling.kind === "node" && poolOp === "AveragePool") {
    const spec = poolSpec(pooling.node, index);
    if (spec.kernel[0] !== flow.size || spec.kernel[1] !== flow.size || spec.pads.some((p) => p !== 0)) {
      throw index.error(`${where}: AveragePool ${spec.kernel.join("x")} over a ${flow.size}x${flow.size} map is not a global average pool`);
    }
  } else if (poolOp !== "GlobalAveragePool") {
    throw index.error(`${where}: expected AveragePool ${flow.size}x${flow.size} or GlobalAveragePool after inception 5b, found ${pooling.kind === "node" ? describeNode(pooling.node) : "Concat"}`);
  }
  reader.optional("Dropout");
  const flatten = reader.next();
  if (flatten.kind !== "node" || !["Flatten", "Reshape", "Squeeze"].includes(flatten.node.opType)) {
    throw index.error(`${where}: expected Flatten or Reshape after the average pool, found ${flatten.kind === "node" ? describeNode(flatten.node) : "Concat"}`);
  }
  if (flatten.node.opType === "Reshape") {
    const shape = index.constantOf(flatten.node.inputs[1] ?? "");
    const dims = shape?.kind === "int" ? shape.data : [];
    if (dims.length !== 2 || !(dims[1] === -1 || dims[1] === flow.channels)) {
      throw index.error(`${where}: Reshape ${describeNode(flatten.node)} to [${dims.join(", ")}] is not a flatten to [N, ${flow.channels}]`);
    }
  }
  const linear = reader.next();
  if (linear.kind !== "node" || (linear.node.opType !== "Gemm" && linear.node.opType !== "MatMul")) {
    throw index.error(`${where}: expected Gemm (or MatMul and Add) after the flatten, found ${linear.kind === "node" ? describeNode(linear.node) : "Concat"}`);
  }
  const source = index.graph.source;
  let weight = index.floatConstant(linear.node.inputs[1] ?? "", "the classifier weight", linear.node);
  let transposed = false;
  let alpha = 1;
  let beta = 1;
  let biasTensor: OnnxFloatTensor | undefined;
  if (linear.node.opType === "Gemm") {
    if ((intAttribute(linear.node, "transA", source) ?? 0) !== 0) throw index.error(`${where}: Gemm with transA is not a classifier`);
    transposed = (intAttribute(linear.node, "transB", source) ?? 0) === 1;
    alpha = floatAttribute(linear.node, "alpha", source) ?? 1;
    beta = floatAttribute(linear.node, "beta", source) ?? 1;
    if (linear.node.inputs[2]) biasTensor = index.floatConstant(linear.node.inputs[2], "the classifier bias", linear.node);
  } else {
    const add = reader.expect("Add", "the classifier bias after MatMul");
    const biasName = add.inputs.find((input) => index.isConstant(input));
    biasTensor = index.floatConstant(biasName ?? "", "the classifier bias", add);
  }
  if (weight.dims.length !== 2) throw index.error(`${where}: classifier weight has dims [${weight.dims.join(", ")}], expected 2`);
  const [rows, cols] = weight.dims as [number, number];
  const [inFeatures, outFeatures] = transposed ? [cols, rows] : [rows, cols];
  if (inFeatures !== flow.channels) throw index.error(`${where}: classifier reads ${inFeatures} features but inception 5b gives ${flow.channels}`);
  const weights = new Float32Array(inFeatures * outFeatures);
  for (let i = 0; i < inFeatures; i++) {
    for (let o = 0; o < outFeatures; o++) {
      weights[i * outFeatures + o] = alpha * (weight.data[transposed ? o * inFeatures + i : i * outFeatures + o] as number);
    }
  }
  weight = { ...weight, data: weights };
  const bias = new Float32Array(outFeatures);
  if (biasTensor) {
    if (biasTensor.data.length !== outFeatures) throw index.error(`${where}: classifier bias has ${biasTensor.data.length} values for ${outFeatures} outputs`);
    for (let o = 0; o < outFeatures; o++) bias[o] = beta * (biasTensor.data[o] as number);
  }
  const softmax = reader.optional("Softmax");
  if (softmax) {
    const axis = intAttribute(softmax, "axis", source) ?? (index.graph.opset >= 13 ? -1 : 1);
    if (axis !== 1 && axis !== -1) throw index.error(`${where}: Softmax along axis ${axis}, expected the class axis`);
  }
  if (!reader.done) throw index.error(`${where}: unexpected ${reader.peekOp() ?? "?"} after the classifier`);
  return { classifier: { shape: [inFeatures, outFeatures], weights: weight.data, bias }, outputIsSoftmax: softmax !== undefined };
}

/** The main chain from the graph input to its (first) output, or a ModelFormatError. */
function mainChain(index: GraphIndex): Step[] {
  const output = index.graph.outputs[0];
  if (!output) throw index.error("the graph has no output");
  return index.walkBack(output.name, (t) => t === index.inputName).steps;
}

function countModules(steps: readonly Step[]): number {
  return steps.filter((s) => s.kind === "concat" && s.branches.length === 4).length;
}

/**
 * Recognises GoogLeNet in an ONNX graph and returns its weights as plain data, or throws
 * ModelFormatError naming the file and the first structural mismatch.
 */
export function recogniseGoogLeNet(graph: OnnxGraph): GoogLeNetWeights {
  const index = new GraphIndex(graph);
  const steps = mainChain(index);
  const firstConv = steps.findIndex((s) => s.kind === "node" && s.node.opType === "Conv");
  const modules = countModules(steps.slice(Math.max(firstConv, 0)));
  if (firstConv < 0 || modules !== INCEPTION_NAMES.length) {
    throw index.error(`expected ${INCEPTION_NAMES.length} inception modules (Concat of 4 branches), found ${firstConv < 0 ? 0 : modules}`);
  }
  const input = graph.inputs[0];
  const shape = input?.shape ?? [];
  const inputChannels = typeof shape[1] === "number" ? shape[1] : 3;
  const inputSize = typeof shape[2] === "number" ? shape[2] : 224;
  if (inputChannels !== 3 || (typeof shape[3] === "number" && shape[3] !== inputSize)) {
    throw index.error(`input "${input?.name}" has shape [${shape.join(", ")}], expected [N, 3, H, H]`);
  }
  const conv1Node = (steps[firstConv] as { node: OnnxNode }).node;
  const inputAffine = evaluateInputAffine(index, conv1Node.inputs[0] ?? "", inputChannels);

  const reader = new ChainReader(steps.slice(firstConv), index, "stem");
  const flow: Flow = { channels: inputChannels, size: inputSize };
  const conv1 = reader.conv(flow, "conv1 7x7/2", 7);
  const pool1 = reader.pool(flow, "pool1 3x3/2");
  const lrn1 = reader.lrn();
  const conv2Reduce = reader.conv(flow, "conv2 1x1 reduce", 1);
  const conv2 = reader.conv(flow, "conv2 3x3", 3);
  const lrn2 = reader.lrn();
  const pool2 = reader.pool(flow, "pool2 3x3/2");

  const inception: Partial<Record<InceptionName, InceptionWeights>> = {};
  const between: PoolSpec[] = [];
  for (const [i, name] of INCEPTION_NAMES.entries()) {
    if (name === "4a" || name === "5a") between.push(reader.pool(flow, `the max pool before inception ${name}`));
    const step = reader.next();
    if (step.kind !== "concat" || step.branches.length !== 4) {
      throw index.error(`inception ${name}: expected module ${i + 1} of ${INCEPTION_NAMES.length} (a Concat of 4 branches), found ${step.kind === "node" ? describeNode(step.node) : `a Concat of ${step.branches.length}`}`);
    }
    inception[name] = readInception(step, name, flow, index);
  }
  const head = readHead(reader, flow, index);
  const [pool3, pool4] = between as [PoolSpec, PoolSpec];

  // The flavour decides the input convention, so every structural sign must agree on it.
  const fiveKernels = new Set(INCEPTION_NAMES.map((n) => (inception[n] as InceptionWeights).conv5x5.shape[0]));
  const signs = {
    bvlc: [fiveKernels.size === 1 && fiveKernels.has(5), lrn1 !== undefined && lrn2 !== undefined, pool4.kernel[0] === 3],
    torchvision: [fiveKernels.size === 1 && fiveKernels.has(3), lrn1 === undefined && lrn2 === undefined, pool4.kernel[0] === 2],
  };
  const flavour: Flavour | undefined = signs.bvlc.every(Boolean) ? "bvlc" : signs.torchvision.every(Boolean) ? "torchvision" : undefined;
  if (!flavour) {
    throw index.error(
      `a GoogLeNet of neither known flavour: "5x5" branch kernels ${[...fiveKernels].join("/")}, ` +
        `LRN ${lrn1 ? "present" : "absent"}, pool before 5a ${pool4.kernel.join("x")}; ` +
        `expected bvlc (5x5, LRN, 3x3 pool) or torchvision (3x3, no LRN, 2x2 pool)`,
    );
  }
  return {
    source: graph.source,
    flavour,
    inputSize,
    ...(inputAffine ? { inputAffine } : {}),
    conv1,
    pool1,
    ...(lrn1 ? { lrn1 } : {}),
    conv2Reduce,
    conv2,
    ...(lrn2 ? { lrn2 } : {}),
    pool2,
    inception: inception as Record<InceptionName, InceptionWeights>,
    pool3,
    pool4,
    ...head,
  };
}

/** Reads ONNX bytes and recognises GoogLeNet: the one call an engine needs. */
export function loadGoogLeNetWeights(bytes: Uint8Array, source: string): GoogLeNetWeights {
  return recogniseGoogLeNet(readOnnxModel(bytes, source));
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

/**
 * Cheap facts about any ONNX classifier for engines that run it as it is: never throws for an
 * unknown structure (flavour is then undefined with the reason), only for unreadable bytes.
 */
export function describeOnnxModel(bytes: Uint8Array, source: string): OnnxModelDescription {
  const graph = readOnnxModel(bytes, source);
  const input = graph.inputs[0];
  const output = graph.outputs[0];
  const producer = output ? graph.nodes.find((n) => n.outputs.includes(output.name)) : undefined;
  const last = output?.shape[output.shape.length - 1];
  let flavour: Flavour | undefined;
  let unrecognisedReason: string | undefined;
  try {
    flavour = recogniseGoogLeNet(graph).flavour;
  } catch (error) {
    if (!(error instanceof ModelFormatError)) throw error;
    unrecognisedReason = error.message;
  }
  return {
    inputName: input?.name ?? "",
    inputShape: input?.shape ?? [],
    outputName: output?.name ?? "",
    outputSize: typeof last === "number" ? last : undefined,
    softmaxed: producer?.opType === "Softmax",
    flavour,
    ...(unrecognisedReason ? { unrecognisedReason } : {}),
  };
}

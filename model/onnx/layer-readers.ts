import type { BranchName, ConvWeights, GoogLeNetWeights, InceptionName, InceptionWeights, LrnSpec, Pads, PoolSpec } from "./googlenet-weights.js";
import { describeNode, type GraphIndex, type Step } from "./graph-index.js";
import { floatAttribute, intAttribute, intsAttribute, stringAttribute, type OnnxFloatTensor, type OnnxNode } from "./read-onnx.js";

/**
 * Readers for GoogLeNet's layers along the main chain: each conv (with any BatchNormalization
 * after it folded in) and pool is checked against the channels and size flowing into it, an
 * inception module's four branches are told apart by shape, and the head by its operators.
 */

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
export interface Flow {
  channels: number;
  size: number;
}

export class ChainReader {
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

export function readInception(step: Step & { kind: "concat" }, name: InceptionName, flow: Flow, index: GraphIndex): InceptionWeights {
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

export function readHead(reader: ChainReader, flow: Flow, index: GraphIndex): Pick<GoogLeNetWeights, "classifier" | "outputIsSoftmax"> {
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

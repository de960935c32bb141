import onnxProto from "onnx-proto";
import { ModelFormatError } from "../../errors.js";
import { addInitializer, indexProtoGraph } from "./proto-graph.js";

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;

/** What `rewriteSlowNodes` changed, for the engine's log line. */
export interface RewriteReport {
  readonly bytes: Uint8Array;
  /** LRN nodes replaced by their exact equivalent. */
  readonly lrnRewritten: number;
  /** LRN nodes left alone, with the reason (their channel count could not be traced). */
  readonly lrnKept: readonly string[];
  /** The tensors of each rewritten LRN, for the layout edit of model/ort/graph-edits/layout.ts. */
  readonly lrnChains: readonly LrnChain[];
}

/**
 * The tensors one rewritten LRN reads and writes: `input` (x), `base` (bias + alpha/size * S,
 * the window sum's output), the elementwise steps after it and the LRN's own `output`. Every
 * step is elementwise over tensors of x's shape (or a scalar), so it gives the same values on
 * any memory layout the operands share.
 */
export interface LrnChain {
  readonly input: string;
  readonly base: string;
  /** Tensors the power steps produce before the output, in order. */
  readonly steps: readonly string[];
  readonly output: string;
  readonly channels: number;
  /** The LRN's window: `base` = bias + alpha/size * (sum of x^2 over `size` channels). */
  readonly window: { readonly size: number; readonly alpha: number; readonly bias: number };
}

/** Ops that keep the channel count of their (first) input, so a trace may walk through them. */
const CHANNEL_PRESERVING = new Set([
  "Relu",
  "MaxPool",
  "AveragePool",
  "Dropout",
  "Identity",
  "BatchNormalization",
  "LRN",
  "Clip",
]);

/** The parts of one LRN node the rewrite needs. */
interface Lrn {
  readonly input: string;
  readonly output: string;
  readonly channels: number;
  readonly size: number;
  readonly alpha: number;
  readonly beta: number;
  readonly bias: number;
}

/**
 * Rewrites graph nodes that onnxruntime's CPU provider runs slowly into exact equivalents.
 *
 * Why: on the BVLC GoogLeNet, onnxruntime's LRN kernel takes more than half of the whole
 * network's time (measured: ~21 ms per crop with both LRNs, ~9.5 ms without them). LRN is
 * `x * (bias + alpha/size * S)^-beta` where S is the windowed channel sum of x^2; S is a fixed
 * 0/1 banded 1x1 convolution, which onnxruntime runs through its fast GEMM path (split over
 * two grouped convolutions where the channel count allows). The scale alpha/size is folded
 * into the band and the bias into the convolution's bias, and for beta 0.75 the power is two
 * square roots and two divisions, so the chain is Mul, Conv (Conv, Add), Sqrt, Div, Sqrt, Div.
 * The report's `lrnChains` name each chain's tensors for model/ort/graph-edits/layout.ts.
 * Other forms of the window sum and the power were measured slower and removed (their figures
 * are in docs/speed.md).
 *
 * @throws ModelFormatError when the bytes are not ONNX or an LRN lacks its size.
 */
export function rewriteSlowNodes(modelBytes: Uint8Array, source: string): RewriteReport {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(modelBytes);
  } catch (error) {
    throw new ModelFormatError(`${source}: not a readable ONNX file (${(error as Error).message})`, { cause: error });
  }
  const graph = model.graph;
  if (!graph?.node) throw new ModelFormatError(`${source}: ONNX file without a graph`);
  const nodes = graph.node as NodeProto[];
  const { producer: producers, initializerDims } = indexProtoGraph(graph);

  const channelsOf = (tensorName: string): number | undefined => {
    let current = producers.get(tensorName);
    for (let steps = 0; current && steps < 64; steps++) {
      if (current.opType === "Conv") {
        return initializerDims.get(current.input?.[1] ?? "")?.[0];
      }
      if (current.opType === "Concat") {
        let total = 0;
        for (const input of current.input ?? []) {
          const branch = channelsOf(input);
          if (branch === undefined) return undefined;
          total += branch;
        }
        return total;
      }
      if (!CHANNEL_PRESERVING.has(current.opType ?? "")) return undefined;
      current = producers.get(current.input?.[0] ?? "");
    }
    return undefined;
  };

  const usedNames = new Set<string>([...producers.keys(), ...initializerDims.keys()]);
  for (const node of nodes) if (node.name) usedNames.add(node.name);
  const freshName = (base: string): string => {
    let name = base;
    for (let i = 1; usedNames.has(name); i++) name = `${base}_${i}`;
    usedNames.add(name);
    return name;
  };
  const builder: Builder = { model, freshName };

  const rewritten: NodeProto[] = [];
  const kept: string[] = [];
  const chains: LrnChain[] = [];
  for (const node of nodes) {
    if (node.opType !== "LRN" || (node.domain ?? "") !== "") {
      rewritten.push(node);
      continue;
    }
    const input = node.input?.[0] ?? "";
    const output = node.output?.[0] ?? "";
    const channels = channelsOf(input);
    if (channels === undefined) {
      kept.push(`${node.name || output}: channel count not traceable to a Conv`);
      rewritten.push(node);
      continue;
    }
    const attribute = (name: string) => node.attribute?.find((a) => a.name === name);
    const size = Number(attribute("size")?.i ?? 0);
    if (!(size > 0)) throw new ModelFormatError(`${source}: LRN node "${node.name || output}" has no size attribute`);
    const lrn: Lrn = {
      input,
      output,
      channels,
      size,
      // ONNX defaults (operator LRN, opset 1..13).
      alpha: attribute("alpha")?.f ?? 1e-4,
      beta: attribute("beta")?.f ?? 0.75,
      bias: attribute("bias")?.f ?? 1,
    };
    const prefix = freshName(`${output || "lrn"}_rewritten`);
    const square = freshName(`${prefix}/square`);
    const base = freshName(`${prefix}/base`);
    const powerSteps = scaleByPower(lrn, base, prefix, builder);
    rewritten.push(
      { opType: "Mul", input: [input, input], output: [square], name: `${prefix}/mul_square` },
      ...groupedBandConvolutions(lrn, square, base, prefix, builder),
      ...powerSteps,
    );
    const steps = powerSteps.flatMap((step) => step.output ?? []).filter((name) => name !== output);
    chains.push({ input, base, steps, output, channels, window: { size, alpha: lrn.alpha, bias: lrn.bias } });
  }
  if (chains.length === 0) return { bytes: modelBytes, lrnRewritten: 0, lrnKept: kept, lrnChains: [] };
  graph.node = rewritten;
  return { bytes: onnx.ModelProto.encode(model).finish(), lrnRewritten: chains.length, lrnKept: kept, lrnChains: chains };
}

interface Builder {
  readonly model: onnxProto.onnx.ModelProto;
  freshName(base: string): string;
}

/** A float32 constant added to the graph under a name no tensor has yet. */
function constant(builder: Builder, name: string, dims: number[], values: Float32Array): string {
  return addInitializer(builder.model, builder.freshName(name), dims, values);
}

/**
 * base = bias + alpha/size * S through one 1x1 convolution: onnxruntime runs it as a GEMM, the
 * fastest kernel it has, and the Add of the bias is free as the convolution's own bias.
 */
function bandConvolution(lrn: Lrn, square: string, base: string, prefix: string, builder: Builder): NodeProto[] {
  const { channels, size, alpha, bias } = lrn;
  // ONNX LRN sums channels c - floor((size-1)/2) .. c + ceil((size-1)/2).
  const before = Math.floor((size - 1) / 2);
  const after = Math.ceil((size - 1) / 2);
  const band = new Float32Array(channels * channels);
  for (let out = 0; out < channels; out++) {
    for (let inp = Math.max(0, out - before); inp <= Math.min(channels - 1, out + after); inp++) {
      band[out * channels + inp] = alpha / size;
    }
  }
  const weight = constant(builder, `${prefix}/band`, [channels, channels, 1, 1], band);
  const biases = constant(builder, `${prefix}/bias`, [channels], new Float32Array(channels).fill(bias));
  return [
    {
      opType: "Conv",
      input: [square, weight, biases],
      output: [base],
      name: `${prefix}/conv_band`,
      attribute: [{ name: "kernel_shape", type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1] }],
    },
  ];
}

/**
 * Two group sizes for the band of an LRN over `channels`, or undefined when there is no such
 * pair. Both divide the channels and are multiples of 16 (onnxruntime converts a grouped
 * convolution to its blocked NCHWc form only when each group is a whole number of blocks, 8 or
 * 16 channels), and no multiple of one is a multiple of the other below `channels` (their
 * least common multiple is the channel count), so a window pair cut by a group boundary of
 * the first lies inside one group of the second: their greatest common divisor (at least 16)
 * must exceed the window. The pair with the fewest multiply-adds per value, the smaller first.
 */
export function bandGroupSizes(channels: number, size: number): [number, number] | undefined {
  const sizes: number[] = [];
  for (let groupSize = 16; groupSize < channels; groupSize += 16) if (channels % groupSize === 0) sizes.push(groupSize);
  let best: [number, number] | undefined;
  for (const first of sizes) {
    for (const second of sizes) {
      if (second <= first || leastCommonMultiple(first, second) !== channels || greatestCommonDivisor(first, second) < size) continue;
      if (!best || first + second < best[0] + best[1]) best = [first, second];
    }
  }
  return best;
}

function greatestCommonDivisor(a: number, b: number): number {
  return b === 0 ? a : greatestCommonDivisor(b, a % b);
}

function leastCommonMultiple(a: number, b: number): number {
  return (a / greatestCommonDivisor(a, b)) * b;
}

/**
 * base = bias + alpha/size * S as two grouped 1x1 convolutions added: the first (with the
 * bias) holds the band's entries inside its groups, the second the entries its group
 * boundaries cut, which lie inside the second's groups (see `bandGroupSizes`). onnxruntime
 * fuses the Add into the second convolution. Where no pair of group sizes exists, one band.
 */
function groupedBandConvolutions(lrn: Lrn, square: string, base: string, prefix: string, builder: Builder): NodeProto[] {
  const groupSizes = bandGroupSizes(lrn.channels, lrn.size);
  if (!groupSizes) return bandConvolution(lrn, square, base, prefix, builder);
  const [inner, across] = groupSizes;
  const insideInner = (out: number, inp: number) => Math.floor(out / inner) === Math.floor(inp / inner);
  const innerSum = builder.freshName(`${prefix}/band_inner`);
  const acrossSum = builder.freshName(`${prefix}/band_across`);
  return [
    groupedBand(lrn, square, innerSum, `${prefix}/conv_band_inner`, inner, insideInner, true, builder),
    groupedBand(lrn, square, acrossSum, `${prefix}/conv_band_across`, across, (out, inp) => !insideInner(out, inp), false, builder),
    { opType: "Add", input: [innerSum, acrossSum], output: [base], name: `${prefix}/add_bands` },
  ];
}

/** One grouped 1x1 convolution holding the band entries `owns` selects (all inside its groups). */
function groupedBand(
  lrn: Lrn,
  square: string,
  output: string,
  name: string,
  groupSize: number,
  owns: (out: number, inp: number) => boolean,
  withBias: boolean,
  builder: Builder,
): NodeProto {
  const { channels, size, alpha, bias } = lrn;
  const before = Math.floor((size - 1) / 2);
  const after = Math.ceil((size - 1) / 2);
  const weights = new Float32Array(channels * groupSize);
  for (let out = 0; out < channels; out++) {
    const groupStart = out - (out % groupSize);
    for (let inp = Math.max(groupStart, out - before); inp <= Math.min(groupStart + groupSize - 1, out + after); inp++) {
      if (owns(out, inp)) weights[out * groupSize + (inp - groupStart)] = alpha / size;
    }
  }
  const inputs = [square, constant(builder, `${name}/weights`, [channels, groupSize, 1, 1], weights)];
  if (withBias) inputs.push(constant(builder, `${name}/bias`, [channels], new Float32Array(channels).fill(bias)));
  return {
    opType: "Conv",
    input: inputs,
    output: [output],
    name,
    attribute: [
      { name: "kernel_shape", type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1] },
      { name: "group", type: onnx.AttributeProto.AttributeType.INT, i: channels / groupSize },
    ],
  };
}

/**
 * output = x * base^-beta. onnxruntime's Pow with a float exponent is slow; for the beta every
 * Caffe GoogLeNet uses (0.75) base^0.75 = sqrt(base) * sqrt(sqrt(base)) to float rounding, and
 * x is divided by the two roots in turn: two Divs ran faster than a Mul of the roots and one
 * Div (1.150x against 1.164x the LRN-free graph, 40 alternating runs of 16 crops, with the
 * steps on the blocked tensors).
 */
function scaleByPower(lrn: Lrn, base: string, prefix: string, builder: Builder): NodeProto[] {
  const { input, output, beta } = lrn;
  if (beta === 0.75) {
    const root = builder.freshName(`${prefix}/sqrt`);
    const once = builder.freshName(`${prefix}/divided_once`);
    const fourth = builder.freshName(`${prefix}/fourth_root`);
    return [
      { opType: "Sqrt", input: [base], output: [root], name: `${prefix}/sqrt` },
      { opType: "Div", input: [input, root], output: [once], name: `${prefix}/div_root` },
      { opType: "Sqrt", input: [root], output: [fourth], name: `${prefix}/fourth_root` },
      { opType: "Div", input: [once, fourth], output: [output], name: `${prefix}/div_out` },
    ];
  }
  const factor = builder.freshName(`${prefix}/factor`);
  const negated = constant(builder, `${prefix}/exponent`, [], new Float32Array([-beta]));
  return [
    { opType: "Pow", input: [base, negated], output: [factor], name: `${prefix}/pow` },
    { opType: "Mul", input: [input, factor], output: [output], name: `${prefix}/mul_out` },
  ];
}

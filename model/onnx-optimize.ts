import onnxProto from "onnx-proto";
import { ModelFormatError } from "./errors.js";

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;
type TensorProto = onnxProto.onnx.ITensorProto;

/** What `rewriteSlowNodes` changed, for the engine's log line. */
export interface RewriteReport {
  readonly bytes: Uint8Array;
  /** LRN nodes replaced by their banded-convolution equivalent. */
  readonly lrnRewritten: number;
  /** LRN nodes left alone, with the reason (their channel count could not be traced). */
  readonly lrnKept: readonly string[];
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

/**
 * Rewrites graph nodes that onnxruntime's CPU provider runs slowly into exact equivalents.
 *
 * Why: on the BVLC GoogLeNet, onnxruntime's LRN kernel takes more than half of the whole
 * network's time (measured: ~21 ms per crop with both LRNs, ~9.5 ms without them). LRN is
 * `x * (bias + alpha/size * S)^-beta` where S is the windowed channel sum of x^2; S is a fixed
 * 0/1 banded 1x1 convolution, which onnxruntime runs through its fast GEMM path. The scale
 * alpha/size is folded into the band so the chain is Mul, Conv, Add, Pow, Mul.
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
  const initializers = (graph.initializer ?? []) as TensorProto[];
  const producers = new Map<string, NodeProto>();
  for (const node of nodes) for (const output of node.output ?? []) producers.set(output, node);
  const initializerByName = new Map(initializers.map((tensor) => [tensor.name ?? "", tensor]));

  const channelsOf = (tensorName: string): number | undefined => {
    let current = producers.get(tensorName);
    for (let steps = 0; current && steps < 64; steps++) {
      if (current.opType === "Conv") {
        const weight = initializerByName.get(current.input?.[1] ?? "");
        const outChannels = weight?.dims?.[0];
        return outChannels === undefined || outChannels === null ? undefined : Number(outChannels);
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

  const usedNames = new Set<string>([...producers.keys(), ...initializerByName.keys()]);
  const freshName = (base: string): string => {
    let name = base;
    for (let i = 1; usedNames.has(name); i++) name = `${base}_${i}`;
    usedNames.add(name);
    return name;
  };

  const rewritten: NodeProto[] = [];
  const kept: string[] = [];
  let count = 0;
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
    const alpha = attribute("alpha")?.f ?? 1e-4;
    const beta = attribute("beta")?.f ?? 0.75;
    const bias = attribute("bias")?.f ?? 1;
    if (!(size > 0)) throw new ModelFormatError(`${source}: LRN node "${node.name ?? output}" has no size attribute`);

    // ONNX LRN sums channels c - floor((size-1)/2) .. c + ceil((size-1)/2).
    const before = Math.floor((size - 1) / 2);
    const after = Math.ceil((size - 1) / 2);
    const band = new Float32Array(channels * channels);
    for (let out = 0; out < channels; out++) {
      for (let inp = Math.max(0, out - before); inp <= Math.min(channels - 1, out + after); inp++) {
        band[out * channels + inp] = alpha / size;
      }
    }
    const base = freshName(`${output || "lrn"}_as_conv`);
    const squareName = freshName(`${base}/square`);
    const bandName = freshName(`${base}/band`);
    const sumName = freshName(`${base}/scaled_sum`);
    const biasName = freshName(`${base}/bias`);
    const baseName = freshName(`${base}/base`);
    const exponentName = freshName(`${base}/exponent`);
    const factorName = freshName(`${base}/factor`);
    initializers.push(
      floatTensor(bandName, [channels, channels, 1, 1], band),
      floatTensor(biasName, [], new Float32Array([bias])),
      floatTensor(exponentName, [], new Float32Array([-beta])),
    );
    rewritten.push(
      { opType: "Mul", input: [input, input], output: [squareName], name: `${base}/mul_square` },
      {
        opType: "Conv",
        input: [squareName, bandName],
        output: [sumName],
        name: `${base}/conv_band`,
        attribute: [{ name: "kernel_shape", type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1] }],
      },
      { opType: "Add", input: [sumName, biasName], output: [baseName], name: `${base}/add_bias` },
      ...powerNodes(baseName, exponentName, factorName, beta, base),
      { opType: "Mul", input: [input, factorName], output: [output], name: `${base}/mul_out` },
    );
    count++;
  }
  if (count === 0) return { bytes: modelBytes, lrnRewritten: 0, lrnKept: kept };
  graph.node = rewritten;
  graph.initializer = initializers;
  return { bytes: onnx.ModelProto.encode(model).finish(), lrnRewritten: count, lrnKept: kept };
}

/**
 * base^-beta. onnxruntime's Pow with a float exponent is slow; for the beta every Caffe
 * GoogLeNet uses (0.75) two square roots give the same value to float rounding, much faster.
 */
function powerNodes(baseName: string, exponentName: string, factorName: string, beta: number, prefix: string): NodeProto[] {
  if (process.env.LRN_POW === "exp") {
    return [
      { opType: "Log", input: [baseName], output: [`${prefix}/log`], name: `${prefix}/log` },
      { opType: "Mul", input: [`${prefix}/log`, exponentName], output: [`${prefix}/scaled_log`], name: `${prefix}/scaled_log` },
      { opType: "Exp", input: [`${prefix}/scaled_log`], output: [factorName], name: `${prefix}/exp` },
    ];
  }
  if (beta === 0.75 && process.env.LRN_POW !== "pow") {
    return [
      { opType: "Sqrt", input: [baseName], output: [`${prefix}/sqrt`], name: `${prefix}/sqrt` },
      { opType: "Sqrt", input: [`${prefix}/sqrt`], output: [`${prefix}/fourth_root`], name: `${prefix}/fourth_root` },
      { opType: "Mul", input: [`${prefix}/sqrt`, `${prefix}/fourth_root`], output: [`${prefix}/power`], name: `${prefix}/power` },
      { opType: "Reciprocal", input: [`${prefix}/power`], output: [factorName], name: `${prefix}/reciprocal` },
    ];
  }
  return [{ opType: "Pow", input: [baseName, exponentName], output: [factorName], name: `${prefix}/pow` }];
}

function floatTensor(name: string, dims: number[], values: Float32Array): TensorProto {
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

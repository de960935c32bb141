import onnxProto from "onnx-proto";

/**
 * Rewrites of real ONNX files, made with onnx-proto, that keep (or deliberately break) the
 * network while changing everything a name- or order-based reader would lean on.
 */
const { onnx } = onnxProto;
type Model = onnxProto.onnx.ModelProto;
type Graph = onnxProto.onnx.IGraphProto;
type Node = onnxProto.onnx.INodeProto;
type Tensor = onnxProto.onnx.ITensorProto;

export function decodeModel(bytes: Uint8Array): Model {
  return onnx.ModelProto.decode(bytes);
}

export function encodeModel(model: Model): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/** A copy of raw_data as floats: protobufjs hands out Buffer views into the whole file. */
function floatsOf(raw: Uint8Array): Float32Array {
  return new Float32Array(new Uint8Array(raw).buffer);
}

function graphOf(model: Model): Graph & { node: Node[]; initializer: Tensor[] } {
  const graph = model.graph;
  if (!graph?.node || !graph.initializer) throw new Error("model without a graph");
  return graph as Graph & { node: Node[]; initializer: Tensor[] };
}

/** A small deterministic PRNG (mulberry32), so a failing shuffle can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

/** Puts the initializers in a random order. */
export function shuffleInitializers(model: Model, seed: number): void {
  shuffle(graphOf(model).initializer, seededRandom(seed));
}

/**
 * Gives every tensor the name of another tensor of the graph (a random permutation) and every
 * node a meaningless name: conv1's weight may now be called "loss3_classifier_w_0".
 */
export function permuteNames(model: Model, seed: number): void {
  const graph = graphOf(model);
  const names = new Set<string>();
  for (const node of graph.node) for (const n of [...(node.input ?? []), ...(node.output ?? [])]) if (n) names.add(n);
  for (const t of graph.initializer) names.add(t.name ?? "");
  const old = [...names];
  const permuted = shuffle([...old], seededRandom(seed));
  const rename = new Map(old.map((name, i) => [name, permuted[i] as string]));
  const map = (name: string): string => (name ? (rename.get(name) ?? name) : name);
  graph.node.forEach((node, i) => {
    node.name = `node_${(i * 7919) % graph.node.length}`;
    node.input = (node.input ?? []).map(map);
    node.output = (node.output ?? []).map(map);
  });
  for (const t of graph.initializer) t.name = map(t.name ?? "");
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) v.name = map(v.name ?? "");
}

let fresh = 0;
function freshName(stem: string): string {
  fresh += 1;
  return `${stem}_${fresh}`;
}

/** Replaces Flatten by Reshape to [0, -1], its shape an int64 initializer stored as int64_data. */
export function flattenToReshape(model: Model): void {
  const graph = graphOf(model);
  const node = graph.node.find((n) => n.opType === "Flatten");
  if (!node) throw new Error("no Flatten node");
  const shape = freshName("shape");
  graph.initializer.push(onnx.TensorProto.create({ name: shape, dataType: onnx.TensorProto.DataType.INT64, dims: [2], int64Data: [0, -1] }));
  node.opType = "Reshape";
  node.attribute = [];
  node.input = [node.input?.[0] ?? "", shape];
}

/** Replaces Gemm(x, W, b, transB=1) by MatMul(x, W^T) and Add(., b). */
export function gemmToMatMulAdd(model: Model): void {
  const graph = graphOf(model);
  const index = graph.node.findIndex((n) => n.opType === "Gemm");
  const gemm = graph.node[index];
  if (!gemm?.input) throw new Error("no Gemm node");
  const weight = graph.initializer.find((t) => t.name === gemm.input?.[1]);
  if (!weight?.dims || !weight.rawData) throw new Error("Gemm weight is not a raw initializer");
  const [rows, cols] = weight.dims.map(Number) as [number, number];
  const source = floatsOf(weight.rawData);
  const transposed = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) transposed[c * rows + r] = source[r * cols + c] as number;
  const weightT = freshName("weight_t");
  graph.initializer.push(onnx.TensorProto.create({ name: weightT, dataType: 1, dims: [cols, rows], rawData: new Uint8Array(transposed.buffer) }));
  const product = freshName("product");
  const matMul = onnx.NodeProto.create({ opType: "MatMul", name: freshName("mm"), input: [gemm.input[0] ?? "", weightT], output: [product] });
  // Bias first, to check the reader does not assume which Add input is the constant.
  const add = onnx.NodeProto.create({ opType: "Add", name: freshName("add"), input: [gemm.input[2] ?? "", product], output: gemm.output ?? [] });
  graph.node.splice(index, 1, matMul, add);
}

/** Stores every raw_data float initializer as float_data instead (the other legal encoding). */
export function rawToFloatData(model: Model): void {
  for (const t of graphOf(model).initializer) {
    if (t.dataType === 1 && t.rawData && t.rawData.length > 0) {
      t.floatData = Array.from(floatsOf(t.rawData));
      t.rawData = new Uint8Array();
    }
  }
}

/**
 * Removes the `which`-th inception module's Concat (0-based, graph order) and wires its readers
 * to the first branch alone: a graph that is no longer GoogLeNet but still well formed.
 */
export function removeInceptionConcat(model: Model, which: number): void {
  const graph = graphOf(model);
  const concats = graph.node.filter((n) => n.opType === "Concat" && (n.input?.length ?? 0) === 4);
  const concat = concats[which];
  if (!concat) throw new Error(`no inception Concat number ${which}`);
  const [output] = concat.output ?? [];
  const [firstBranch] = concat.input ?? [];
  graph.node.splice(graph.node.indexOf(concat), 1);
  for (const node of graph.node) node.input = (node.input ?? []).map((n) => (n === output ? (firstBranch ?? "") : n));
}

/**
 * Un-folds a BatchNormalization after the first Conv: the conv gets W/s and (b - beta)/s + mean
 * and a BN node with scale s = gamma/sqrt(var + eps) restores the same function, so the output
 * must not change beyond float rounding.
 */
export function unfoldFirstBatchNorm(model: Model, seed: number): void {
  const graph = graphOf(model);
  const index = graph.node.findIndex((n) => n.opType === "Conv");
  const conv = graph.node[index];
  const weight = graph.initializer.find((t) => t.name === conv?.input?.[1]);
  const bias = graph.initializer.find((t) => t.name === conv?.input?.[2]);
  if (!conv?.output || !weight?.rawData || !weight.dims || !bias?.rawData) throw new Error("first Conv lacks raw weights");
  const outC = Number(weight.dims[0]);
  const w = floatsOf(weight.rawData);
  const b = floatsOf(bias.rawData);
  const random = seededRandom(seed);
  const epsilon = 1e-3;
  const gamma = Float32Array.from({ length: outC }, () => 0.5 + random());
  const beta = Float32Array.from({ length: outC }, () => random() - 0.5);
  const mean = Float32Array.from({ length: outC }, () => random() - 0.5);
  const variance = Float32Array.from({ length: outC }, () => 0.5 + random());
  const perOut = w.length / outC;
  for (let o = 0; o < outC; o++) {
    const s = (gamma[o] as number) / Math.sqrt((variance[o] as number) + epsilon);
    for (let i = 0; i < perOut; i++) w[o * perOut + i] = (w[o * perOut + i] as number) / s;
    b[o] = ((b[o] as number) - (beta[o] as number)) / s + (mean[o] as number);
  }
  weight.rawData = new Uint8Array(w.buffer);
  bias.rawData = new Uint8Array(b.buffer);
  const names = ["gamma", "beta", "mean", "var"].map(freshName);
  [gamma, beta, mean, variance].forEach((values, i) => {
    graph.initializer.push(onnx.TensorProto.create({ name: names[i], dataType: 1, dims: [outC], rawData: new Uint8Array(values.buffer) }));
  });
  const convOut = freshName("conv_out");
  const [output] = conv.output;
  conv.output = [convOut];
  const batchNorm = onnx.NodeProto.create({
    opType: "BatchNormalization",
    name: freshName("bn"),
    input: [convOut, ...names],
    output: [output ?? ""],
    attribute: [onnx.AttributeProto.create({ name: "epsilon", type: onnx.AttributeProto.AttributeType.FLOAT, f: epsilon })],
  });
  graph.node.splice(index + 1, 0, batchNorm);
}

/** A tiny classifier that is not GoogLeNet: Conv 3x3 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax. */
export function tinyClassifierModel(): Uint8Array {
  const float = (name: string, dims: number[], seed: number): Tensor => {
    const random = seededRandom(seed);
    const values = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => random() - 0.5);
    return onnx.TensorProto.create({ name, dataType: 1, dims, rawData: new Uint8Array(values.buffer) });
  };
  const ints = (name: string, values: number[]): onnxProto.onnx.IAttributeProto =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
  const valueInfo = (name: string, dims: (number | string)[]): onnxProto.onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
  });
  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: "", version: 13 }],
    producerName: "googlenet-eval test",
    graph: {
      name: "tiny",
      input: [valueInfo("image", ["N", 3, 8, 8])],
      output: [valueInfo("scores", ["N", 10])],
      initializer: [float("w", [4, 3, 3, 3], 1), float("b", [4], 2), float("fc_w", [10, 4], 3), float("fc_b", [10], 4)],
      node: [
        { opType: "Conv", input: ["image", "w", "b"], output: ["c"], attribute: [ints("kernel_shape", [3, 3]), ints("pads", [1, 1, 1, 1])] },
        { opType: "Relu", input: ["c"], output: ["r"] },
        { opType: "GlobalAveragePool", input: ["r"], output: ["g"] },
        { opType: "Flatten", input: ["g"], output: ["f"] },
        { opType: "Gemm", input: ["f", "fc_w", "fc_b"], output: ["logits"], attribute: [onnx.AttributeProto.create({ name: "transB", type: onnx.AttributeProto.AttributeType.INT, i: 1 })] },
        { opType: "Softmax", input: ["logits"], output: ["scores"] },
      ],
    },
  });
  return encodeModel(model);
}

/** The real BVLC file with one weight of its classifier's bias set to NaN: a model broken in its outputs. */
export function nanBiasModel(bytes: Uint8Array): Uint8Array {
  const model = decodeModel(bytes);
  const bias = model.graph?.initializer?.find((tensor) => tensor.name === "loss3_classifier_b_0");
  if (!bias?.rawData) throw new Error("no raw classifier bias in the BVLC file");
  const values = new Float32Array(new Uint8Array(bias.rawData).buffer.slice(0));
  values[0] = Number.NaN;
  bias.rawData = new Uint8Array(values.buffer);
  return encodeModel(model);
}

import onnxProto from "onnx-proto";
import { NCHWC_DOMAIN, POINTWISE_OPS, addInitializer, indexProtoGraph, type ModelProto, type NodeProto } from "./proto-graph.js";

const { onnx } = onnxProto;

/** What `runStemInParts` did: the tensor the stem ends at and how many nodes each part runs. */
export interface StemSplit {
  readonly end: string;
  readonly nodes: number;
}

/** Operators that compute each crop of a batch from that crop alone. */
const PER_CROP = new Set(["Conv", "MaxPool", "AveragePool", "Relu", "Clip", "LeakyRelu", "BatchNormalization", "LRN"]);
const PER_CROP_NCHWC = new Set(["Conv", "MaxPool", "AveragePool", "ReorderInput", "ReorderOutput"]);
const INT64_MAX = 9223372036854775807n;

/**
 * Runs the stem of a batch (the layers before `start`'s first branch) in parts of
 * `cropsPerPart` crops, one part through all of them before the next, and concatenates the parts
 * where the stem ends; returns why not when the graph does not allow it.
 *
 * Why: at 16 crops a stem tensor is 12.8 to 38.5 MB (the GoogLeNet LRNs' at 56 x 56), and
 * each LRN step (square, window sum, roots, divisions) reads and writes whole tensors, so the
 * steps wait on memory; at 4 crops a part's tensors are a quarter of that and the next step
 * finds more of them in the cache. The later layers keep the whole batch (the whole network
 * at 4 crops ran 4% slower per crop than at 16). Each crop is computed from itself alone
 * (checked: per-crop operators only), so the values are the same. Parts are cut with Slice on
 * the batch axis, the last open-ended, so a batch of any size runs (parts past its end are
 * empty).
 *
 * `start` is where the walk forward to the first branch begins (the last LRN's output, so the
 * stem holds both LRNs), or the graph's input.
 */
export function runStemInParts(model: ModelProto, start: string, cropsPerPart: number, parts: number): StemSplit | string {
  const graph = model.graph;
  if (!graph?.node) return "the graph has no nodes";
  const index = indexProtoGraph(graph);
  // Older IR versions list the constants among the inputs too.
  const inputs = (graph.input ?? []).map((value) => value.name ?? "").filter((name) => !index.initializerDims.has(name));
  if (inputs.length !== 1) return "the graph does not have exactly one input";
  const [input] = inputs as [string];
  let end = start;
  for (;;) {
    const readers = index.consumers.get(end) ?? [];
    const next = readers[0];
    if (readers.length !== 1 || !next || next.output?.length !== 1 || index.graphOutputs.has(end)) break;
    end = next.output[0] ?? "";
  }
  if (index.graphOutputs.has(end)) return `the stem's end ${end} is a graph output`;
  const stem = new Set<NodeProto>();
  const pending = [index.producer.get(end)];
  while (pending.length > 0) {
    const node = pending.pop();
    if (!node || stem.has(node)) continue;
    stem.add(node);
    for (const name of node.input ?? []) pending.push(index.producer.get(name));
  }
  if (stem.size === 0) return `no node makes ${end}, so there is no stem before it`;
  const initializers = new Set(index.initializerDims.keys());
  for (const node of stem) {
    const refusal = perCropRefusal(node, index.initializerDims);
    if (refusal) return refusal;
    for (const name of node.input ?? []) {
      if (name && name !== input && !initializers.has(name) && !stem.has(index.producer.get(name) as NodeProto)) {
        return `${node.name ?? node.opType} reads ${name}, made outside the stem`;
      }
    }
    for (const name of node.output ?? []) {
      if (name === end) continue;
      if (index.graphOutputs.has(name) || (index.consumers.get(name) ?? []).some((reader) => !stem.has(reader))) {
        return `${name} is read after the stem`;
      }
    }
  }
  const ordered = graph.node.filter((node) => stem.has(node));
  graph.node = [...partNodes(model, ordered, input, end, initializers, cropsPerPart, parts), ...graph.node.filter((node) => !stem.has(node))];
  return { end, nodes: ordered.length };
}

function perCropRefusal(node: NodeProto, initializerDims: Map<string, number[]>): string | undefined {
  const op = node.opType ?? "";
  const name = node.name || op;
  // The block-row window sum's view arithmetic keeps the batch axis (model/ort/graph-edits/block-rows.ts).
  if (name.includes("/block_rows/")) return undefined;
  if (node.domain === NCHWC_DOMAIN) return PER_CROP_NCHWC.has(op) ? undefined : `${name} (${op}) is not known to work crop by crop`;
  if ((node.domain ?? "") !== "") return `${name} (${node.domain}.${op}) is not known to work crop by crop`;
  if (PER_CROP.has(op)) return undefined;
  if (!POINTWISE_OPS.has(op)) return `${name} (${op}) is not known to work crop by crop`;
  for (const input of node.input ?? []) {
    const dims = initializerDims.get(input);
    if (dims && dims.length >= 4 && dims[0] !== 1) return `${name} broadcasts ${input} over the batch`;
  }
  return undefined;
}

function partNodes(
  model: ModelProto,
  stem: readonly NodeProto[],
  input: string,
  end: string,
  initializers: ReadonlySet<string>,
  cropsPerPart: number,
  parts: number,
): NodeProto[] {
  const int64 = (name: string, value: bigint) => addInitializer(model, `stem_parts/${name}`, [1], BigInt64Array.of(value));
  const axis = int64("axis", 0n);
  const nodes: NodeProto[] = [];
  const ends: string[] = [];
  for (let part = 0; part < parts; part++) {
    const partInput = `${input}/stem_part${part}`;
    const last = part === parts - 1;
    nodes.push({
      opType: "Slice",
      input: [input, int64(`from${part}`, BigInt(part * cropsPerPart)), int64(`to${part}`, last ? INT64_MAX : BigInt((part + 1) * cropsPerPart)), axis],
      output: [partInput],
      name: `stem_parts/slice${part}`,
    });
    const rename = (name: string) => (name === input ? partInput : name === "" || initializers.has(name) ? name : `${name}/stem_part${part}`);
    for (const [position, node] of stem.entries()) {
      nodes.push({ ...node, name: `${node.name || `${node.opType ?? "node"}_${position}`}/stem_part${part}`, input: (node.input ?? []).map(rename), output: (node.output ?? []).map(rename) });
    }
    ends.push(rename(end));
  }
  nodes.push({
    opType: "Concat",
    input: ends,
    output: [end],
    name: "stem_parts/concat",
    attribute: [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 0 }],
  });
  return nodes;
}

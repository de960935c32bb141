import { createHash } from "node:crypto";
import onnxProto from "onnx-proto";
import { ModelFormatError } from "../../errors.js";

const { onnx } = onnxProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type ModelProto = onnxProto.onnx.ModelProto;

/** The domain of onnxruntime's blocked-layout (NCHWc) operators in an optimized graph. */
export const NCHWC_DOMAIN = "com.microsoft.nchwc";

/**
 * An onnx-proto graph indexed for editing: who produces and who reads each tensor. The
 * read-only reader of model/onnx/graph-index.ts works on the project's own ONNX types; the edits of
 * onnxruntime's optimized graphs change onnx-proto nodes in place and encode them again.
 */
export interface ProtoGraphIndex {
  readonly producer: Map<string, NodeProto>;
  readonly consumers: Map<string, NodeProto[]>;
  readonly initializerDims: Map<string, number[]>;
  readonly graphOutputs: Set<string>;
}

export function indexProtoGraph(graph: onnxProto.onnx.IGraphProto): ProtoGraphIndex {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node ?? []) {
    for (const output of node.output ?? []) producer.set(output, node);
    for (const input of new Set(node.input ?? [])) {
      const list = consumers.get(input) ?? [];
      list.push(node);
      consumers.set(input, list);
    }
  }
  const initializerDims = new Map<string, number[]>();
  for (const tensor of graph.initializer ?? []) initializerDims.set(tensor.name ?? "", (tensor.dims ?? []).map(Number));
  const graphOutputs = new Set((graph.output ?? []).map((output) => output.name ?? ""));
  return { producer, consumers, initializerDims, graphOutputs };
}

/** @throws ModelFormatError when the bytes are not an ONNX graph with nodes. */
export function decodeOptimizedGraph(bytes: Uint8Array, source: string): ModelProto {
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new ModelFormatError(`${source}: onnxruntime's optimized graph is not readable ONNX (${(error as Error).message})`, {
      cause: error,
    });
  }
  if (!model.graph?.node) throw new ModelFormatError(`${source}: onnxruntime's optimized graph has no nodes`);
  return model;
}

export function isNchwc(node: NodeProto | undefined, opType: string): node is NodeProto {
  return node?.domain === NCHWC_DOMAIN && node.opType === opType;
}

/**
 * An INT attribute of an onnx-proto node. Not model/onnx/read-onnx.ts's `intAttribute`: the
 * graph edits work on onnx-proto's objects because they write the graph back, while model/onnx/
 * reads the file into its own types (checking each attribute's type) and never writes.
 */
export function protoIntAttribute(node: NodeProto, name: string): number | undefined {
  const attribute = node.attribute?.find((candidate) => candidate.name === name);
  return attribute?.i === undefined || attribute.i === null ? undefined : Number(attribute.i);
}

/**
 * Operators that compute each output value from the values at the same position of their
 * inputs (a scalar broadcast to all). Such a step gives the same values on any memory layout
 * its operands share (layout.ts), and computes each crop from that crop alone when none of
 * its constants has a batch axis (stem.ts).
 */
export const POINTWISE_OPS: ReadonlySet<string> = new Set(["Add", "Sub", "Mul", "Div", "Sqrt", "Pow", "Exp", "Log"]);

/** A constant added to the graph (starting its initializer list if it has none): float32 or int64 values with their dims. */
export function addInitializer(model: ModelProto, name: string, dims: number[], values: Float32Array | BigInt64Array): string {
  if (model.graph) (model.graph.initializer ??= []).push({
    name,
    dims,
    dataType: values instanceof Float32Array ? onnx.TensorProto.DataType.FLOAT : onnx.TensorProto.DataType.INT64,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  });
  return name;
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/**
 * The sha256 of everything in the graph that decides what it computes: its opsets, nodes,
 * constants, inputs and outputs. Node names are left out: onnxruntime's optimizer names a node
 * "ReorderOutput" on one load and "ReorderOutput_token_150" on the next, in the same graph.
 * Constants are hashed in place, so the digest costs a pass over the weights, not an encoding.
 */
export function graphDigest(model: ModelProto): string {
  const hash = createHash("sha256");
  const part = (bytes: Uint8Array) => hash.update(`${bytes.length}:`).update(bytes);
  for (const opset of model.opsetImport ?? []) part(onnx.OperatorSetIdProto.encode(opset).finish());
  const graph = model.graph;
  for (const node of graph?.node ?? []) part(onnx.NodeProto.encode({ ...node, name: "" }).finish());
  for (const tensor of graph?.initializer ?? []) {
    const raw = tensor.rawData;
    part(onnx.TensorProto.encode(raw && raw.length > 0 ? { ...tensor, rawData: new Uint8Array(0) } : tensor).finish());
    if (raw && raw.length > 0) part(raw);
  }
  for (const value of [...(graph?.input ?? []), ...(graph?.output ?? [])]) part(onnx.ValueInfoProto.encode(value).finish());
  return hash.digest("hex");
}

/** The sha256 of a graph's bytes, for a graph loaded as it is (the counterpart of `graphDigest`). */
export function bytesDigest(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Drops constants no node reads any more (onnxruntime warns of each one when it loads the graph). */
export function dropUnusedInitializers(graph: onnxProto.onnx.IGraphProto): void {
  const read = new Set((graph.node ?? []).flatMap((node) => node.input ?? []));
  graph.initializer = (graph.initializer ?? []).filter((tensor) => read.has(tensor.name ?? ""));
}

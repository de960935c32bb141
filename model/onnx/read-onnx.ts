import onnxProto from "onnx-proto";
import { ModelFormatError } from "../errors.js";

const { onnx } = onnxProto;

/** A float tensor from an initializer or a Constant node, values in row-major order. */
export interface OnnxFloatTensor {
  readonly kind: "float";
  readonly name: string;
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

/**
 * An integer tensor (int64 or int32 in the file): shapes for Reshape, indices for Gather,
 * starts/ends for Slice. Plain numbers, because every value a graph like GoogLeNet's stores
 * this way (and INT64_MAX as "to the end", which rounds harmlessly) fits a double.
 */
export interface OnnxIntTensor {
  readonly kind: "int";
  readonly name: string;
  readonly dims: readonly number[];
  readonly data: readonly number[];
}

export type OnnxTensor = OnnxFloatTensor | OnnxIntTensor;

export type OnnxAttribute =
  | { readonly type: "float"; readonly value: number }
  | { readonly type: "int"; readonly value: number }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "floats"; readonly value: readonly number[] }
  | { readonly type: "ints"; readonly value: readonly number[] }
  | { readonly type: "strings"; readonly value: readonly string[] }
  | { readonly type: "tensor"; readonly value: OnnxTensor }
  /** Graphs, sparse tensors and the like: kept by type so a reader can name them. */
  | { readonly type: "unsupported"; readonly onnxType: number };

export interface OnnxNode {
  /** The node's name; may be empty and means nothing to the architecture, only to messages. */
  readonly name: string;
  readonly opType: string;
  /** "" for the default ONNX domain. */
  readonly domain: string;
  /** Input tensor names; "" marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: ReadonlyMap<string, OnnxAttribute>;
}

/** A graph input or output: name, element type and shape (a number, a symbolic name, or unknown). */
export interface OnnxValueInfo {
  readonly name: string;
  /** ONNX TensorProto.DataType number (1 = float). */
  readonly elemType: number;
  readonly shape: readonly (number | string | undefined)[];
}

export interface OnnxGraph {
  /** The file or URL it came from, for messages. */
  readonly source: string;
  readonly irVersion: number;
  /** Opset of the default ("" / "ai.onnx") domain. */
  readonly opset: number;
  readonly producer: string;
  /** Real inputs only: an IR < 4 file also lists its initializers as inputs; they are left out. */
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  /** In file order, which ONNX guarantees is topological. */
  readonly nodes: readonly OnnxNode[];
  readonly initializers: ReadonlyMap<string, OnnxTensor>;
}

type LongLike = number | { toNumber(): number };

function toNumber(value: LongLike | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === "number" ? value : value.toNumber();
}

const DATA_TYPE_NAMES: Record<number, string> = {
  0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
  7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
  14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
};

/**
 * Converts one TensorProto to plain data. Float and double become Float32Array; int64, int32
 * (and the small unsigned/signed integer types) become numbers. Other types are refused with
 * the tensor's name, since no GoogLeNet operator needs them.
 */
export function decodeTensor(tensor: onnxProto.onnx.ITensorProto, source: string): OnnxTensor {
  const name = tensor.name ?? "";
  const dims = (tensor.dims ?? []).map(toNumber);
  const count = dims.reduce((a, b) => a * b, 1);
  const dataType = tensor.dataType ?? 0;
  const raw = tensor.rawData && tensor.rawData.length > 0 ? tensor.rawData : undefined;
  if (tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (tensor.externalData?.length ?? 0) > 0) {
    throw new ModelFormatError(
      `${source}: tensor "${name}" keeps its data in an external file; save the model with its weights inside the .onnx file`,
    );
  }
  const typeName = DATA_TYPE_NAMES[dataType] ?? String(dataType);
  const expectBytes = (width: number): DataView => {
    if (!raw) throw new Error("unreachable");
    if (raw.length !== count * width) {
      throw new ModelFormatError(
        `${source}: tensor "${name}" (${typeName}, dims [${dims.join(", ")}]) holds ${raw.length} bytes, expected ${count * width}`,
      );
    }
    return new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  };
  const checkCount = (length: number): void => {
    if (length !== count) {
      throw new ModelFormatError(
        `${source}: tensor "${name}" (${typeName}, dims [${dims.join(", ")}]) holds ${length} values, expected ${count}`,
      );
    }
  };
  switch (dataType) {
    case onnx.TensorProto.DataType.FLOAT:
    case onnx.TensorProto.DataType.DOUBLE: {
      const data = new Float32Array(count);
      const isDouble = dataType === onnx.TensorProto.DataType.DOUBLE;
      if (raw) {
        // ONNX stores raw_data little-endian whatever the host; DataView makes that explicit.
        const view = expectBytes(isDouble ? 8 : 4);
        for (let i = 0; i < count; i++) data[i] = isDouble ? view.getFloat64(i * 8, true) : view.getFloat32(i * 4, true);
      } else {
        const values = isDouble ? (tensor.doubleData ?? []) : (tensor.floatData ?? []);
        checkCount(values.length);
        data.set(values);
      }
      return { kind: "float", name, dims, data };
    }
    case onnx.TensorProto.DataType.INT64:
    case onnx.TensorProto.DataType.INT32:
    case onnx.TensorProto.DataType.INT16:
    case onnx.TensorProto.DataType.INT8:
    case onnx.TensorProto.DataType.UINT8:
    case onnx.TensorProto.DataType.UINT16:
    case onnx.TensorProto.DataType.BOOL: {
      let data: number[];
      if (raw) {
        const width = { 7: 8, 6: 4, 5: 2, 4: 2, 3: 1, 2: 1, 9: 1 }[dataType] ?? 1;
        const view = expectBytes(width);
        data = Array.from({ length: count }, (_, i) => {
          switch (dataType) {
            case 7: return Number(view.getBigInt64(i * 8, true));
            case 6: return view.getInt32(i * 4, true);
            case 5: return view.getInt16(i * 2, true);
            case 4: return view.getUint16(i * 2, true);
            case 3: return view.getInt8(i);
            default: return view.getUint8(i);
          }
        });
      } else {
        const values: LongLike[] = dataType === 7 ? (tensor.int64Data ?? []) : (tensor.int32Data ?? []);
        checkCount(values.length);
        data = values.map(toNumber);
      }
      return { kind: "int", name, dims, data };
    }
    default:
      throw new ModelFormatError(
        `${source}: tensor "${name}" has element type ${typeName}; supported: FLOAT, DOUBLE, INT64, INT32, INT16, INT8, UINT16, UINT8, BOOL`,
      );
  }
}

function decodeAttribute(attribute: onnxProto.onnx.IAttributeProto, source: string): OnnxAttribute {
  const types = onnx.AttributeProto.AttributeType;
  const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
  switch (attribute.type) {
    case types.FLOAT: return { type: "float", value: attribute.f ?? 0 };
    case types.INT: return { type: "int", value: toNumber(attribute.i) };
    case types.STRING: return { type: "string", value: text(attribute.s ?? new Uint8Array()) };
    case types.FLOATS: return { type: "floats", value: [...(attribute.floats ?? [])] };
    case types.INTS: return { type: "ints", value: (attribute.ints ?? []).map(toNumber) };
    case types.STRINGS: return { type: "strings", value: (attribute.strings ?? []).map(text) };
    case types.TENSOR: return { type: "tensor", value: decodeTensor(attribute.t ?? {}, source) };
    default: return { type: "unsupported", onnxType: attribute.type ?? 0 };
  }
}

function decodeValueInfo(info: onnxProto.onnx.IValueInfoProto): OnnxValueInfo {
  const tensorType = info.type?.tensorType;
  return {
    name: info.name ?? "",
    elemType: tensorType?.elemType ?? 0,
    shape: (tensorType?.shape?.dim ?? []).map((d) => {
      if (d.dimValue !== null && d.dimValue !== undefined && toNumber(d.dimValue) > 0) return toNumber(d.dimValue);
      return d.dimParam ? d.dimParam : undefined;
    }),
  };
}

/**
 * Reads an ONNX model's graph: nodes, initializers (decoded to plain arrays), inputs and
 * outputs. Throws ModelFormatError naming `source` when the bytes are not an ONNX model.
 */
export function readOnnxModel(bytes: Uint8Array, source: string): OnnxGraph {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new ModelFormatError(`${source}: not an ONNX model (protobuf decoding failed: ${(error as Error).message})`, {
      cause: error,
    });
  }
  const graph = model.graph;
  if (!graph || (graph.node ?? []).length === 0) {
    throw new ModelFormatError(`${source}: not an ONNX model (no graph or an empty graph)`);
  }
  const initializers = new Map<string, OnnxTensor>();
  for (const tensor of graph.initializer ?? []) initializers.set(tensor.name ?? "", decodeTensor(tensor, source));
  const nodes: OnnxNode[] = (graph.node ?? []).map((node) => {
    const attributes = new Map<string, OnnxAttribute>();
    for (const attribute of node.attribute ?? []) attributes.set(attribute.name ?? "", decodeAttribute(attribute, source));
    return {
      name: node.name ?? "",
      opType: node.opType ?? "",
      domain: !node.domain || node.domain === "ai.onnx" ? "" : node.domain,
      inputs: [...(node.input ?? [])],
      outputs: [...(node.output ?? [])],
      attributes,
    };
  });
  const opsetEntry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === "ai.onnx");
  return {
    source,
    irVersion: toNumber(model.irVersion),
    opset: toNumber(opsetEntry?.version),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(" "),
    inputs: (graph.input ?? []).filter((i) => !initializers.has(i.name ?? "")).map(decodeValueInfo),
    outputs: (graph.output ?? []).map(decodeValueInfo),
    nodes,
    initializers,
  };
}

function attribute(node: OnnxNode, name: string, type: OnnxAttribute["type"], source: string): OnnxAttribute | undefined {
  const found = node.attributes.get(name);
  if (found && found.type !== type) {
    throw new ModelFormatError(
      `${source}: attribute "${name}" of ${node.opType} node "${node.name || node.outputs[0]}" is ${found.type}, expected ${type}`,
    );
  }
  return found;
}

/** An INTS attribute, or undefined when absent; another type is a format error naming the node. */
export function intsAttribute(node: OnnxNode, name: string, source: string): readonly number[] | undefined {
  const found = attribute(node, name, "ints", source);
  return found?.type === "ints" ? found.value : undefined;
}

export function intAttribute(node: OnnxNode, name: string, source: string): number | undefined {
  const found = attribute(node, name, "int", source);
  return found?.type === "int" ? found.value : undefined;
}

export function floatAttribute(node: OnnxNode, name: string, source: string): number | undefined {
  const found = attribute(node, name, "float", source);
  return found?.type === "float" ? found.value : undefined;
}

export function stringAttribute(node: OnnxNode, name: string, source: string): string | undefined {
  const found = attribute(node, name, "string", source);
  return found?.type === "string" ? found.value : undefined;
}

export function tensorAttribute(node: OnnxNode, name: string, source: string): OnnxTensor | undefined {
  const found = attribute(node, name, "tensor", source);
  return found?.type === "tensor" ? found.value : undefined;
}

import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/**
 * The graph with every LRN node replaced by Identity (which onnxruntime removes): NOT the same
 * network, only the timing reference `lrnCostRatio` is measured against (what the LRNs cost
 * in whatever form the engine runs them).
 */
export function withoutLrn(modelBytes: Uint8Array): Uint8Array {
  const model = onnx.ModelProto.decode(modelBytes);
  let removed = 0;
  for (const node of model.graph?.node ?? []) {
    if (node.opType !== "LRN") continue;
    node.opType = "Identity";
    node.attribute = [];
    removed++;
  }
  if (removed === 0) throw new Error("withoutLrn: the graph has no LRN node");
  return onnx.ModelProto.encode(model).finish();
}

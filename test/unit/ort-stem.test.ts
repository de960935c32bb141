import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { runStemInParts } from "../../model/ort/graph-edits/stem.js";
import { seededRandom } from "../helpers/onnx-rewrite.js";
import { maxAbsDifference } from "../helpers/real-crops.js";

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;
const ints = onnx.AttributeProto.AttributeType.INTS;

/**
 * data [N,3,16,16] -> Conv 3x3 -> `activation` -> MaxPool 2x2 -> "pooled", which two 1x1
 * convolutions read (the first branch) before their sum is averaged to [N,4].
 * `extraOutputs` bends it for a refusal.
 */
function smallNetwork(activation: NodeProto, extraOutputs: string[] = []): onnxProto.onnx.ModelProto {
  const random = seededRandom(7);
  const floats = (count: number) => Float32Array.from({ length: count }, () => random() * 2 - 1);
  const tensor = (name: string, dims: number[]) => {
    const values = floats(dims.reduce((a, b) => a * b, 1));
    return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(values.buffer) };
  };
  const info = (name: string) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } } });
  return onnx.ModelProto.decode(
    onnx.ModelProto.encode({
      irVersion: 7,
      opsetImport: [{ domain: "", version: 12 }],
      graph: {
        name: "stem",
        node: [
          { opType: "Conv", input: ["data", "w1", "b1"], output: ["conv"], attribute: [{ name: "kernel_shape", type: ints, ints: [3, 3] }, { name: "pads", type: ints, ints: [1, 1, 1, 1] }] },
          activation,
          { opType: "MaxPool", input: ["act"], output: ["pooled"], attribute: [{ name: "kernel_shape", type: ints, ints: [2, 2] }, { name: "strides", type: ints, ints: [2, 2] }] },
          { opType: "Conv", input: ["pooled", "wa"], output: ["a"], attribute: [{ name: "kernel_shape", type: ints, ints: [1, 1] }] },
          { opType: "Conv", input: ["pooled", "wb"], output: ["b"], attribute: [{ name: "kernel_shape", type: ints, ints: [1, 1] }] },
          { opType: "Add", input: ["a", "b"], output: ["sum"] },
          { opType: "GlobalAveragePool", input: ["sum"], output: ["averaged"] },
          { opType: "Flatten", input: ["averaged"], output: ["out"] },
        ],
        initializer: [tensor("w1", [8, 3, 3, 3]), tensor("b1", [8]), tensor("wa", [4, 8, 1, 1]), tensor("wb", [4, 8, 1, 1]), tensor("scale", [2, 8, 16, 16])],
        input: [info("data")],
        output: [info("out"), ...extraOutputs.map(info)],
      },
    }).finish(),
  );
}

async function outputs(model: onnxProto.onnx.ModelProto, count: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(onnx.ModelProto.encode(model).finish(), { intraOpNumThreads: 1 });
  try {
    const random = seededRandom(count);
    const data = Float32Array.from({ length: count * 3 * 16 * 16 }, () => random() * 2 - 1);
    const results = await session.run({ data: new ort.Tensor("float32", data, [count, 3, 16, 16]) }, ["out"]);
    return Float32Array.from(results.out?.data as Float32Array);
  } finally {
    await session.release();
  }
}

const RELU: NodeProto = { opType: "Relu", input: ["conv"], output: ["act"] };

describe("runStemInParts", () => {
  it("runs the layers before the first branch two crops at a time, with the same outputs for any batch", async () => {
    // Prepare
    const whole = smallNetwork(RELU);
    const split = smallNetwork(RELU);

    // Act
    const result = runStemInParts(split, "data", 2, 3);

    // Assess: the stem is the convolution, ReLU and pool; three slices and a concat around
    // three copies of it. Batches of 1 and 3 leave parts empty; 7 puts 3 crops in the last.
    expect(result).toEqual({ end: "pooled", nodes: 3 });
    expect(split.graph?.node?.filter((node) => node.opType === "Slice")).toHaveLength(3);
    expect(split.graph?.node?.filter((node) => node.opType === "MaxPool")).toHaveLength(3);
    for (const count of [1, 3, 4, 7]) {
      const expected = await outputs(whole, count);
      expect(expected).toHaveLength(count * 4);
      expect(maxAbsDifference(await outputs(split, count), expected)).toBeLessThanOrEqual(1e-6);
    }
  });

  const refusals: [string, string, NodeProto, string[], RegExp][] = [
    ["an operator not known to work crop by crop", "data", { opType: "Softmax", input: ["conv"], output: ["act"] }, [], /Softmax.*crop by crop/],
    ["a constant with a batch axis", "data", { opType: "Mul", input: ["conv", "scale"], output: ["act"] }, [], /broadcasts scale over the batch/],
    // From the ReLU's output the walk reaches the pool, so the convolution is in the stem too.
    ["a stem tensor read after the stem", "act", RELU, ["conv"], /conv is read after the stem/],
    ["a start no node makes or reads", "missing", RELU, [], /no node makes missing/],
  ];
  it.each(refusals)("leaves the graph whole for %s, saying why", (_, start, activation, extraOutputs, reason) => {
    // Prepare
    const model = smallNetwork(activation, extraOutputs);
    const nodesBefore = model.graph?.node?.length;

    // Act
    const result = runStemInParts(model, start, 2, 3);

    // Assess
    expect(result).toMatch(reason);
    expect(model.graph?.node).toHaveLength(nodesBefore ?? -1);
  });
});

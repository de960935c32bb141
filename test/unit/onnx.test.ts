import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ModelFormatError } from "../../model/errors.js";
import { describeOnnxModel, loadGoogLeNetWeights, recogniseGoogLeNet } from "../../model/onnx/googlenet-recognition.js";
import { readOnnxModel, type OnnxAttribute, type OnnxGraph, type OnnxNode, type OnnxTensor } from "../../model/onnx/read-onnx.js";
import {
  decodeModel,
  encodeModel,
  flattenToReshape,
  rawToFloatData,
  removeInceptionConcat,
  tinyClassifierModel,
} from "../helpers/onnx-rewrite.js";
import { MODELS } from "../helpers/real-crops.js";

const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const TORCHVISION = `${MODELS}/torchvision-googlenet-untrained.onnx`;
const bvlcBytes = readFileSync(BVLC);
const torchvisionBytes = readFileSync(TORCHVISION);

describe("readOnnxModel", () => {
  it("reads the BVLC graph, its inputs and its float initializers with their dims", () => {
    // Act
    const graph = readOnnxModel(bvlcBytes, BVLC);

    // Assess
    expect(graph.opset).toBe(12);
    expect(graph.inputs).toEqual([{ name: "data_0", elemType: 1, shape: ["N", 3, 224, 224] }]);
    expect(graph.outputs.map((o) => o.name)).toEqual(["prob_1"]);
    expect(graph.initializers.size).toBe(116);
    const firstConv = graph.nodes.find((n) => n.opType === "Conv");
    const weight = graph.initializers.get(firstConv?.inputs[1] ?? "");
    expect(weight?.kind).toBe("float");
    expect(weight?.dims).toEqual([64, 3, 7, 7]);
    expect(weight?.data).toHaveLength(64 * 3 * 7 * 7);
    expect(firstConv?.attributes.get("pads")).toEqual({ type: "ints", value: [3, 3, 3, 3] });
  });

  it("reads float_data exactly as raw_data", () => {
    // Prepare
    const model = decodeModel(bvlcBytes);
    rawToFloatData(model);
    const rewritten = encodeModel(model);

    // Act
    const fromRaw = readOnnxModel(bvlcBytes, "raw.onnx").initializers;
    const fromFloats = readOnnxModel(rewritten, "floats.onnx").initializers;

    // Assess
    expect([...fromFloats.keys()]).toEqual([...fromRaw.keys()]);
    for (const [name, tensor] of fromRaw) {
      const other = fromFloats.get(name);
      expect(other?.dims).toEqual(tensor.dims);
      // A plain loop: vitest's deep equality takes half a minute over 7 million floats.
      const differing = tensor.data.findIndex((v, i) => !Object.is(v, other?.data[i]));
      expect(differing, `${name} differs at ${differing}`).toBe(-1);
    }
  });

  it("reads torchvision's int64 Constants (Gather indices, Unsqueeze axes) from raw_data", () => {
    // Act
    const graph = readOnnxModel(torchvisionBytes, TORCHVISION);

    // Assess
    const constantOf = (name: string): unknown => {
      const node = graph.nodes.find((n) => n.outputs.includes(name));
      const value = node?.attributes.get("value");
      return value?.type === "tensor" ? { kind: value.value.kind, dims: value.value.dims, data: value.value.data } : undefined;
    };
    const gathers = graph.nodes.filter((n) => n.opType === "Gather");
    expect(gathers.map((g) => constantOf(g.inputs[1] ?? ""))).toEqual([0, 1, 2].map((i) => ({ kind: "int", dims: [], data: [i] })));
    const unsqueezes = graph.nodes.filter((n) => n.opType === "Unsqueeze");
    expect(unsqueezes.map((u) => constantOf(u.inputs[1] ?? ""))).toEqual([0, 1, 2].map(() => ({ kind: "int", dims: [1], data: [1] })));
  });

  it("reads int64_data initializers", () => {
    // Prepare
    const model = decodeModel(bvlcBytes);
    flattenToReshape(model);

    // Act
    const graph = readOnnxModel(encodeModel(model), "reshaped.onnx");

    // Assess
    const reshape = graph.nodes.find((n) => n.opType === "Reshape");
    expect(graph.initializers.get(reshape?.inputs[1] ?? "")).toMatchObject({ kind: "int", dims: [2], data: [0, -1] });
  });

  it.each([
    ["random bytes", Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 256)],
    ["an empty file", new Uint8Array()],
  ])("refuses %s with ModelFormatError naming the file", (_, bytes) => {
    // Act
    const read = (): unknown => readOnnxModel(bytes, "photos/not-a-model.onnx");

    // Assess
    expect(read).toThrow(ModelFormatError);
    expect(read).toThrow(/^photos\/not-a-model\.onnx: not an ONNX model/);
  });
});

describe("recogniseGoogLeNet", () => {
  it.each([
    [BVLC, bvlcBytes, "bvlc", true],
    [TORCHVISION, torchvisionBytes, "torchvision", false],
  ])("recognises %s by structure", (source, bytes, flavour, softmax) => {
    // Act
    const weights = loadGoogLeNetWeights(bytes, source);

    // Assess
    expect(weights.flavour).toBe(flavour);
    expect(weights.outputIsSoftmax).toBe(softmax);
    expect(weights.inputSize).toBe(224);
    expect(weights.conv1.shape).toEqual([7, 7, 3, 64]);
    expect(weights.conv1.strides).toEqual([2, 2]);
    expect(weights.conv1.pads).toEqual([3, 3, 3, 3]);
    expect(weights.pool1).toEqual({ kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], ceilMode: true });
    expect(weights.inception["3a"].concatOrder).toEqual(["1x1", "3x3", "5x5", "pool"]);
    expect(weights.classifier.shape).toEqual([1024, 1000]);
  });

  it("reads BVLC's LRNs, 5x5 branches and 3x3 pool before 5a", () => {
    // Act
    const weights = loadGoogLeNetWeights(bvlcBytes, BVLC);

    // Assess
    expect(weights.inputAffine).toBeUndefined();
    expect(weights.lrn1).toEqual({ size: 5, alpha: Math.fround(1e-4), beta: 0.75, bias: 1 });
    expect(weights.lrn2).toEqual(weights.lrn1);
    expect(weights.inception["4c"].conv5x5.shape).toEqual([5, 5, 24, 64]);
    expect(weights.pool4.kernel).toEqual([3, 3]);
  });

  it("derives torchvision's transform_input affine from the graph's constants", () => {
    // Act
    const weights = loadGoogLeNetWeights(torchvisionBytes, TORCHVISION);

    // Assess: torchvision's transform_input maps ImageNet-normalised values to (x*std + mean - 0.5) / 0.5
    const std = [0.229, 0.224, 0.225];
    const mean = [0.485, 0.456, 0.406];
    expect(weights.inputAffine?.source).toEqual([0, 1, 2]);
    weights.inputAffine?.scale.forEach((s, c) => expect(s).toBeCloseTo((std[c] as number) / 0.5, 6));
    weights.inputAffine?.offset.forEach((o, c) => expect(o).toBeCloseTo(((mean[c] as number) - 0.5) / 0.5, 6));
    expect(weights.lrn1).toBeUndefined();
    expect(weights.inception["4c"].conv5x5.shape).toEqual([3, 3, 24, 64]);
    expect(weights.pool4).toEqual({ kernel: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], ceilMode: true });
  });

  it("refuses a tiny non-GoogLeNet classifier, naming the file and what it found", () => {
    // Prepare
    const graph = readOnnxModel(tinyClassifierModel(), "models/tiny.onnx");

    // Act
    const recognise = (): unknown => recogniseGoogLeNet(graph);

    // Assess
    expect(recognise).toThrow(ModelFormatError);
    expect(recognise).toThrow("models/tiny.onnx: expected 9 inception modules (Concat of 4 branches), found 0");
  });

  it("refuses the BVLC graph with one inception module's Concat removed", () => {
    // Prepare
    const model = decodeModel(bvlcBytes);
    removeInceptionConcat(model, 4);
    const graph = readOnnxModel(encodeModel(model), "broken-googlenet.onnx");

    // Act
    const recognise = (): unknown => recogniseGoogLeNet(graph);

    // Assess
    expect(recognise).toThrow(ModelFormatError);
    expect(recognise).toThrow("broken-googlenet.onnx: expected 9 inception modules (Concat of 4 branches), found 8");
  });
});

describe("the input affine before conv1", () => {
  const torchvision = readOnnxModel(torchvisionBytes, "prefix.onnx");
  const conv1At = torchvision.nodes.findIndex((node) => node.opType === "Conv");

  function node(opType: string, inputs: string[], output: string, attributes: Record<string, OnnxAttribute> = {}): OnnxNode {
    return { name: output, opType, domain: "", inputs, outputs: [output], attributes: new Map(Object.entries(attributes)) };
  }

  function ints(name: string, data: number[]): OnnxTensor {
    return { kind: "int", name, dims: [data.length], data };
  }

  function floats(name: string, dims: number[], data: number[]): OnnxTensor {
    return { kind: "float", name, dims, data: Float32Array.from(data) };
  }

  /** The torchvision graph with the nodes before conv1 replaced by `prefix`, which ends in "pre". */
  function withPrefix(prefix: OnnxNode[], constants: OnnxTensor[]): OnnxGraph {
    const initializers = new Map(torchvision.initializers);
    for (const constant of constants) initializers.set(constant.name, constant);
    const [conv1, ...rest] = torchvision.nodes.slice(conv1At) as [OnnxNode, ...OnnxNode[]];
    return { ...torchvision, nodes: [...prefix, { ...conv1, inputs: ["pre", ...conv1.inputs.slice(1)] }, ...rest], initializers };
  }

  const reverse = [node("Slice", ["input", "starts", "ends", "axes", "steps"], "pre")];
  const reverseConstants = [ints("starts", [-1]), ints("ends", [-(2 ** 31)]), ints("axes", [1]), ints("steps", [-1])];

  it.each([
    ["a Slice that reverses the channels (RGB to BGR)", reverse, reverseConstants, { source: [2, 1, 0], scale: [1, 1, 1], offset: [0, 0, 0] }],
    ["a per-channel constant minus the image", [node("Sub", ["k", "input"], "pre")], [floats("k", [1, 3, 1, 1], [2, 4, 8])], { source: [0, 1, 2], scale: [-1, -1, -1], offset: [2, 4, 8] }],
    ["Identity, Cast, then a division by a scalar", [node("Identity", ["input"], "i"), node("Cast", ["i"], "c"), node("Div", ["c", "k"], "pre")], [floats("k", [], [2])], { source: [0, 1, 2], scale: [0.5, 0.5, 0.5], offset: [0, 0, 0] }],
  ])("reads %s", (_what, prefix, constants, expected) => {
    // Act
    const weights = recogniseGoogLeNet(withPrefix(prefix, constants));

    // Assess
    expect(weights.inputAffine).toEqual(expected);
  });

  it("gives no affine for a Slice that keeps every channel in order", () => {
    // Act
    const weights = recogniseGoogLeNet(withPrefix([node("Slice", ["input", "starts", "ends", "axes"], "pre")], [ints("starts", [0]), ints("ends", [2 ** 31 - 1]), ints("axes", [1])]));

    // Assess
    expect(weights.inputAffine).toBeUndefined();
  });

  it.each([
    ["a Relu", [node("Relu", ["input"], "pre")], [], 'Relu "pre" before the first convolution: this operator is not a per-channel affine; only'],
    ["a division by the image", [node("Div", ["k", "input"], "pre")], [floats("k", [], [2])], 'Div "pre" before the first convolution: it divides by the image'],
    ["a constant that varies along width", [node("Mul", ["input", "k"], "pre")], [floats("k", [1, 1, 1, 3], [1, 2, 3])], 'Mul "pre" before the first convolution: its constant of shape [1, 1, 1, 3] is not per-channel'],
    ["a spatial Slice", [node("Slice", ["input", "starts", "ends", "axes"], "pre")], [ints("starts", [0]), ints("ends", [100]), ints("axes", [2])], 'Slice "pre" before the first convolution: it slices a spatial or batch axis'],
    ["two channels", [node("Slice", ["input", "starts", "ends", "axes"], "pre")], [ints("starts", [0]), ints("ends", [2]), ints("axes", [1])], "the input of the first convolution is not a 3-channel image (found 2 channels)"],
  ])("refuses %s, naming the node and why", (_what, prefix, constants, message) => {
    // Act
    const recognise = (): unknown => recogniseGoogLeNet(withPrefix(prefix, constants));

    // Assess
    expect(recognise).toThrow(ModelFormatError);
    expect(recognise).toThrow(`prefix.onnx: ${message}`);
  });
});

describe("describeOnnxModel", () => {
  it.each([
    [BVLC, bvlcBytes, { inputName: "data_0", outputName: "prob_1", softmaxed: true, flavour: "bvlc" }],
    [TORCHVISION, torchvisionBytes, { inputName: "input", outputName: "logits", softmaxed: false, flavour: "torchvision" }],
  ])("describes %s", (source, bytes, expected) => {
    // Act
    const description = describeOnnxModel(bytes, source);

    // Assess
    expect(description).toEqual({ ...expected, inputShape: ["N", 3, 224, 224], outputSize: 1000 });
  });

  it("describes a graph it does not recognise without throwing, and says why", () => {
    // Act
    const description = describeOnnxModel(tinyClassifierModel(), "tiny.onnx");

    // Assess
    expect(description).toMatchObject({
      inputName: "image",
      inputShape: ["N", 3, 8, 8],
      outputName: "scores",
      outputSize: 10,
      softmaxed: true,
      flavour: undefined,
    });
    expect(description.unrecognisedReason).toMatch(/found 0/);
  });
});

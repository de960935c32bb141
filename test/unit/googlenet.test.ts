import { readFileSync } from "node:fs";
import * as tf from "@tensorflow/tfjs-core";
import { beforeAll, describe, expect, it } from "vitest";
import { parseBackendPreference, selectBackend, type BackendPreference } from "../../model/tfjs/backend.js";
import { BackendUnavailableError, ConfigurationError } from "../../model/errors.js";
import { loadGoogLeNetWeights } from "../../model/onnx/googlenet-recognition.js";
import { allConvs, type GoogLeNetWeights } from "../../model/onnx/googlenet-weights.js";
import { buildGoogLeNet, layerWidths, parameterCount, windowPadding } from "../../model/tfjs/googlenet.js";
import { preprocessFor } from "../../model/preprocess.js";
import { createTfjsEngine } from "../../model/tfjs/engine.js";
import { countPrototxtParameters } from "../helpers/caffe-prototxt.js";
import {
  decodeModel,
  encodeModel,
  flattenToReshape,
  gemmToMatMulAdd,
  permuteNames,
  shuffleInitializers,
  unfoldFirstBatchNorm,
} from "../helpers/onnx-rewrite.js";
import { maxAbsDifference, MODELS, onnxruntimeProbabilities, realCrops, SAMPLES, topK } from "../helpers/real-crops.js";
import { wasmOrCpuBackend } from "../helpers/test-backend.js";
import { TABLE_1_INCEPTION, TABLE_1_STEM } from "../helpers/table1.js";

const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const TORCHVISION = `${MODELS}/torchvision-googlenet-untrained.onnx`;
const PHOTOS = ["n01440764_tench.JPEG", "n02123045_tabby.JPEG", "n04037443_racer.JPEG"].map((f) => `${SAMPLES}/${f}`);
const CLASSES = 1000;
const quiet = (): void => undefined;
/** The optional tfjs-node packages cannot install here; where they do, "tensorflow" is available. */
const nativeTensorflow = await Promise.any(
  ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"].map((name: string) => import(name)),
).then(
  () => true,
  () => false,
);

let backend: BackendPreference;
let bvlc: GoogLeNetWeights;
beforeAll(async () => {
  backend = await wasmOrCpuBackend();
  bvlc = loadGoogLeNetWeights(readFileSync(BVLC), BVLC);
});

describe("GoogLeNet's shape", () => {
  it("has the stem of the paper's Table 1", () => {
    // Act
    const [conv1, conv2] = layerWidths(bvlc);

    // Assess
    expect(conv1?.output.join("x")).toBe(TABLE_1_STEM.conv1);
    expect(conv2).toMatchObject({ n3x3Reduce: TABLE_1_STEM.conv2Reduce, n3x3: TABLE_1_STEM.conv2 });
    expect(conv2?.output.join("x")).toBe(TABLE_1_STEM.conv2Output);
  });

  describe.each(TABLE_1_INCEPTION)("inception %s", (name, n1x1, n3x3Reduce, n3x3, n5x5Reduce, n5x5, poolProj, output) => {
    it("has the paper's channel widths and output size", () => {
      // Act
      const row = layerWidths(bvlc).find((r) => r.layer === `inception ${name}`);

      // Assess
      expect(row).toMatchObject({ n1x1, n3x3Reduce, n3x3, n5x5Reduce, n5x5, poolProj });
      expect(row?.output.join("x")).toBe(output);
    });
  });

  it("has exactly the parameters BVLC's deploy.prototxt defines (6,998,552)", () => {
    // Prepare
    const prototxt = countPrototxtParameters(readFileSync(`${MODELS}/bvlc-googlenet.deploy.prototxt`, "utf8"));

    // Act
    const loaded = parameterCount(bvlc);

    // Assess
    expect(prototxt.parameters).toBe(6_998_552);
    expect(loaded).toBe(prototxt.parameters);
    expect(allConvs(bvlc)).toHaveLength(prototxt.convolutions);
  });

  describe.each([
    [112, 56],
    [56, 28],
    [28, 14],
    [14, 7],
  ])("a Caffe ceil-mode 3x3/2 max pool on %i", (size, expected) => {
    it(`gives ${expected} and equals tfjs 'same' padding`, () => {
      // Act
      const { padding, outputSize } = windowPadding(size, 3, 2, [0, 0, 0, 0], true);

      // Assess
      expect(outputSize).toBe(expected);
      expect(padding).toBe("same");
    });
  });

  it("pads conv1 7x7/2 explicitly, since 'same' would pad 2 before and 3 after", () => {
    // Act
    const { padding, outputSize } = windowPadding(224, 7, 2, [3, 3, 3, 3], false);

    // Assess: the third end row never enters a window, so 3 then 2 is ONNX's pad 3 on both sides
    expect(outputSize).toBe(112);
    expect(padding).toEqual([[0, 0], [3, 2], [3, 2], [0, 0]]);
  });
});

describe.each([
  ["bvlc", BVLC, true],
  ["torchvision", TORCHVISION, false],
] as const)("the tfjs %s network", (flavour, path, softmaxed) => {
  it("agrees with onnxruntime on real photos (probabilities within 1e-4, same top-5)", async () => {
    // Prepare
    const engine = await createTfjsEngine(readFileSync(path), { source: path, backend, log: quiet });
    const { nhwc, nchw } = await realCrops(PHOTOS, preprocessFor(flavour));

    // Act
    const ours = await engine.classify(nhwc, PHOTOS.length);
    await engine.dispose();
    const reference = await onnxruntimeProbabilities(path, nchw, PHOTOS.length, softmaxed);

    // Assess
    expect(engine).toMatchObject({ flavour, engine: "tfjs", inputLayout: "nhwc", backend });
    expect(maxAbsDifference(ours, reference)).toBeLessThanOrEqual(1e-4);
    PHOTOS.forEach((_, row) => expect(topK(ours, row, CLASSES, 5)).toEqual(topK(reference, row, CLASSES, 5)));
    for (let row = 0; row < PHOTOS.length; row++) {
      const sum = ours.subarray(row * CLASSES, (row + 1) * CLASSES).reduce((a, b) => a + b, 0);
      expect(sum).toBeCloseTo(1, 4);
    }
  });
});

describe("structure, not names", () => {
  it("gives the same output for BVLC with shuffled initializers, permuted names, Reshape and MatMul+Add", async () => {
    // Prepare
    const model = decodeModel(readFileSync(BVLC));
    shuffleInitializers(model, 7);
    permuteNames(model, 11);
    flattenToReshape(model);
    gemmToMatMulAdd(model);
    const rewritten = encodeModel(model);
    const { nhwc } = await realCrops(PHOTOS.slice(0, 1), preprocessFor("bvlc"));
    const original = await createTfjsEngine(readFileSync(BVLC), { source: BVLC, backend, log: quiet });
    const expected = await original.classify(nhwc, 1);
    await original.dispose();

    // Act
    const engine = await createTfjsEngine(rewritten, { source: "rewritten.onnx", backend, log: quiet });
    const probabilities = await engine.classify(nhwc, 1);
    await engine.dispose();

    // Assess
    expect(engine.flavour).toBe("bvlc");
    expect(maxAbsDifference(probabilities, expected)).toBeLessThanOrEqual(1e-6);
  });

  it("folds a BatchNormalization node into its conv as onnxruntime computes it (torchvision, conv1's BN un-folded)", async () => {
    // Prepare
    const model = decodeModel(readFileSync(TORCHVISION));
    unfoldFirstBatchNorm(model, 3);
    const unfolded = encodeModel(model);
    const photos = PHOTOS.slice(1, 2);
    const { nhwc, nchw } = await realCrops(photos, preprocessFor("torchvision"));
    const reference = await onnxruntimeProbabilities(unfolded, nchw, photos.length, false);

    // Act
    const weights = loadGoogLeNetWeights(unfolded, "unfolded.onnx");
    const network = buildGoogLeNet(weights);
    const probabilities = await network.probabilities(nhwc, photos.length);
    network.dispose();

    // Assess
    expect(weights.flavour).toBe("torchvision");
    expect(maxAbsDifference(probabilities, reference)).toBeLessThanOrEqual(1e-4);
    expect(topK(probabilities, 0, CLASSES, 5)).toEqual(topK(reference, 0, CLASSES, 5));
  });
});

describe("tensor memory", () => {
  it("is unchanged after load, classify and dispose, and after classify alone", async () => {
    // Prepare
    const bytes = readFileSync(BVLC);
    const { nhwc } = await realCrops(PHOTOS.slice(0, 2), preprocessFor("bvlc"));
    const atStart = tf.memory().numTensors;

    // Act
    const engine = await createTfjsEngine(bytes, { source: BVLC, backend, log: quiet, maxBatch: 1 });
    const loaded = tf.memory().numTensors;
    await engine.classify(nhwc, 2);
    const afterClassify = tf.memory().numTensors;
    await engine.dispose();
    await engine.dispose();
    const afterDispose = tf.memory().numTensors;

    // Assess
    expect(loaded).toBeGreaterThan(atStart);
    expect(afterClassify).toBe(loaded);
    expect(afterDispose).toBe(atStart);
  });
});

describe("backend selection", () => {
  it("refuses an unknown name, listing the choices", () => {
    // Act
    const parse = (): unknown => parseBackendPreference("gpu");

    // Assess
    expect(parse).toThrow(ConfigurationError);
    expect(parse).toThrow('unknown backend "gpu"; use one of: auto, tensorflow, wasm, cpu');
  });

  it.skipIf(nativeTensorflow)("refuses an unavailable explicit backend, listing what is available", async () => {
    // Prepare: tfjs-node cannot be installed here, so "tensorflow" is unavailable
    const lines: string[] = [];

    // Act
    const select = selectBackend("tensorflow", { log: (line) => lines.push(line) });

    // Assess
    await expect(select).rejects.toThrow(BackendUnavailableError);
    await expect(selectBackend("tensorflow", { log: quiet })).rejects.toThrow(/@tensorflow\/tfjs-node.*available: auto, wasm, cpu/);
    expect(lines).toEqual([]);
    expect(tf.getBackend()).toBe(backend);
  });

  it.skipIf(nativeTensorflow)("falls through to wasm under auto, says why tensorflow was skipped, and logs once", async () => {
    // Prepare
    const lines: string[] = [];
    const log = (line: string): void => {
      lines.push(line);
    };
    await selectBackend("cpu", { log });

    // Act
    const first = await selectBackend("auto", { log });
    const second = await selectBackend("auto", { log });

    // Assess
    expect(first.backend).toBe("wasm");
    expect(second).toBe(first);
    expect(first.reasons).toEqual([
      expect.stringMatching(/^tensorflow \(GPU, @tensorflow\/tfjs-node-gpu\): /),
      expect.stringMatching(/^tensorflow \(CPU, @tensorflow\/tfjs-node\): @tensorflow\/tfjs-node does not load/),
    ]);
    expect(lines.filter((l) => l.includes("tfjs backend wasm"))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/^googlenet-eval: tfjs backend wasm \(single-threaded SIMD.*\); skipped: tensorflow \(GPU/);
    await selectBackend(backend, { log: quiet });
  });
});

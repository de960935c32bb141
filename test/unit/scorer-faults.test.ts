import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine, ModelInfo } from "../../model/engine.js";
import { ModelOutputError } from "../../model/errors.js";
import { StorageError } from "../../storage/errors.js";
import { createOrtEngine } from "../../model/ort/engine.js";
import { labelRank } from "../../model/predict.js";
import { readSynsets } from "../../model/synsets.js";
import type { ResultRecord } from "../../scoring/records.js";
import type { ImageInput, ScorerOptions } from "../../scoring/scorer.js";
import { scoreImages } from "../../scoring/scorer.js";
import { LocalLocation } from "../../storage/location.js";
import { decodeModel, encodeModel } from "../helpers/onnx-rewrite.js";

const MODEL = "../shared/models/bvlc-googlenet.onnx";
const SAMPLES = "../shared/imagenet/samples";
const PHOTOS = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01518878_ostrich.JPEG"] as const;

/** The real BVLC file with its classifier's bias for class 0 set to NaN: every softmax row becomes NaN. */
function nanBiasModel(bytes: Uint8Array): Uint8Array {
  const model = decodeModel(bytes);
  const bias = model.graph?.initializer?.find((tensor) => tensor.name === "loss3_classifier_b_0");
  if (!bias?.rawData) throw new Error("no raw classifier bias in the BVLC file");
  const values = new Float32Array(new Uint8Array(bias.rawData).buffer);
  values[0] = Number.NaN;
  bias.rawData = new Uint8Array(values.buffer);
  return encodeModel(model);
}

let work: string;
let images: LocalLocation;
let good: Engine;
let broken: Engine;
let classNames: readonly string[];
const GOOD_INFO: ModelInfo = { file: MODEL, sha256: "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4", flavour: "bvlc" };
const BROKEN_INFO: ModelInfo = { file: "/models/nan-bias.onnx", sha256: "0".repeat(64), flavour: "bvlc" };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "scorer-faults-"));
  for (const file of PHOTOS) await writeFile(join(work, file), await readFile(join(SAMPLES, file)));
  images = new LocalLocation(work);
  const bytes = await readFile(MODEL);
  good = await createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", softmaxed: true });
  broken = await createOrtEngine(nanBiasModel(bytes), { source: BROKEN_INFO.file, flavour: "bvlc", softmaxed: true });
  classNames = (await readSynsets("../shared/imagenet/synset_words.txt")).names;
});

afterAll(async () => {
  await good?.dispose();
  await broken?.dispose();
  await rm(work, { recursive: true, force: true });
});

function options(engine: Engine, info: ModelInfo): ScorerOptions {
  return { models: [{ engine, info }], crops: 1, classNames, applyExifOrientation: false, batchCrops: 1 };
}

function fromFolder(key: string): ImageInput {
  return { key, label: null, read: () => images.read(key) };
}

/** Drains the generator, keeping what it yielded before it rejected. */
async function drain(records: AsyncIterable<ResultRecord>): Promise<{ records: ResultRecord[]; error: unknown }> {
  const out: ResultRecord[] = [];
  try {
    for await (const record of records) out.push(record);
  } catch (error) {
    return { records: out, error };
  }
  return { records: out, error: undefined };
}

/** An AWS SDK error as S3 answers a denied GetObject, wrapped as S3Location wraps it. */
function deniedRead(key: string): StorageError {
  const sdkError = Object.assign(new Error("Access Denied"), { name: "AccessDenied", $metadata: { httpStatusCode: 403 } });
  return new StorageError(`cannot read s3://data/validation/${key}: Access Denied`, { cause: sdkError });
}

describe("scoreImages under faults", () => {
  it("records a listed key that is gone when read, and scores the images around it", async () => {
    // Prepare: the second photo is deleted after listing, as another process might.
    const keys = [...PHOTOS];
    await rm(join(work, "n01443537_goldfish.JPEG"));

    // Act
    const { records, error } = await drain(scoreImages(keys.map(fromFolder), options(good, GOOD_INFO)));

    // Assess
    expect(error).toBeUndefined();
    expect(records.map((record) => record.key)).toEqual(keys);
    expect(records[1]).toEqual({
      key: "n01443537_goldfish.JPEG",
      error: "n01443537_goldfish.JPEG: not found (listed, but gone when read)",
    });
    expect(records[0]).toHaveProperty("top5");
    expect(records[2]).toHaveProperty("top5");
  });

  it("rejects on a denied read, naming the key and the status, with no record for that key", async () => {
    // Prepare: the middle input's read is denied; the others are real files.
    const inputs: ImageInput[] = [
      fromFolder("n01440764_tench.JPEG"),
      { key: "photos/denied.jpg", label: null, read: () => Promise.reject(deniedRead("photos/denied.jpg")) },
      fromFolder("n01518878_ostrich.JPEG"),
    ];

    // Act
    const { records, error } = await drain(scoreImages(inputs, options(good, GOOD_INFO)));

    // Assess
    expect(error).toBeInstanceOf(StorageError);
    expect((error as Error).message).toBe(
      "cannot read image photos/denied.jpg: cannot read s3://data/validation/photos/denied.jpg: Access Denied (HTTP 403 AccessDenied)",
    );
    expect(records.some((record) => record.key === "photos/denied.jpg")).toBe(false);
    expect(records.every((record) => "top5" in record)).toBe(true);
  });

  it("rejects a model whose outputs are NaN, naming its file, and yields nothing from it", async () => {
    // Act
    const { records, error } = await drain(scoreImages([fromFolder("n01440764_tench.JPEG")], options(broken, BROKEN_INFO)));

    // Assess
    expect(records).toEqual([]);
    expect(error).toBeInstanceOf(ModelOutputError);
    expect((error as Error).message).toMatch(
      /^model \/models\/nan-bias\.onnx \(sha256 0{64}\) gave NaN for class 0 on a crop of n01440764_tench\.JPEG; /,
    );
  });
});

describe("labelRank", () => {
  it("refuses NaN instead of ranking a NaN label first", () => {
    // Prepare: the label's probability is NaN, so every comparison with it is false.
    const probabilities = new Float64Array(1000).fill(0.001);
    probabilities[3] = Number.NaN;

    // Act, Assess
    expect(() => labelRank(probabilities, 3)).toThrow(ModelOutputError);
    expect(() => labelRank(probabilities, 7)).toThrow(/class 3 is NaN/);
  });

  it("still ranks finite probabilities, ties to the lower index", () => {
    // Prepare
    const probabilities = new Float64Array(1000);
    probabilities[5] = 0.5;
    probabilities[2] = 0.25;
    probabilities[9] = 0.25;

    // Act, Assess
    expect([labelRank(probabilities, 5), labelRank(probabilities, 2), labelRank(probabilities, 9)]).toEqual([0, 1, 2]);
  });
});

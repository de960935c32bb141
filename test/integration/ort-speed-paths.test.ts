import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Scheme } from "../../model/image/crop-types.js";
import { SCHEMES } from "../../model/image/crop-types.js";
import { cropPlan, schemeCropIndices } from "../../model/image/crops.js";
import { decodeImage } from "../../model/image/decode.js";
import type { Engine, ModelInfo } from "../../model/engine.js";
import { NUM_CLASSES } from "../../model/engine.js";
import { createOrtEngine } from "../../model/ort/engine.js";
import { ensembleMean, labelRank, schemeMeans, topKEntries } from "../../model/predict.js";
import { CROP_VALUES, sampleCrops } from "../../model/image/sampling.js";
import { readSynsets } from "../../model/synsets.js";
import type { ResultRecord, SchemeTop5 } from "../../scoring/records.js";
import type { ImageInput } from "../../scoring/scorer.js";
import { scoreImages } from "../../scoring/scorer.js";
import { encodePositions } from "../../scoring/statistics.js";
import { MODELS, SAMPLES } from "../helpers/real-crops.js";

const MODEL = `${MODELS}/bvlc-googlenet.onnx`;
const SQUARE = "n01873310_platypus.JPEG"; // 150 x 150, class 103
const SQUARE_LABEL = 103;
const INFO: ModelInfo = { file: MODEL, sha256: "not checked here", flavour: "bvlc" };

/** A real engine that counts the crops it is given and the calls running at once. */
class CountingEngine implements Engine {
  crops = 0;
  calls = 0;
  running = 0;
  mostRunning = 0;
  failOnCall: number | undefined;
  readonly engine;
  readonly backend;
  readonly flavour;
  readonly inputLayout;
  readonly preprocess;

  constructor(private readonly inner: Engine) {
    this.engine = inner.engine;
    this.backend = inner.backend;
    this.flavour = inner.flavour;
    this.inputLayout = inner.inputLayout;
    this.preprocess = inner.preprocess;
  }

  async classify(input: Float32Array, count: number): Promise<Float32Array> {
    this.calls++;
    if (this.calls === this.failOnCall) throw new Error(`engine failed on call ${this.calls}`);
    this.crops += count;
    this.running++;
    this.mostRunning = Math.max(this.mostRunning, this.running);
    try {
      return await this.inner.classify(input, count);
    } finally {
      this.running--;
    }
  }

  dispose(): Promise<void> {
    return Promise.resolve();
  }
}

let engine: Engine;
let classNames: readonly string[];

beforeAll(async () => {
  engine = await createOrtEngine(readFileSync(MODEL), { source: MODEL, flavour: "bvlc", softmaxed: true });
  classNames = (await readSynsets("../shared/imagenet/synset_words.txt")).names;
});

afterAll(async () => {
  await engine?.dispose();
});

function inputOf(file: string, label: number | null): ImageInput {
  return { key: file, label, read: () => readFile(`${SAMPLES}/${file}`) };
}

async function collect(records: AsyncIterable<ResultRecord>): Promise<ResultRecord[]> {
  const out: ResultRecord[] = [];
  for await (const record of records) out.push(record);
  return out;
}

describe("coinciding windows of a square image", () => {
  it("are classified once, with a record identical to classifying all 144 crops", async () => {
    // Prepare: the reference classifies every one of the 144 sampled crops, no sharing.
    const image = await decodeImage(readFileSync(`${SAMPLES}/${SQUARE}`), { source: SQUARE, applyExifOrientation: false });
    const plan = cropPlan(image.width, image.height);
    const all = new Float32Array(144 * CROP_VALUES);
    sampleCrops(image, plan, { preprocess: engine.preprocess, layout: engine.inputLayout }, all);
    const probabilities = new Float32Array(144 * NUM_CLASSES);
    for (let start = 0; start < 144; start += 16) {
      probabilities.set(await engine.classify(all.subarray(start * CROP_VALUES, (start + 16) * CROP_VALUES), 16), start * NUM_CLASSES);
    }
    const positions = plan.map((_, p) => p);
    const schemeCrops: Partial<Record<Scheme, number[]>> = {};
    for (const scheme of SCHEMES) schemeCrops[scheme] = schemeCropIndices(scheme);
    const means = schemeMeans(probabilities, NUM_CLASSES, positions, schemeCrops);
    const top5: SchemeTop5 = {};
    for (const scheme of SCHEMES) top5[scheme] = topKEntries(ensembleMean([means[scheme] as Float64Array]), classNames, 5);
    const ranks = positions.map((p) =>
      labelRank(ensembleMean([probabilities.subarray(p * NUM_CLASSES, (p + 1) * NUM_CLASSES)]), SQUARE_LABEL),
    );
    const expected = {
      key: SQUARE,
      label: SQUARE_LABEL,
      width: 150,
      height: 150,
      top5,
      positions: encodePositions(
        ranks.map((rank) => rank === 0),
        ranks.map((rank) => rank < 5),
      ),
      // The labelled class's mean probability per scheme, from the same 144 classified crops.
      labelProbability: Object.fromEntries(SCHEMES.map((scheme) => [scheme, ensembleMean([means[scheme] as Float64Array])[SQUARE_LABEL]])),
    };
    const counting = new CountingEngine(engine);

    // Act
    const records = await collect(
      scoreImages([inputOf(SQUARE, SQUARE_LABEL)], {
        models: [{ engine: counting, info: INFO }],
        crops: 144,
        classNames,
        applyExifOrientation: false,
        batchCrops: 16,
      }),
    );

    // Assess: 4 scales x 6 crops x 2 mirrors; the left, center and right squares coincide.
    expect(counting.crops).toBe(48);
    expect(records).toEqual([expected]);
  });
});

describe("batches packed across images, sampled while the engine runs", () => {
  const files: [string, number][] = [
    ["n01440764_tench.JPEG", 0],
    ["n01494475_hammerhead.JPEG", 4],
    [SQUARE, SQUARE_LABEL],
  ];

  it("give each image the record it gets alone, a bad file its error, in input order", async () => {
    // Prepare: each image alone in one engine call of its 10 crops is the reference.
    const alone: ResultRecord[] = [];
    for (const [file, label] of files) {
      alone.push(
        ...(await collect(
          scoreImages([inputOf(file, label)], { models: [{ engine, info: INFO }], crops: 10, classNames, applyExifOrientation: false, batchCrops: 10 }),
        )),
      );
    }
    const broken: ImageInput = { key: "broken.jpg", label: null, read: () => Promise.resolve(new Uint8Array([0xff, 0xd8, 0xff, 0, 1])) };
    const inputs = [inputOf(files[0]![0], files[0]![1]), broken, inputOf(files[1]![0], files[1]![1]), inputOf(files[2]![0], files[2]![1])];
    const counting = new CountingEngine(engine);

    // Act: batches of 7 straddle images, and two buffers alternate.
    const records = await collect(
      scoreImages(inputs, { models: [{ engine: counting, info: INFO }], crops: 10, classNames, applyExifOrientation: false, batchCrops: 7, lookAhead: 1, readAhead: 2 }),
    );

    // Assess
    expect(records.map((record) => record.key)).toEqual(inputs.map((input) => input.key));
    expect(records[1]).toMatchObject({ key: "broken.jpg", error: expect.stringContaining("broken.jpg") });
    expect([records[0], records[2], records[3]]).toEqual(alone);
    expect(counting.crops).toBe(10 + 10 + 10);
    expect(counting.calls).toBe(Math.ceil(30 / 7));
    // The overlap never hands the engine two batches at once.
    expect(counting.mostRunning).toBe(1);
  });

  it("end the run with the engine's error, without a call left running", async () => {
    // Prepare
    const counting = new CountingEngine(engine);
    counting.failOnCall = 2;
    const inputs = files.map(([file, label]) => inputOf(file, label));

    // Act
    const run = collect(scoreImages(inputs, { models: [{ engine: counting, info: INFO }], crops: 10, classNames, applyExifOrientation: false, batchCrops: 4 }));

    // Assess
    await expect(run).rejects.toThrow("engine failed on call 2");
    expect(counting.running).toBe(0);
  });

  it("finish the running call when the consumer stops early", async () => {
    // Prepare
    const counting = new CountingEngine(engine);
    const inputs = files.map(([file, label]) => inputOf(file, label));

    // Act
    const first: ResultRecord[] = [];
    for await (const record of scoreImages(inputs, { models: [{ engine: counting, info: INFO }], crops: 10, classNames, applyExifOrientation: false, batchCrops: 6 })) {
      first.push(record);
      break;
    }

    // Assess
    expect(first.map((record) => record.key)).toEqual([files[0]![0]]);
    expect(counting.running).toBe(0);
  });
});

describe("reads ahead of decoding", () => {
  it("has the next inputs' reads under way when the first record comes out, and scores them all", async () => {
    // Prepare: twelve reads of a real photo, recording when each starts (as S3 GETs would).
    let started = 0;
    const photo = await readFile(`${SAMPLES}/${files()[0]}`);
    const inputs: ImageInput[] = Array.from({ length: 12 }, (_, i) => ({
      key: `copy-${i}.jpg`,
      label: 0,
      read: () => {
        started++;
        return Promise.resolve(photo);
      },
    }));

    // Act
    const startedAtFirst: number[] = [];
    const keys: string[] = [];
    for await (const record of scoreImages(inputs, {
      models: [{ engine, info: INFO }],
      crops: 1,
      classNames,
      applyExifOrientation: false,
      batchCrops: 1,
      lookAhead: 2,
      readAhead: 5,
    })) {
      if (keys.length === 0) startedAtFirst.push(started);
      keys.push(record.key);
    }

    // Assess: more reads started than the two images being decoded, but never all twelve at once.
    expect(startedAtFirst[0]).toBeGreaterThanOrEqual(5);
    expect(startedAtFirst[0]).toBeLessThan(12);
    expect(keys).toEqual(inputs.map((input) => input.key));
  });
});

function files(): string[] {
  return ["n01440764_tench.JPEG"];
}

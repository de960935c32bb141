import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadEngine } from "../../model/load.js";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { aggregateRun } from "../../queue/aggregate.js";
import { readManifest } from "../../queue/manifest.js";
import { planRun } from "../../queue/plan.js";
import { isFailed, type ResultRecord, type ScoredRecord, type TopEntry } from "../../scoring/records.js";
import { scoreImages } from "../../scoring/scorer.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

const SAMPLES = "../shared/imagenet/samples";
const MODEL = "../shared/models/bvlc-googlenet.onnx";
const SYNSETS = "../shared/imagenet/synset_words.txt";
/** Six photos spread over the classes; their names carry their WNIDs (the labels). */
const PHOTOS = [
  "n01440764_tench.JPEG",
  "n01860187_black_swan.JPEG",
  "n02165105_tiger_beetle.JPEG",
  "n03042490_cliff_dwelling.JPEG",
  "n03887697_paper_towel.JPEG",
  "n04562935_water_tower.JPEG",
];
const RUN = "s3://data/runs/subset";

describe("--classes through plan, a real worker and aggregate (S3/SQS emulator)", () => {
  let emulator: Emulator;
  let synsets: Synsets;
  let worker: CliProcess | undefined;
  /** Each photo's top-5 over all 1000 classes at 1 crop, scored in this process without a subset. */
  const unrestricted = new Map<string, TopEntry[]>();
  let subset: number[];

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    synsets = await readSynsets(SYNSETS);
    const data = new S3Location("s3://data", emulator.s3);
    for (const name of PHOTOS) await data.write(`images/${name}`, await readFile(join(SAMPLES, name)));
    await data.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
    const model = await loadEngine(await readFile(MODEL), { source: MODEL, engine: "onnxruntime" });
    try {
      const inputs = PHOTOS.map((key) => ({ key, label: null, read: () => readFile(join(SAMPLES, key)) }));
      for await (const record of scoreImages(inputs, { models: [model], crops: 1, classNames: synsets.names, applyExifOrientation: false })) {
        if (!isFailed(record)) unrestricted.set(record.key, record.top5["1"] as TopEntry[]);
      }
    } finally {
      await model.engine.dispose();
    }
    // The subset: the photos' unrestricted 2nd to 5th classes, without any photo's 1st. Each
    // photo's top-5 over the subset then starts with its unrestricted top-5 classes that are in
    // the subset, in order, each probability divided by the subset's mass; a worker that ignored
    // the subset would leave the 1st in and the probabilities as they were.
    const firsts = new Set([...unrestricted.values()].map((top) => (top[0] as TopEntry)[0]));
    const others = [...unrestricted.values()].flatMap((top) => top.slice(1).map(([c]) => c));
    subset = [...new Set(others)].filter((c) => !firsts.has(c)).sort((a, b) => a - b);
    await data.write("meta/classes.txt", subset.map((c) => `${synsets.wnids[c]}\n`).join(""));
  });

  afterAll(async () => {
    worker?.killGroup("SIGKILL");
    await emulator?.stop();
  });

  it("restricts each crop's softmax to the subset on the worker, and the aggregate summary names the subset", async () => {
    // Prepare
    const queue = emulator.createQueue("subset", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    await planRun({
      input: "s3://data/images",
      out: RUN,
      queueUrl: queue.queueUrl,
      models: ["s3://data/models/bvlc-googlenet.onnx"],
      classes: "s3://data/meta/classes.txt",
      synsets,
      crops: 1,
      batchSize: 3,
      engine: "onnxruntime",
      clients: { s3: emulator.s3, sqs: emulator.sqs },
    });
    const run = new S3Location(RUN, emulator.s3);
    expect((await readManifest(run)).classes).toEqual(subset);

    // Act: a real worker process drains the queue; then aggregate.
    worker = spawnCli(["worker", "--queue", queue.queueUrl, "--until-empty", "--visibility-timeout", "30", "--heartbeat", "5", "--wait", "1"], emulator.env);
    const exit = await worker.exited;
    const result = await aggregateRun(run, { classNames: synsets.names });

    // Assess: the worker ran both batches, aggregate is complete.
    expect(exit, worker.stderr.join("")).toBe(0);
    expect(worker.events.filter((e) => e.event === "batch-done")).toHaveLength(2);
    expect(result.complete).toBe(true);
    const records = (await run.read("results.jsonl"))
      .toString("utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as ResultRecord);
    expect(records).toHaveLength(PHOTOS.length);
    const inSubset = new Set(subset);
    for (const record of records as ScoredRecord[]) {
      const restricted = record.top5["1"] as TopEntry[];
      const full = unrestricted.get(record.key) as TopEntry[];
      const kept = full.filter(([c]) => inSubset.has(c));
      const mass = (entries: TopEntry[]): number => entries.reduce((sum, [, p]) => sum + p, 0);
      // Every class listed is in the subset; the kept ones lead, in order, each scaled by one
      // factor 1 / (subset's mass), which is at least 1 / (1 - the left-out top-5 mass) and at
      // most 1 / (the kept mass).
      expect(kept.length).toBeGreaterThan(0);
      expect(restricted.every(([c]) => inSubset.has(c))).toBe(true);
      expect(restricted.slice(0, kept.length).map(([c]) => c)).toEqual(kept.map(([c]) => c));
      const scale = (restricted[0] as TopEntry)[1] / (kept[0] as TopEntry)[1];
      expect(scale).toBeGreaterThanOrEqual(1 / (1 - (mass(full) - mass(kept))) - 1e-6);
      expect(scale).toBeLessThanOrEqual(1 / mass(kept) + 1e-6);
      for (const [i, [, p]] of kept.entries()) expect((restricted[i] as TopEntry)[1] / (p * scale)).toBeCloseTo(1, 4);
    }
    const summary = JSON.parse((await run.read("summary.json")).toString("utf8")) as { labelSpace: unknown; labelled: number };
    expect(summary.labelled).toBe(PHOTOS.length);
    expect(summary.labelSpace).toEqual({ layout: "wnid-in-path", classes: { count: subset.length, indices: subset } });
  });
});

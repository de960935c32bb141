import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadEngine } from "../../model/load.js";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { aggregateRun } from "../../queue/aggregate.js";
import { parseLabels } from "../../scoring/labels.js";
import { batchResultKeyFor, readManifest, readManifestWithDigest, type Manifest } from "../../queue/manifest.js";
import { planRun, sendBatches } from "../../queue/plan.js";
import { isFailed, type ResultRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { scoreImages, type ImageInput } from "../../scoring/scorer.js";
import { summarize } from "../../scoring/summary.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator, type QueuePair } from "../helpers/emulator.js";

const SHARED = "../shared";
const SAMPLES = `${SHARED}/imagenet/samples`;
const MODEL = `${SHARED}/models/bvlc-googlenet.onnx`;
const SYNSETS = `${SHARED}/imagenet/synset_words.txt`;
const LABELS = `${SHARED}/imagenet/samples-val.txt`;
/** Ten real photos spread over the classes (every hundredth sample). */
const PHOTOS = [
  "n01440764_tench.JPEG",
  "n01860187_black_swan.JPEG",
  "n02097474_Tibetan_terrier.JPEG",
  "n02165105_tiger_beetle.JPEG",
  "n02669723_academic_gown.JPEG",
  "n03042490_cliff_dwelling.JPEG",
  "n03532672_hook.JPEG",
  "n03887697_paper_towel.JPEG",
  "n04243546_slot.JPEG",
  "n04562935_water_tower.JPEG",
];
const BAD = { corrupt: "zz-corrupt.jpg", empty: "zz-empty.jpg", text: "zz-text-named.jpg" };
const CROPS = 10;
const BATCH_SIZE = 3;
const VISIBILITY = 6;
const HEARTBEAT = 2;
const RUN = "s3://data/runs/r1";

/** Where each input's bytes live locally, for the in-process reference score. */
type LocalFiles = Map<string, string>;

describe("distributed run: plan, two workers (one SIGKILLed), aggregate", () => {
  let emulator: Emulator;
  let queue: QueuePair;
  let scratch: string;
  let local: LocalFiles;
  let synsets: Synsets;
  let env: Record<string, string>;
  const started: CliProcess[] = [];
  let summaryBytes: Buffer;
  let resultsBytes: Buffer;

  const workerArgs = (): string[] => [
    "worker",
    "--queue",
    queue.queueUrl,
    "--until-empty",
    "--visibility-timeout",
    String(VISIBILITY),
    "--heartbeat",
    String(HEARTBEAT),
    "--wait",
    "1",
  ];

  const startWorker = (): CliProcess => {
    const worker = spawnCli(workerArgs(), env);
    started.push(worker);
    return worker;
  };

  const queueCounts = async (): Promise<{ visible: number; inFlight: number }> => {
    const response = await emulator.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queue.queueUrl,
        AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
      }),
    );
    return {
      visible: Number(response.Attributes?.ApproximateNumberOfMessages),
      inFlight: Number(response.Attributes?.ApproximateNumberOfMessagesNotVisible),
    };
  };

  const run = (): S3Location => new S3Location(RUN, emulator.s3);

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    queue = emulator.createQueue("work", { visibilityTimeoutSeconds: VISIBILITY, maxReceiveCount: 3 });
    scratch = await mkdtemp(join(tmpdir(), "pipeline-"));
    synsets = await readSynsets(SYNSETS);
    local = new Map(PHOTOS.map((name) => [name, join(SAMPLES, name)]));
    const jpeg = await readFile(join(SAMPLES, PHOTOS[0] as string));
    // Cut mid-scan: the decoder reaches premature end of data.
    await writeFile(join(scratch, BAD.corrupt), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    await writeFile(join(scratch, BAD.empty), new Uint8Array(0));
    await writeFile(join(scratch, BAD.text), "this is a text file, not a JPEG\n");
    for (const name of Object.values(BAD)) local.set(name, join(scratch, name));

    const images = new S3Location("s3://data/images", emulator.s3);
    for (const [key, path] of local) await images.write(key, await readFile(path));
    const data = new S3Location("s3://data", emulator.s3);
    await data.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
    await data.write("meta/val.txt", await readFile(LABELS));
    await data.write("meta/synset_words.txt", await readFile(SYNSETS));
    env = { ...emulator.env, GOOGLENET_EVAL_SYNSETS: "s3://data/meta/synset_words.txt" };
  });

  afterAll(async () => {
    for (const worker of started) worker.killGroup("SIGKILL");
    await emulator?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it("plans the run: manifest in S3, one message per batch", async () => {
    // Act
    const plan = spawnCli(
      [
        "plan",
        "--input",
        "s3://data/images/",
        "--labels",
        "s3://data/meta/val.txt",
        "--model",
        "s3://data/models/bvlc-googlenet.onnx",
        "--queue",
        queue.queueUrl,
        "--out",
        RUN,
        "--batch-size",
        String(BATCH_SIZE),
        "--crops",
        String(CROPS),
        "--engine",
        "onnxruntime",
        "--run-id",
        "r1",
      ],
      env,
    );
    const code = await plan.exited;
    // Assess
    expect(code, plan.stderr.join("")).toBe(0);
    expect(JSON.parse(plan.lines[0] as string)).toEqual({
      runId: "r1",
      images: 13,
      labelled: 10,
      batches: 5,
      manifestUrl: `${RUN}/manifest.json`,
      manifestDigest: expect.stringMatching(/^[0-9a-f]{64}$/),
      replaced: 0,
    });
    const manifest = await readManifest(run());
    expect(manifest.models).toEqual([
      {
        url: "s3://data/models/bvlc-googlenet.onnx",
        sha256: "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4",
        flavour: "bvlc",
        preprocess: null,
      },
    ]);
    expect(manifest.batches.flatMap((batch) => batch.keys)).toEqual([...local.keys()].sort());
    expect(await queueCounts()).toEqual({ visible: 5, inFlight: 0 });
  });

  it("refuses to plan a second run into the same --out", async () => {
    // Act / Assess
    await expect(
      planRun({
        input: "s3://data/images",
        out: RUN,
        queueUrl: queue.queueUrl,
        models: ["s3://data/models/bvlc-googlenet.onnx"],
        synsets,
        clients: { s3: emulator.s3, sqs: emulator.sqs },
      }),
    ).rejects.toThrow(/s3:\/\/data\/runs\/r1 is not empty: it holds 2 objects \(label-check\.json, manifest\.json\)/);
    expect(await queueCounts()).toEqual({ visible: 5, inFlight: 0 });
  });

  it("finishes every batch although one worker is SIGKILLed while it holds one", async () => {
    // Prepare
    const workers = [startWorker(), startWorker()];
    // Act: kill the first worker that says it started a batch, at once.
    const first = await Promise.race(
      workers.map(async (worker) => ({ worker, event: await worker.waitForEvent((e) => e.event === "batch-started") })),
    );
    const victim = first.worker;
    const survivor = workers.find((worker) => worker !== victim) as CliProcess;
    const killedBatch = first.event.batch as string;
    // The emulator's own view, read synchronously just before the kill: that batch is in flight.
    const inflight = emulator.server.inspectQueue(queue.queueName)?.messages.inflight ?? [];
    const heldAtKill = inflight.some((entry) => (JSON.parse(entry.message.body) as { batchId?: string }).batchId === killedBatch);
    victim.killGroup("SIGKILL");
    const victimExit = await victim.exited;
    const countsAfterKill = await queueCounts();
    const { manifestDigest } = await readManifestWithDigest(run());
    const resultAfterKill = await run().exists(batchResultKeyFor(manifestDigest, killedBatch));
    const survivorExit = await survivor.exited;
    // Assess
    expect(heldAtKill).toBe(true);
    expect(victimExit).toBe("SIGKILL");
    expect(countsAfterKill.inFlight).toBeGreaterThan(0);
    expect(resultAfterKill).toBe(false);
    expect(survivorExit, survivor.stderr.join("")).toBe(0);
    const redelivered = survivor.events.filter((e) => e.batch === killedBatch);
    expect(redelivered.find((e) => e.event === "batch-done")).toMatchObject({ receiveCount: 2, images: BATCH_SIZE });
    const done = survivor.events.filter((e) => e.event === "batch-done").map((e) => e.batch);
    expect(new Set(done).size).toBe(done.length);
    expect(await queueCounts()).toEqual({ visible: 0, inFlight: 0 });
    expect(emulator.server.inspectQueue(queue.dlqName)?.messages.ready.length).toBe(0);
    console.log(
      [
        `killed worker (pid ${victim.pid}, SIGKILL to its process group while it held ${killedBatch}; ` +
          `queue then showed ${countsAfterKill.inFlight} in flight):`,
        ...victim.lines.map((line) => `  ${line}`),
        `redelivery of ${killedBatch} to the other worker (pid ${survivor.pid}):`,
        ...survivor.lines.filter((line) => line.includes(`"${killedBatch}"`)).map((line) => `  ${line}`),
        `other worker's last line:`,
        `  ${survivor.lines[survivor.lines.length - 1] ?? ""}`,
      ].join("\n"),
    );
  });

  it("aggregates every image exactly once, bad files as errors, error rates equal to a local score", async () => {
    // Prepare: the local reference, scored in this process from the local files.
    const manifest: Manifest = await readManifest(run());
    const labels = parseLabels(await readFile(LABELS, "utf8"), { source: LABELS, synsets });
    const model = await loadEngine(await readFile(MODEL), { source: MODEL, engine: "onnxruntime" });
    const inputs: ImageInput[] = [...local.keys()].sort().map((key) => ({
      key,
      label: labels.lookup(key),
      read: () => readFile(local.get(key) as string),
    }));
    const reference: ResultRecord[] = [];
    try {
      for await (const record of scoreImages(inputs, {
        models: [model],
        crops: CROPS,
        classNames: synsets.names,
        applyExifOrientation: false,
      })) {
        reference.push(record);
      }
    } finally {
      await model.engine.dispose();
    }
    const expected = summarize(reference, [model.info], CROPS);
    // Act
    const result = await aggregateRun(run(), { classNames: synsets.names });
    // Assess
    expect(result).toMatchObject({ complete: true, missingBatches: [] });
    resultsBytes = (await run().read("results.jsonl")) as Buffer;
    summaryBytes = (await run().read("summary.json")) as Buffer;
    const records = resultsBytes
      .toString("utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as ResultRecord);
    expect(records.map((record) => record.key)).toEqual(manifest.batches.flatMap((batch) => batch.keys));
    expect(new Set(records.map((record) => record.key)).size).toBe(13);
    expect(records.filter(isFailed).map((record) => record.key)).toEqual(Object.values(BAD).sort());
    const summary = JSON.parse(summaryBytes.toString("utf8"));
    expect(summary).toMatchObject({ images: 13, scored: 10, failed: 3, labelled: 10, failedKeys: Object.values(BAD).sort() });
    expect(summary.schemes).toEqual(expected.schemes);
    expect(Object.keys(summary.schemes)).toEqual(["1", "10"]);
    expect(summary.perClass).toHaveLength(10);
    // Same predictions image by image, not only the same totals.
    const top1 = (record: ResultRecord | undefined) =>
      record && !isFailed(record) ? [record.top5["1"]?.[0]?.[0], record.top5["10"]?.[0]?.[0]] : "failed";
    for (const [i, record] of records.entries()) expect(top1(record)).toEqual(top1(reference[i]));
  });

  it("keeps summary.json byte for byte when a batch is re-run, a worker restarts and aggregate re-runs", async () => {
    // Prepare: a second delivery of batch b00001, as after a lost delete.
    const { manifest, manifestDigest } = await readManifestWithDigest(run());
    await sendBatches(emulator.sqs, queue.queueUrl, manifest, ["b00001"]);
    const before = await run().read(batchResultKeyFor(manifestDigest, "b00001"));
    // Act: a fresh worker (a restart) takes it, then aggregate runs twice.
    const restarted = startWorker();
    const exit = await restarted.exited;
    await aggregateRun(run(), { classNames: synsets.names });
    await aggregateRun(run(), { classNames: synsets.names });
    // Assess
    expect(exit, restarted.stderr.join("")).toBe(0);
    expect(restarted.events.filter((e) => e.event === "batch-done").map((e) => e.batch)).toEqual(["b00001"]);
    expect(await run().read(batchResultKeyFor(manifestDigest, "b00001"))).toEqual(before);
    expect(await run().read("summary.json")).toEqual(summaryBytes);
    expect(await run().read("results.jsonl")).toEqual(resultsBytes);
  });
});

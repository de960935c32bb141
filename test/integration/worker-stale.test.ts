import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadEngine } from "../../model/load.js";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { BATCH_MESSAGE_TYPE, readManifestWithDigest } from "../../queue/manifest.js";
import { runWorker, type WorkerOptions, type WorkerStats } from "../../queue/worker.js";
import type { ResultRecord, ScoredRecord } from "../../scoring/records.js";
import { scoreImages } from "../../scoring/scorer.js";
import { S3Location } from "../../storage/s3-location.js";
import { s3EventBody, startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { planDataRun, SAMPLES, stageDataBucket, SYNSETS } from "../helpers/planned-run.js";

/*
 * Messages that no retry can help (issue 19, findings 2 and 3): a model replaced under a warm
 * worker, messages of a run planned again, and permanent failures, on the S3/SQS emulator.
 */

const BVLC = "../shared/models/bvlc-googlenet.onnx";
const TORCHVISION = "../shared/models/torchvision-googlenet-untrained.onnx";
/** From ../shared/models/README.md, not from the code under test. */
const BVLC_SHA256 = "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4";
const TORCHVISION_SHA256 = "1843af8e0dc3c89ab917b54e5fca51e7821f9bb70ca677583d43a7bdfa9b46aa";
const PHOTOS = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG"];
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };

type Log = Record<string, unknown>[];

/** Polls `log` until `done` holds, failing with the log after `seconds`. */
async function waitFor(log: Log, done: (entry: Record<string, unknown>) => boolean, seconds = 120): Promise<void> {
  const until = Date.now() + seconds * 1000;
  while (!log.some(done)) {
    if (Date.now() > until) throw new Error(`not seen within ${seconds} s; log: ${JSON.stringify(log)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every record of every batch file under a run. */
async function batchRecords(out: S3Location): Promise<ScoredRecord[]> {
  const records: ScoredRecord[] = [];
  const batches = out.child("batches");
  for await (const key of batches.list()) {
    for (const line of (await batches.read(key)).toString("utf8").split("\n").filter(Boolean)) records.push(JSON.parse(line) as ScoredRecord);
  }
  return records;
}

const top1 = (record: ResultRecord | undefined): number | undefined => (record as ScoredRecord).top5["1"]?.[0]?.[0] as number | undefined;

describe("the worker and messages no retry can help (fauxqs, real ONNX models)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let synsets: Synsets;
  let viaProxy: { s3: S3Client; sqs: SQSClient };
  let data: S3Location;
  let bvlc: Buffer;
  let torchvision: Buffer;

  beforeAll(async () => {
    emulator = await startEmulator();
    proxy = await startFaultProxy(emulator.endpoint);
    synsets = await readSynsets(SYNSETS);
    data = await stageDataBucket(emulator, PHOTOS, { model: false });
    bvlc = await readFile(BVLC);
    torchvision = await readFile(TORCHVISION);
    viaProxy = {
      s3: new S3Client({ region: "us-east-1", endpoint: proxy.url, forcePathStyle: true, credentials: CREDENTIALS }),
      sqs: new SQSClient({ region: "us-east-1", endpoint: proxy.url, credentials: CREDENTIALS }),
    };
  });

  afterEach(() => proxy.clearRules());

  afterAll(async () => {
    viaProxy?.s3.destroy();
    viaProxy?.sqs.destroy();
    await proxy?.close();
    await emulator?.stop();
  });

  /** Plans the two photos (1 crop) into `out` on `queueUrl`, `batchSize` to a batch. */
  async function plan(queueUrl: string, out: string, runId: string, model: string, more: { batchSize?: number; replace?: boolean } = {}) {
    return planDataRun(emulator, synsets, { queueUrl, out, runId, models: [model], batchSize: more.batchSize ?? 2, replace: more.replace ?? false });
  }

  /** A worker in this process through the fault proxy; `untilEmpty` unless a signal stops it. */
  function worker(queueUrl: string, log: Log, more: Partial<WorkerOptions> = {}): Promise<WorkerStats> {
    return runWorker({
      queueUrl,
      classNames: synsets.names,
      clients: viaProxy,
      waitTimeSeconds: 1,
      untilEmpty: more.signal === undefined,
      engineSettings: { threads: 1 },
      log: (entry) => log.push(entry),
      ...more,
    });
  }

  /** Top-1 class per photo, scored here with the model file itself: what the worker should answer. */
  async function expectedTop1(model: Buffer, source: string, applyExifOrientation = false): Promise<(number | undefined)[]> {
    const loaded = await loadEngine(model, { source, engine: "onnxruntime", threads: 1 });
    const classes: (number | undefined)[] = [];
    try {
      const inputs = PHOTOS.map((name) => ({ key: name, label: null, read: () => readFile(join(SAMPLES, name)) }));
      for await (const record of scoreImages(inputs, { models: [loaded], crops: 1, classNames: synsets.names, applyExifOrientation })) classes.push(top1(record));
    } finally {
      await loaded.engine.dispose();
    }
    return classes;
  }

  // Queues where every batch should succeed get a 30 s visibility: the worker runs in this process,
  // and loading a model (its graph edits checked on a probe) can hold the event loop past a 2 s
  // visibility, which the worker rightly takes as a lost message.
  it("a warm worker that scored run 1 with model A scores the next run with model B, replaced at the same key", async () => {
    // Prepare: model A at the key; a worker that stays up between runs.
    await data.write("models/current.onnx", bvlc);
    const pair = emulator.createQueue("swap", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    await plan(pair.queueUrl, "s3://data/runs/swap-1", "swap-1", "s3://data/models/current.onnx");
    const log: Log = [];
    const stop = new AbortController();
    const running = worker(pair.queueUrl, log, { signal: stop.signal });
    await waitFor(log, (entry) => entry.event === "batch-done" && entry.run === "swap-1");

    // Act: model B replaces A at the same key, and a new run is planned with it.
    await data.write("models/current.onnx", torchvision);
    await plan(pair.queueUrl, "s3://data/runs/swap-2", "swap-2", "s3://data/models/current.onnx");
    await waitFor(log, (entry) => (entry.event === "batch-done" && entry.run === "swap-2") || entry.event === "message-failed" || entry.event === "poison");
    stop.abort();
    const stats = await running;

    // Assess: the new run's batch succeeded at once, with B's answers.
    expect(log.filter((entry) => entry.event === "message-failed" || entry.event === "poison")).toEqual([]);
    expect(stats).toMatchObject({ batches: 2, failedMessages: 0, poisonMessages: 0 });
    expect(log.find((entry) => entry.event === "batch-done" && entry.run === "swap-2")).toMatchObject({ receiveCount: 1 });
    const run1 = await readManifestWithDigest(new S3Location("s3://data/runs/swap-1", emulator.s3));
    const run2 = await readManifestWithDigest(new S3Location("s3://data/runs/swap-2", emulator.s3));
    expect([run1.manifest.models[0]?.sha256, run2.manifest.models[0]?.sha256]).toEqual([BVLC_SHA256, TORCHVISION_SHA256]);
    const records = await batchRecords(new S3Location("s3://data/runs/swap-2", emulator.s3));
    expect(records.map((record) => record.key)).toEqual(PHOTOS);
    const expected = await expectedTop1(torchvision, TORCHVISION);
    expect(records.map(top1)).toEqual(expected);
    expect(expected).not.toEqual(await expectedTop1(bvlc, BVLC));
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready).toEqual([]);
  });

  it("drop results name the model they were scored with, and a warm drop worker sees the model replaced", async () => {
    // Prepare
    await data.write("models/drop.onnx", bvlc);
    const pair = emulator.createQueue("drop-swap", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    const photo = await readFile(join(SAMPLES, PHOTOS[0] as string));
    await data.write("drop/first.jpg", photo);
    await data.write("drop/second.jpg", photo);
    const log: Log = [];
    const stop = new AbortController();
    const running = worker(pair.queueUrl, log, {
      signal: stop.signal,
      dropInput: "s3://data/drop/",
      drop: { model: "s3://data/models/drop.onnx", engine: "onnxruntime", crops: 1, out: "s3://data/drop-results" },
    });
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: s3EventBody("data", [{ key: "drop/first.jpg", size: photo.length }]) }));
    await waitFor(log, (entry) => entry.event === "drop-message-done");

    // Act: the drop model is replaced at its key, then another photo is dropped.
    await data.write("models/drop.onnx", torchvision);
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: s3EventBody("data", [{ key: "drop/second.jpg", size: photo.length }]) }));
    await waitFor(log, () => log.filter((entry) => entry.event === "drop-message-done").length === 2);
    stop.abort();
    await running;

    // Assess
    const results = new S3Location("s3://data/drop-results", emulator.s3);
    const first = JSON.parse((await results.read("drop/first.jpg.json")).toString("utf8")) as ScoredRecord & { model: unknown };
    const second = JSON.parse((await results.read("drop/second.jpg.json")).toString("utf8")) as ScoredRecord & { model: unknown };
    expect(first.model).toEqual({ url: "s3://data/models/drop.onnx", sha256: BVLC_SHA256 });
    expect(second.model).toEqual({ url: "s3://data/models/drop.onnx", sha256: TORCHVISION_SHA256 });
    const [bvlcTop1] = await expectedTop1(bvlc, BVLC, true);
    const [torchvisionTop1] = await expectedTop1(torchvision, TORCHVISION, true);
    expect([top1(first), top1(second)]).toEqual([bvlcTop1, torchvisionTop1]);
  });

  it("after plan --replace the old run's messages are deleted as superseded, never dead-lettered (fresh worker)", async () => {
    // Prepare: two one-photo batches planned, then the prefix planned again before any worker ran.
    const pair = emulator.createQueue("replan", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    await data.write("models/bvlc.onnx", bvlc);
    await plan(pair.queueUrl, "s3://data/runs/replan", "replan-1", "s3://data/models/bvlc.onnx", { batchSize: 1 });
    await plan(pair.queueUrl, "s3://data/runs/replan", "replan-2", "s3://data/models/bvlc.onnx", { batchSize: 1, replace: true });
    const log: Log = [];

    // Act
    const stats = await worker(pair.queueUrl, log);

    // Assess
    const superseded = log.filter((entry) => entry.event === "superseded");
    expect(superseded.map((entry) => [entry.run, entry.batch]).sort()).toEqual([
      ["replan-1", "b00000"],
      ["replan-1", "b00001"],
    ]);
    expect(String(superseded[0]?.reason)).toMatch(/^message for run replan-1 .* but s3:\/\/data\/runs\/replan\/manifest\.json is run replan-2 .*: the prefix was planned again$/);
    expect(log.filter((entry) => entry.event === "batch-done").map((entry) => entry.run)).toEqual(["replan-2", "replan-2"]);
    expect(stats).toMatchObject({ batches: 2, failedMessages: 0, poisonMessages: 0 });
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready).toEqual([]);
    expect(emulator.server.inspectQueue(pair.queueName)?.messages).toMatchObject({ ready: [], inflight: [] });
  });

  it("a warm worker that read the old manifest also sees the re-plan: a late copy of an old message is superseded", async () => {
    // Prepare: the worker scores run 1, so its manifest is cached.
    const pair = emulator.createQueue("replan-warm", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    await data.write("models/bvlc.onnx", bvlc);
    await plan(pair.queueUrl, "s3://data/runs/replan-warm", "warm-1", "s3://data/models/bvlc.onnx");
    const old = await readManifestWithDigest(new S3Location("s3://data/runs/replan-warm", emulator.s3));
    const log: Log = [];
    const stop = new AbortController();
    const running = worker(pair.queueUrl, log, { signal: stop.signal });
    await waitFor(log, (entry) => entry.event === "batch-done" && entry.run === "warm-1");

    // Act: the prefix is planned again, and SQS delivers the old message once more (at least once).
    await plan(pair.queueUrl, "s3://data/runs/replan-warm", "warm-2", "s3://data/models/bvlc.onnx", { replace: true });
    const oldBody = { type: BATCH_MESSAGE_TYPE, out: old.manifest.out, runId: "warm-1", batchId: "b00000", manifestDigest: old.manifestDigest };
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: JSON.stringify(oldBody) }));
    await waitFor(log, (entry) => entry.event === "batch-done" && entry.run === "warm-2");
    await waitFor(log, (entry) => entry.event === "superseded" || log.filter((done) => done.event === "batch-done").length > 2, 30);
    stop.abort();
    await running;

    // Assess: the old run's copy was not scored again (no second batch file for warm-1).
    expect(log.filter((entry) => entry.event === "batch-done").map((entry) => entry.run)).toEqual(["warm-1", "warm-2"]);
    expect(log.filter((entry) => entry.event === "superseded")).toMatchObject([{ run: "warm-1", batch: "b00000", action: "deleted" }]);
    const files: string[] = [];
    for await (const key of new S3Location("s3://data/runs/replan-warm/batches", emulator.s3).list()) files.push(key);
    expect(files).toHaveLength(1);
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready).toEqual([]);
  });

  it("each permanent failure goes to the dead-letter queue on its first receive, with the reason", async () => {
    // Prepare: runs planned on a side queue, so only the messages below reach the worker's queue.
    const side = emulator.createQueue("permanent-side", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const pair = emulator.createQueue("permanent", { visibilityTimeoutSeconds: 2, maxReceiveCount: 2 });
    await data.write("models/bvlc.onnx", bvlc);
    const planned = await plan(side.queueUrl, "s3://data/runs/perm", "perm", "s3://data/models/bvlc.onnx");
    await data.write("models/moved.onnx", bvlc);
    const moved = await plan(side.queueUrl, "s3://data/runs/moved", "moved", "s3://data/models/moved.onnx");
    await data.write("models/moved.onnx", torchvision);
    await data.write("runs/old/manifest.json", JSON.stringify({ format: "googlenet-eval/manifest@1", runId: "old", batches: [] }));
    const longKey = `drop/${"a".repeat(1000)}.jpg`;
    const photo = await readFile(join(SAMPLES, PHOTOS[0] as string));
    await data.write(longKey, photo);
    const message = (out: string, runId: string, batchId: string, manifestDigest: string) =>
      JSON.stringify({ type: BATCH_MESSAGE_TYPE, out, runId, batchId, manifestDigest });
    const cases = {
      "batch b00007 is not in s3://data/runs/perm/manifest.json (run perm)": message("s3://data/runs/perm", "perm", "b00007", planned.manifestDigest),
      "no manifest at s3://data/runs/never/manifest.json": message("s3://data/runs/never", "never", "b00000", "0".repeat(64)),
      "s3://data/runs/old/manifest.json is a googlenet-eval/manifest@1 manifest": message("s3://data/runs/old", "old", "b00000", "1".repeat(64)),
      [`model s3://data/models/moved.onnx has sha256 ${TORCHVISION_SHA256} as read from storage now, but its run was planned with ${BVLC_SHA256}`]: message(
        "s3://data/runs/moved",
        "moved",
        "b00000",
        moved.manifestDigest,
      ),
      "result key 1027 bytes, more than S3's 1024, for s3://data/drop/aaaa": s3EventBody("data", [{ key: longKey, size: photo.length }]),
    };
    for (const body of Object.values(cases)) await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: body }));
    const log: Log = [];

    // Act
    const stats = await worker(pair.queueUrl, log, {
      dropInput: "s3://data/drop/",
      drop: { model: "s3://data/models/bvlc.onnx", engine: "onnxruntime", crops: 1, out: "s3://data/drop-results" },
    });

    // Assess: no retry, each moved once with its reason as the attribute.
    expect(log.filter((entry) => entry.event === "message-failed")).toEqual([]);
    expect(stats).toMatchObject({ batches: 0, dropMessages: 0, failedMessages: 0, poisonMessages: 5 });
    const dead = emulator.server.inspectQueue(pair.dlqName)?.messages.ready ?? [];
    expect(dead).toHaveLength(5);
    for (const [reason, body] of Object.entries(cases)) {
      const moved = dead.filter((entry) => entry.body === body);
      expect(moved, reason).toHaveLength(1);
      expect(moved[0]?.messageAttributes["googlenet-eval-reason"]?.StringValue, reason).toContain(reason);
    }
    expect(emulator.server.inspectQueue(pair.queueName)?.messages).toMatchObject({ ready: [], inflight: [] });
  });

  it.each([
    ["403", 1],
    ["503", 3],
  ] as const)("a manifest read answered %s stays a transient failure: retried, then done", async (fault, times) => {
    // Prepare: the SDK tries a 503 three times, a 403 once; so the first receive fails either way.
    const pair = emulator.createQueue(`manifest-${fault}`, { visibilityTimeoutSeconds: 2, maxReceiveCount: 5 });
    await data.write("models/bvlc.onnx", bvlc);
    await plan(pair.queueUrl, `s3://data/runs/manifest-${fault}`, `manifest-${fault}`, "s3://data/models/bvlc.onnx");
    const rule = proxy.addRule({ path: `/data/runs/manifest-${fault}/manifest.json`, fault, times });
    const log: Log = [];

    // Act
    const stats = await worker(pair.queueUrl, log);

    // Assess
    expect(rule.hits).toBe(times);
    expect(log.filter((entry) => entry.event === "message-failed")).toMatchObject([{ receiveCount: 1 }]);
    expect(log.find((entry) => entry.event === "batch-done")).toMatchObject({ receiveCount: 2 });
    expect(stats).toMatchObject({ batches: 1, failedMessages: 1, poisonMessages: 0 });
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready).toEqual([]);
  });
});

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import type { ResultRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { runWorker, type WorkerOptions } from "../../queue/worker.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { nanBiasModel } from "../helpers/onnx-rewrite.js";
import { FOUR_PHOTOS, MODEL, plannedDataRun, SAMPLES, stageDataBucket, SYNSETS } from "../helpers/planned-run.js";

/** Four readable photos, two per batch: b00000 holds the first two (listing order), b00001 the rest. */
const PHOTOS = FOUR_PHOTOS;
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };

/** Every record of every batch file under a run, by key. */
async function batchRecords(out: S3Location): Promise<Map<string, ResultRecord>> {
  const records = new Map<string, ResultRecord>();
  const batches = out.child("batches");
  for await (const key of batches.list()) {
    for (const line of (await batches.read(key)).toString("utf8").split("\n").filter(Boolean)) {
      const record = JSON.parse(line) as ResultRecord;
      records.set(record.key, record);
    }
  }
  return records;
}

describe("the worker under storage faults, poison messages and stops (fauxqs behind a fault proxy)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let synsets: Synsets;
  /** Clients that go through the proxy, as a worker on a flaky network would. */
  let viaProxy: { s3: S3Client; sqs: SQSClient };
  const children: CliProcess[] = [];

  beforeAll(async () => {
    emulator = await startEmulator();
    proxy = await startFaultProxy(emulator.endpoint);
    synsets = await readSynsets(SYNSETS);
    await stageDataBucket(emulator, PHOTOS);
    viaProxy = {
      s3: new S3Client({ region: "us-east-1", endpoint: proxy.url, forcePathStyle: true, credentials: CREDENTIALS }),
      sqs: new SQSClient({ region: "us-east-1", endpoint: proxy.url, credentials: CREDENTIALS }),
    };
  });

  afterEach(() => proxy.clearRules());

  afterAll(async () => {
    for (const child of children) child.killGroup("SIGKILL");
    viaProxy?.s3.destroy();
    viaProxy?.sqs.destroy();
    await proxy?.close();
    await emulator?.stop();
  });

  function inProcessWorker(queueUrl: string, log: Record<string, unknown>[], more: Partial<WorkerOptions> = {}) {
    return runWorker({
      queueUrl,
      classNames: synsets.names,
      clients: viaProxy,
      waitTimeSeconds: 1,
      untilEmpty: true,
      engineSettings: { threads: 1 },
      log: (entry) => log.push({ ...entry, at: proxy.now() }),
      ...more,
    });
  }

  it("a 403 on one input fails its batch, never an error record: backoff, then the dead-letter queue", async () => {
    // Prepare: one photo denied on every read; the queue says 2 s and 2 receives.
    const run = await plannedDataRun(emulator, synsets, "denied", { visibilityTimeoutSeconds: 2, maxReceiveCount: 2 });
    const denied = proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "403" });
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const stats = await inProcessWorker(run.queueUrl, log);

    // Assess: b00001 done; b00000 failed twice with doubling delays and went to the dead-letter queue.
    const failures = log.filter((entry) => entry.event === "message-failed");
    expect(failures.map((entry) => [entry.batch, entry.receiveCount, entry.retryInSeconds])).toEqual([
      ["b00000", 1, 2],
      ["b00000", 2, 4],
    ]);
    expect(String(failures[0]?.error)).toMatch(new RegExp(`cannot read s3://data/images/${PHOTOS[0]}: .*(Access ?Denied|403)`, "i"));
    expect(stats).toMatchObject({ batches: 1, failedMessages: 2, poisonMessages: 0 });
    const dead = emulator.server.inspectQueue(run.dlqName)?.messages.ready ?? [];
    expect(dead.map((message) => (JSON.parse(message.body) as { batchId: string }).batchId)).toEqual(["b00000"]);
    const records = await batchRecords(run.out);
    expect([...records.keys()].sort()).toEqual([PHOTOS[2], PHOTOS[3]]);
    expect([...records.values()].filter((record) => "error" in record)).toEqual([]);
    expect(denied.hits).toBeGreaterThanOrEqual(2);
    const seconds = ((log.find((entry) => entry.event === "worker-stopped")?.at as number) - started) / 1000;
    console.log(`fault: 403 on one input -> batch b00000 failed, retried after 2 s and 4 s, dead-lettered; run took ${seconds.toFixed(1)} s`);
  });

  it("503s that clear within the SDK's retries change nothing", async () => {
    // Prepare: the first two reads of one photo answer 503 SlowDown; the SDK tries 3 times.
    const run = await plannedDataRun(emulator, synsets, "slowdown", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const slow = proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[1]}`, fault: "503", times: 2 });
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const stats = await inProcessWorker(run.queueUrl, log);

    // Assess
    expect(slow.hits).toBe(2);
    console.log(`fault: two 503 SlowDown on one read -> retried by the SDK, both batches done on first receive, in ${((proxy.now() - started) / 1000).toFixed(1)} s`);
    expect(stats, JSON.stringify(log.filter((entry) => entry.event === "message-failed"))).toMatchObject({ batches: 2, failedMessages: 0 });
    const done = log.filter((entry) => entry.event === "batch-done");
    expect(done.map((entry) => entry.receiveCount)).toEqual([1, 1]);
    // Each batch line measures its engine: two photos at 1 crop, on the CPU, never idle beyond the wall time.
    for (const { engine } of done as { engine: { device: string; crops: number; idleShare: number; engineSeconds: number; wallSeconds: number } }[]) {
      expect(engine).toMatchObject({ device: "onnxruntime/cpu", crops: 2 });
      expect(engine.idleShare).toBeGreaterThanOrEqual(0);
      expect(engine.idleShare).toBeLessThan(1);
      expect(engine.engineSeconds).toBeLessThanOrEqual(engine.wallSeconds);
    }
    const records = await batchRecords(run.out);
    expect([...records.keys()].sort()).toEqual([...PHOTOS].sort());
    expect([...records.values()].filter((record) => "error" in record)).toEqual([]);
  });

  it("a key the plan listed that no longer exists is that image's error record", async () => {
    // Prepare
    const run = await plannedDataRun(emulator, synsets, "vanished", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    await emulator.s3.send(new (await import("@aws-sdk/client-s3")).DeleteObjectCommand({ Bucket: "data", Key: `images/${PHOTOS[3]}` }));
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const stats = await inProcessWorker(run.queueUrl, log);

    // Assess
    expect(stats).toMatchObject({ batches: 2, failedMessages: 0 });
    const records = await batchRecords(run.out);
    expect(records.get(PHOTOS[3] as string)).toEqual({ key: PHOTOS[3], error: `${PHOTOS[3]}: not found (listed, but gone when read)` });
    expect([...records.values()].filter((record) => "error" in record)).toHaveLength(1);
    console.log(`fault: a listed key deleted before its batch -> its error record, the batch done, in ${((proxy.now() - started) / 1000).toFixed(1)} s`);
    // Put it back for the other tests.
    await new S3Location("s3://data", emulator.s3).write(`images/${PHOTOS[3]}`, await readFile(join(SAMPLES, PHOTOS[3] as string)));
  });

  it("an input bucket deleted after plan fails the batch (StorageError naming bucket and key), never error records", async () => {
    // Prepare: a run over two photos in their own bucket, which is then deleted.
    const sdk = await import("@aws-sdk/client-s3");
    emulator.server.createBucket("photos19");
    const photos = PHOTOS.slice(0, 2);
    for (const name of photos) await new S3Location("s3://photos19", emulator.s3).write(`in/${name}`, await readFile(join(SAMPLES, name)));
    const { out, ...pair } = await plannedDataRun(emulator, synsets, "bucket-gone", { visibilityTimeoutSeconds: 2, maxReceiveCount: 2 }, { input: "s3://photos19/in" });
    for (const name of photos) await emulator.s3.send(new sdk.DeleteObjectCommand({ Bucket: "photos19", Key: `in/${name}` }));
    await emulator.s3.send(new sdk.DeleteBucketCommand({ Bucket: "photos19" }));
    const log: Record<string, unknown>[] = [];

    // Act
    const stats = await inProcessWorker(pair.queueUrl, log);

    // Assess: failed on each receive, came back once, then the dead-letter queue; no batch file.
    const records = await batchRecords(out);
    console.log(`fault: input bucket deleted after plan -> ${JSON.stringify(stats)}, ${records.size} records: ${JSON.stringify([...records.values()])}`);
    const failures = log.filter((entry) => entry.event === "message-failed");
    expect(failures.map((entry) => [entry.batch, entry.receiveCount])).toEqual([["b00000", 1], ["b00000", 2]]);
    expect(String(failures[0]?.error)).toMatch(/cannot read s3:\/\/photos19\/in\/.*\.JPEG: .*(NoSuchBucket|bucket)/i);
    expect(stats).toMatchObject({ batches: 0, failedMessages: 2 });
    expect(records.size).toBe(0);
    const dead = emulator.server.inspectQueue(pair.dlqName)?.messages.ready ?? [];
    expect(dead).toHaveLength(1);
  });

  it("an input over --max-input-bytes is that image's error record with a fixed reason; the batch is done", async () => {
    // Prepare: a 30 MiB object named .jpg (sent as a multipart upload) next to a real photo.
    emulator.server.createBucket("capped19");
    const bucket = new S3Location("s3://capped19", emulator.s3);
    await bucket.write("in/a-huge.jpg", Buffer.alloc(30 * 1024 * 1024, 0xff));
    await bucket.write(`in/${PHOTOS[0]}`, await readFile(join(SAMPLES, PHOTOS[0] as string)));
    const { out, ...pair } = await plannedDataRun(emulator, synsets, "capped", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 }, { input: "s3://capped19/in" });
    const log: Record<string, unknown>[] = [];

    // Act
    const stats = await inProcessWorker(pair.queueUrl, log, { inputMaxBytes: 1024 * 1024 });

    // Assess
    expect(stats).toMatchObject({ batches: 1, failedMessages: 0 });
    const records = await batchRecords(out);
    expect(records.get("a-huge.jpg")).toEqual({ key: "a-huge.jpg", error: "a-huge.jpg: larger than the input limit of 1048576 bytes" });
    expect("top5" in (records.get(PHOTOS[0] as string) ?? {})).toBe(true);
  });

  it("poison messages go to the dead-letter queue at once with the reason, costing no visibility timeout", async () => {
    // Prepare: a visibility timeout far longer than the test, so waiting for it would show.
    const pair = emulator.createQueue("poison", { visibilityTimeoutSeconds: 300, maxReceiveCount: 5 });
    const bodies = {
      "body is not JSON": "not json {",
      "unknown message type": JSON.stringify({ type: "mystery", hello: 1 }),
      "malformed message": JSON.stringify({ type: "googlenet-eval/batch@1", out: "s3://data/runs/x" }),
      "an object key does not decode": JSON.stringify({
        Records: [{ eventSource: "aws:s3", eventName: "ObjectCreated:Put", s3: { bucket: { name: "data" }, object: { key: "drop/%E0%A4%A.jpg", size: 10 } } }],
      }),
      "watches no drop folder": JSON.stringify({
        Records: [{ eventSource: "aws:s3", eventName: "ObjectCreated:Put", s3: { bucket: { name: "data" }, object: { key: "drop/a.jpg", size: 10 } } }],
      }),
    };
    for (const body of Object.values(bodies)) await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: body }));
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const stats = await inProcessWorker(pair.queueUrl, log);

    // Assess
    const seconds = (proxy.now() - started) / 1000;
    expect(stats).toMatchObject({ poisonMessages: 5, failedMessages: 0, batches: 0 });
    expect(seconds).toBeLessThan(300);
    const dead = emulator.server.inspectQueue(pair.dlqName)?.messages.ready ?? [];
    expect(dead.map((message) => message.body).sort()).toEqual(Object.values(bodies).sort());
    const reasons = log.filter((entry) => entry.event === "poison").map((entry) => String(entry.reason));
    for (const what of Object.keys(bodies)) expect(reasons.some((reason) => reason.includes(what)), what).toBe(true);
    expect(emulator.server.inspectQueue(pair.queueName)?.messages).toMatchObject({ ready: [], inflight: [] });
    for (const message of dead) {
      expect(reasons).toContain(message.messageAttributes["googlenet-eval-reason"]?.StringValue);
    }
    console.log(`fault: 5 poison messages -> dead-letter queue at once, in ${seconds.toFixed(1)} s (visibility timeout 300 s)`);
  });

  it("a poison message whose move to the dead-letter queue fails is moved on its next delivery", async () => {
    // Prepare: SendMessage answers 500 to all three of the SDK's attempts once.
    const pair = emulator.createQueue("poison-retry", { visibilityTimeoutSeconds: 2, maxReceiveCount: 5 });
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: "not json {" }));
    const refused = proxy.addRule({ action: "SendMessage", fault: "500", times: 3 });
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    await inProcessWorker(pair.queueUrl, log);

    // Assess
    expect(refused.hits).toBe(3);
    expect(log.find((entry) => entry.event === "queue-call-failed")).toMatchObject({ kind: "poison", error: "Internal failure (injected by the fault proxy)." });
    expect(log.filter((entry) => entry.event === "poison" && entry.action === "moved to the dead-letter queue")).toHaveLength(1);
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready.map((message) => message.body)).toEqual(["not json {"]);
    console.log(`fault: dead-letter SendMessage failing (500 x3) -> logged, moved on the next delivery, in ${((proxy.now() - started) / 1000).toFixed(1)} s`);
  });

  it("a stalled GetObject: the deadline hands the batch back and ends the worker; another worker finishes it", async () => {
    // Prepare: every read of one photo through the proxy never answers. The stuck worker runs the
    // file as stored (no graph-edit probe), so its model loads in well under its deadline even on
    // a loaded CI host and the deadline meets the stalled read, not the load. The worker that
    // finishes the batch talks to the emulator directly, past the stall.
    const run = await plannedDataRun(emulator, synsets, "stalled", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const stall = proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "stall" });
    const env = { ...emulator.env, AWS_ENDPOINT_URL: proxy.url, GOOGLENET_EVAL_SYNSETS: SYNSETS, GOOGLENET_EVAL_GRAPH_EDITS: "off" };
    const args = ["worker", "--queue", run.queueUrl, "--wait", "1", "--threads", "1"];
    const stuck = spawnCli([...args, "--deadline", "10"], env);
    children.push(stuck);
    const started = proxy.now();

    // Act
    await stuck.waitForEvent((event) => event.event === "batch-started" && event.batch === "b00000");
    const stuckExit = await stuck.exited;
    const handedBackAfter = (proxy.now() - started) / 1000;
    const log: Record<string, unknown>[] = [];
    await inProcessWorker(run.queueUrl, log, { clients: { s3: emulator.s3, sqs: emulator.sqs }, deadlineSeconds: 120 });

    // Assess
    expect(stall.hits).toBeGreaterThanOrEqual(1);
    expect(stuckExit).toBe(1);
    expect(stuck.stderr.join("")).toMatch(/DeadlineExceededError: message .* was not done within its deadline of 10 s/);
    expect(stuck.events.find((event) => event.event === "deadline-exceeded")).toMatchObject({ batch: "b00000" });
    expect(log.find((entry) => entry.event === "batch-done" && entry.batch === "b00000")).toMatchObject({ receiveCount: 2 });
    const records = await batchRecords(run.out);
    expect([...records.keys()].sort()).toEqual([...PHOTOS].sort());
    expect([...records.values()].filter((record) => "error" in record)).toEqual([]);
    console.log(`fault: stalled GetObject -> deadline 10 s, batch handed back, worker exit 1 after ${handedBackAfter.toFixed(1)} s; another worker finished it`);
  });

  it("a model whose outputs are NaN fails every batch: no batch file, then the dead-letter queue", async () => {
    // Prepare
    await new S3Location("s3://data", emulator.s3).write("models/nan.onnx", nanBiasModel(await readFile(MODEL)));
    const { out, ...pair } = await plannedDataRun(emulator, synsets, "nan", { visibilityTimeoutSeconds: 2, maxReceiveCount: 2 }, {
      models: ["s3://data/models/nan.onnx"],
      batchSize: 4,
      // plan's own label check would already stop at the NaN; this test is about the workers.
      labelCheck: false,
    });
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const stats = await inProcessWorker(pair.queueUrl, log);

    // Assess
    expect(stats).toMatchObject({ batches: 0, failedMessages: 2 });
    const failure = log.find((entry) => entry.event === "message-failed");
    expect(String(failure?.error)).toMatch(/^model s3:\/\/data\/models\/nan\.onnx \(sha256 [0-9a-f]{8}.*\) gave NaN for class 0/);
    expect(await batchRecords(out)).toEqual(new Map());
    expect(emulator.server.inspectQueue(pair.dlqName)?.messages.ready).toHaveLength(1);
    console.log(`fault: NaN model -> batch failed twice (backoff 2 s), dead-lettered, no batch file, in ${((proxy.now() - started) / 1000).toFixed(1)} s`);
  });

  it("with --require-gpu on a host without one, the worker exits 1 naming why, before taking a message", async () => {
    // Prepare
    const pair = emulator.createQueue("gpu", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: "left alone" }));

    // Act
    const worker = spawnCli(["worker", "--queue", pair.queueUrl, "--require-gpu"], { ...emulator.env, GOOGLENET_EVAL_SYNSETS: SYNSETS });
    const started = proxy.now();
    children.push(worker);
    const exit = await worker.exited;

    // Assess: this machine has no NVIDIA driver, so tfjs-node-gpu is not even tried.
    expect(exit).toBe(1);
    expect(worker.stderr.join("")).toMatch(
      /googlenet-eval worker: BackendUnavailableError: a GPU is required, but tensorflow \(GPU, @tensorflow\/tfjs-node-gpu\) is not available: no NVIDIA driver/,
    );
    expect(emulator.server.inspectQueue(pair.queueName)?.messages.ready.map((message) => message.body)).toEqual(["left alone"]);
    console.log(`fault: --require-gpu without a GPU -> exit 1 before any receive, in ${((proxy.now() - started) / 1000).toFixed(1)} s`);
  });

  it.each([
    ["fit", ["--stop-timeout", "120"], "batch-done", { visible: 0 }],
    ["fit", ["--stop-timeout", "1"], "abandoned", { visible: 1 }],
    ["abandon", [], "abandoned", { visible: 1 }],
  ] as const)("on SIGTERM mid-batch with --on-stop %s %j it ends with %s, exit 0", async (mode, flags, expected, queueAfter) => {
    // Prepare: one batch of two photos at 144 crops on one thread, so the batch is still running
    // when SIGTERM comes (and, with --stop-timeout 120, finishes in well under that).
    const name = `stop-${mode}-${flags.join("") || "none"}`.replace(/[^a-z0-9-]/g, "");
    const photos = new S3Location("s3://data/two-photos", emulator.s3);
    for (const photo of PHOTOS.slice(0, 2)) await photos.write(photo, await readFile(join(SAMPLES, photo)));
    const pair = await plannedDataRun(emulator, synsets, name, { visibilityTimeoutSeconds: 300, maxReceiveCount: 5 }, { input: photos.url, crops: 144, batchSize: 2 });
    const worker = spawnCli(["worker", "--queue", pair.queueUrl, "--wait", "1", "--threads", "1", "--on-stop", mode, ...flags], {
      ...emulator.env,
      GOOGLENET_EVAL_SYNSETS: SYNSETS,
    });
    children.push(worker);
    await worker.waitForEvent((event) => event.event === "batch-started");
    // Mid-batch: the model is loading or the first of the two 144-crop images is being scored.
    await new Promise((resolve) => setTimeout(resolve, 2000));

    // Act
    process.kill(worker.pid, "SIGTERM");
    const stopAt = proxy.now();
    const exit = await worker.exited;

    // Assess
    expect(exit, worker.stderr.join("")).toBe(0);
    expect(worker.events.some((event) => event.event === expected)).toBe(true);
    expect(worker.events.at(-1)).toMatchObject({ event: "worker-stopped", reason: "signal" });
    const messages = emulator.server.inspectQueue(pair.queueName)?.messages;
    expect({ visible: messages?.ready.length }).toEqual(queueAfter);
    expect(messages?.inflight ?? []).toHaveLength(0);
    console.log(`fault: SIGTERM mid-batch, --on-stop ${mode} ${flags.join(" ")} -> ${expected}, exit 0, in ${((proxy.now() - stopAt) / 1000).toFixed(1)} s after the signal`);
  });
});

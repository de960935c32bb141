import { readFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { S3Client } from "@aws-sdk/client-s3";
import { ChangeMessageVisibilityCommand, ReceiveMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Engine, ModelInfo } from "../../model/engine.js";
import { DeadlineExceededError } from "../../queue/message-errors.js";
import { loadEngine } from "../../model/load.js";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { taskProtectionFromEnvironment } from "../../queue/task-protection.js";
import { runWorker, type WorkerOptions } from "../../queue/worker.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { DATA_MODEL, FOUR_PHOTOS, MODEL, plannedDataRun, stageDataBucket, SYNSETS } from "../helpers/planned-run.js";

const MODEL_URL = DATA_MODEL;
/** Four readable photos; with two per batch, b00000 holds the first two (listing order). */
const PHOTOS = FOUR_PHOTOS;
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The real BVLC engine, recording what a worker does to it: classify after dispose, dispose during classify. */
interface WatchedModel {
  readonly engine: Engine;
  readonly info: ModelInfo;
  readonly misuse: string[];
  disposedAt: number | undefined;
}

async function watchedModel(bytes: Uint8Array): Promise<WatchedModel> {
  const real = await loadEngine(bytes, { source: MODEL_URL, engine: "onnxruntime", threads: 1 });
  let inFlight = 0;
  let disposed = false;
  let idle: (() => void) | undefined;
  const watched: WatchedModel = {
    info: real.info,
    misuse: [],
    disposedAt: undefined,
    engine: {
      engine: real.engine.engine,
      backend: real.engine.backend,
      flavour: real.engine.flavour,
      inputLayout: real.engine.inputLayout,
      preprocess: real.engine.preprocess,
      async classify(input, count) {
        if (disposed) watched.misuse.push("classify after dispose");
        inFlight++;
        try {
          return await real.engine.classify(input, count);
        } finally {
          inFlight--;
          if (inFlight === 0) idle?.();
        }
      },
      async dispose() {
        watched.disposedAt ??= performance.now();
        disposed = true;
        if (inFlight > 0) {
          watched.misuse.push("dispose during classify");
          // Released only once idle, so the record is all this test risks, not the process.
          await new Promise<void>((resolve) => (idle = resolve));
        }
        await real.engine.dispose();
      },
    },
  };
  return watched;
}

describe("the worker's hold on a message: GPU check, heartbeat, deadline, visibility (fauxqs behind a fault proxy)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let synsets: Synsets;
  let modelBytes: Uint8Array;
  const children: CliProcess[] = [];
  const clients: { destroy(): void }[] = [];

  beforeAll(async () => {
    emulator = await startEmulator();
    proxy = await startFaultProxy(emulator.endpoint);
    synsets = await readSynsets(SYNSETS);
    await stageDataBucket(emulator, PHOTOS);
    modelBytes = new Uint8Array(await readFile(MODEL));
  });

  afterEach(() => proxy.clearRules());

  afterAll(async () => {
    for (const child of children) child.killGroup("SIGKILL");
    for (const client of clients) client.destroy();
    await proxy?.close();
    await emulator?.stop();
  });

  /** Clients through the proxy whose requests time out (ms), so the SDK retries a stalled one. */
  function proxiedClients(s3TimeoutMs: number, sqsTimeoutMs = s3TimeoutMs): { s3: S3Client; sqs: SQSClient } {
    const handler = (requestTimeout: number) => ({ requestHandler: { requestTimeout, throwOnRequestTimeout: true } });
    const s3 = new S3Client({ region: "us-east-1", endpoint: proxy.url, forcePathStyle: true, credentials: CREDENTIALS, ...handler(s3TimeoutMs) });
    const sqs = new SQSClient({ region: "us-east-1", endpoint: proxy.url, credentials: CREDENTIALS, ...handler(sqsTimeoutMs) });
    clients.push(s3, sqs);
    return { s3, sqs };
  }

  function worker(queueUrl: string, log: Record<string, unknown>[], more: Partial<WorkerOptions>): Promise<unknown> {
    return runWorker({
      queueUrl,
      classNames: synsets.names,
      waitTimeSeconds: 1,
      untilEmpty: true,
      log: (entry) => log.push({ ...entry, at: proxy.now() }),
      ...more,
    });
  }

  /** The batch messages still on the queue, with their state and receive count, as the emulator holds them. */
  function queueState(queueName: string): { ready: Record<string, number>; inflight: Record<string, number> } {
    const messages = emulator.server.inspectQueue(queueName)?.messages;
    const byBatch = (message: { body: string; approximateReceiveCount: number }): [string, number] => [
      (JSON.parse(message.body) as { batchId: string }).batchId,
      message.approximateReceiveCount,
    ];
    return {
      ready: Object.fromEntries((messages?.ready ?? []).map(byBatch)),
      inflight: Object.fromEntries((messages?.inflight ?? []).map((entry) => byBatch(entry.message))),
    };
  }

  it("a GPU that does not start (onnxruntime, --device cuda): each restart exits 1 before receiving, and ApproximateReceiveCount stays 0", async () => {
    // Prepare: one batch; this host has no CUDA add-on for onnxruntime, as a GPU host whose driver did not load.
    const run = await plannedDataRun(emulator, synsets, "gpu-ort", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 }, { crops: 1, batchSize: 4 });
    const args = ["worker", "--queue", run.queueUrl, "--wait", "1", "--threads", "1", "--engine", "onnxruntime", "--device", "cuda", "--require-gpu"];
    const exits: (number | string)[] = [];
    let stderr = "";

    // Act: two laps of ECS restarting the task.
    for (let lap = 0; lap < 2; lap++) {
      const task = spawnCli(args, { ...emulator.env, GOOGLENET_EVAL_SYNSETS: SYNSETS });
      children.push(task);
      exits.push(await task.exited);
      stderr = task.stderr.join("");
    }

    // Assess: never received, so the healthy batch keeps all five of its receives.
    console.log(`fault: onnxruntime GPU does not start -> 2 restarts, exit 1 each, ApproximateReceiveCount ${JSON.stringify(queueState(run.queueName).ready)}`);
    expect(exits).toEqual([1, 1]);
    expect(stderr).toMatch(/googlenet-eval worker: BackendUnavailableError: a GPU is required, but onnxruntime's CUDA execution provider could not start/);
    expect(queueState(run.queueName)).toEqual({ ready: { b00000: 0 }, inflight: {} });
  });

  /**
   * An ECS agent on loopback (the task-protection endpoint) that applies the second protect call
   * (the first heartbeat's) 3 s late, as a slow agent would; `states` in the order applied.
   */
  async function slowAgent(): Promise<{ uri: string; states: boolean[]; close(): Promise<unknown> }> {
    const states: boolean[] = [];
    let protects = 0;
    const agent = http.createServer((req, res) => {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        const enabled = (JSON.parse(body) as { ProtectionEnabled: boolean }).ProtectionEnabled;
        setTimeout(
          () => {
            states.push(enabled);
            res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ protection: { ProtectionEnabled: enabled } }));
          },
          enabled && ++protects === 2 ? 3000 : 0,
        );
      });
    });
    await new Promise<void>((resolve) => agent.listen(0, "127.0.0.1", resolve));
    const uri = `http://127.0.0.1:${(agent.address() as AddressInfo).port}`;
    return { uri, states, close: () => new Promise((resolve) => agent.close(resolve)) };
  }

  it("a heartbeat slowed past a hand-back: SQS refuses it (MessageNotInflight), and its slow protect call no longer lands after the release", async () => {
    // Prepare: the first heartbeat's ChangeMessageVisibility stalls until the SDK's 3 s request
    // timeout and is retried after the 2 s deadline handed the message back; the agent applies
    // that heartbeat's protect call 3 s late. The batch's first read stalls until the 6 s S3
    // timeout, so the job is still running at the deadline.
    const run = await plannedDataRun(emulator, synsets, "slow-beat", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const model = await watchedModel(modelBytes);
    const stalled = proxy.addRule({ action: "ChangeMessageVisibility", fault: "stall", times: 1 });
    proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "stall", times: 1 });
    const agent = await slowAgent();
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const outcome = await worker(run.queueUrl, log, {
      clients: proxiedClients(6000, 3000),
      heartbeatSeconds: 1,
      deadlineSeconds: 2,
      loadModel: async () => model,
      protection: taskProtectionFromEnvironment({ ECS_AGENT_URI: agent.uri }, fetch, () => undefined),
    }).catch((error: unknown) => error);
    // Long enough for the stalled heartbeat's retry, and anything it provokes, to have landed.
    await sleep(Math.max(0, started + 8000 - proxy.now()));
    await agent.close();

    // Assess: the message handed back stays visible (SQS refused the late heartbeat); the last
    // state the agent applied is the release.
    const refused = proxy.requests.filter((request) => request.action === "ChangeMessageVisibility" && request.at >= started && request.status === 400);
    console.log(
      `fault: heartbeat stalled 3 s across the hand-back -> queue afterwards ${JSON.stringify(queueState(run.queueName))}, ` +
        `refused visibility calls ${refused.length}, agent's states in order ${agent.states.join(",")}`,
    );
    expect(outcome).toBeInstanceOf(DeadlineExceededError);
    expect(stalled.hits).toBe(1);
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(queueState(run.queueName)).toEqual({ ready: { b00000: 1, b00001: 0 }, inflight: {} });
    expect(agent.states.at(-1)).toBe(false);
  });

  it("a heartbeat slowed past a failed batch's backoff: the backoff, not the heartbeat's visibility, decides when it comes back", async () => {
    // Prepare: the message was received once before, so this failure's backoff is twice the
    // 30 s visibility timeout (README: "the visibility timeout, then twice that"): 60 s. The
    // first heartbeat's ChangeMessageVisibility stalls until the 3 s SQS timeout and lands on its
    // retry, after the batch failed (its first read stalls until the 2 s S3 timeout, then 403).
    const run = await plannedDataRun(emulator, synsets, "slow-beat-backoff", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 }, { crops: 1, batchSize: 4 });
    const earlier = await emulator.sqs.send(new ReceiveMessageCommand({ QueueUrl: run.queueUrl }));
    await emulator.sqs.send(
      new ChangeMessageVisibilityCommand({ QueueUrl: run.queueUrl, ReceiptHandle: earlier.Messages?.[0]?.ReceiptHandle, VisibilityTimeout: 0 }),
    );
    const model = await watchedModel(modelBytes);
    const stalled = proxy.addRule({ action: "ChangeMessageVisibility", fault: "stall", times: 1 });
    proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "stall", times: 1 });
    proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "403" });
    const agent = await slowAgent();
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act: the worker has nothing else to do once the batch failed; its last receive ends it.
    await worker(run.queueUrl, log, {
      clients: proxiedClients(2000, 3000),
      heartbeatSeconds: 1,
      untilEmpty: false,
      signal: AbortSignal.timeout(4000),
      loadModel: async () => model,
      protection: taskProtectionFromEnvironment({ ECS_AGENT_URI: agent.uri }, fetch, () => undefined),
    });
    await sleep(Math.max(0, started + 8000 - proxy.now()));
    await agent.close();

    // Assess
    const failure = log.find((entry) => entry.event === "message-failed");
    const failedAt = failure?.at as number;
    const inflight = emulator.server.inspectQueue(run.queueName)?.messages.inflight ?? [];
    const hiddenFor = (inflight[0]?.visibilityDeadline ?? 0) - Date.now();
    const backoffLeft = failedAt + 60_000 - proxy.now();
    console.log(
      `fault: heartbeat stalled 3 s across a 60 s backoff -> message hidden for ${(hiddenFor / 1000).toFixed(1)} s more ` +
        `(the backoff leaves ${(backoffLeft / 1000).toFixed(1)} s); agent's states in order ${agent.states.join(",")}`,
    );
    expect(failure).toMatchObject({ receiveCount: 2, retryInSeconds: 60 });
    expect(stalled.hits).toBe(1);
    expect(inflight).toHaveLength(1);
    expect(Math.abs(hiddenFor - backoffLeft)).toBeLessThan(3000);
    expect(agent.states.at(-1)).toBe(false);
  });

  it("a job past its deadline is cut off: its models are disposed only once it stopped, never under an inference", async () => {
    // Prepare: two images of 144 crops on one thread (several seconds each), the model loaded
    // before the deadline starts, so the 2 s deadline falls in the first image's inference.
    const run = await plannedDataRun(emulator, synsets, "cut-off", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 }, { crops: 144, batchSize: 2 });
    const model = await watchedModel(modelBytes);
    const log: Record<string, unknown>[] = [];

    // Act
    const outcome = await worker(run.queueUrl, log, { clients: proxiedClients(30_000), deadlineSeconds: 2, loadModel: async () => model }).catch(
      (error: unknown) => error,
    );
    const returnedAt = performance.now();
    // Long enough for a job left running to reach the second image's engine calls.
    await sleep(8000);

    // Assess
    console.log(`fault: deadline mid-inference -> engine misuse ${JSON.stringify(model.misuse)}, disposed before runWorker returned: ${String((model.disposedAt ?? Infinity) <= returnedAt)}`);
    expect(outcome).toBeInstanceOf(DeadlineExceededError);
    expect(model.misuse).toEqual([]);
    expect(model.disposedAt).toBeDefined();
    expect(model.disposedAt as number).toBeLessThanOrEqual(returnedAt);
    expect(log.some((entry) => entry.event === "batch-done")).toBe(false);
    expect(queueState(run.queueName).ready).toMatchObject({ b00000: 1 });
  });

  it("a job whose batch-file write outlives its deadline never deletes the message it no longer holds", async () => {
    // Prepare: the batch file's PUT stalls until the SDK's 3 s request timeout and succeeds on
    // its retry, after the 2 s deadline handed the message back.
    const run = await plannedDataRun(emulator, synsets, "stale-delete", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const stalled = proxy.addRule({ method: "PUT", path: "/data/runs/stale-delete/batches/", fault: "stall", times: 1 });
    const model = await watchedModel(modelBytes);
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const outcome = await worker(run.queueUrl, log, {
      clients: proxiedClients(3000),
      deadlineSeconds: 2,
      loadModel: async () => model,
    }).catch((error: unknown) => error);
    await sleep(Math.max(0, started + 7000 - proxy.now()));

    // Assess: handed back with one receive spent; the job's delete was refused, nothing was deleted.
    console.log(
      `fault: batch-file PUT stalled past the deadline -> DeleteMessage calls ${proxy.requests.filter((request) => request.action === "DeleteMessage" && request.at >= started).length}, ` +
        `batch-done logged: ${String(log.some((entry) => entry.event === "batch-done"))}, queue ${JSON.stringify(queueState(run.queueName))}`,
    );
    expect(outcome).toBeInstanceOf(DeadlineExceededError);
    expect(stalled.hits).toBe(1);
    expect(proxy.requests.filter((request) => request.action === "DeleteMessage" && request.at >= started)).toEqual([]);
    expect(log.some((entry) => entry.event === "batch-done")).toBe(false);
    expect(queueState(run.queueName)).toEqual({ ready: { b00000: 1, b00001: 0 }, inflight: {} });
  });

  it("heartbeats that keep failing are loud: once the visibility has run out the job is cut off with VisibilityLostError", async () => {
    // Prepare: every ChangeMessageVisibility answers 500 (after the SDK's 3 attempts); the queue
    // hides a message for 3 s; the batch's first read stalls until 6 s, far inside the 20 s deadline.
    const run = await plannedDataRun(emulator, synsets, "beats-fail", { visibilityTimeoutSeconds: 3, maxReceiveCount: 5 });
    proxy.addRule({ action: "ChangeMessageVisibility", fault: "500" });
    proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "stall", times: 1 });
    const model = await watchedModel(modelBytes);
    const log: Record<string, unknown>[] = [];
    const started = proxy.now();

    // Act
    const outcome = await worker(run.queueUrl, log, {
      clients: proxiedClients(6000),
      heartbeatSeconds: 1,
      deadlineSeconds: 20,
      loadModel: async () => model,
    }).catch((error: unknown) => error);
    await sleep(Math.max(0, started + 8000 - proxy.now()));
    const seconds = ((log.find((entry) => entry.event === "visibility-lost")?.at as number) - started) / 1000;

    // Assess
    console.log(
      `fault: every heartbeat refused (500) -> runWorker ended with ${(outcome as Error | undefined)?.name ?? String(outcome)}, visibility-lost after ${seconds.toFixed(1)} s, ` +
        `heartbeat-failed lines ${log.filter((entry) => entry.event === "heartbeat-failed").length}, batch-done ${log.filter((entry) => entry.event === "batch-done").length}`,
    );
    expect((outcome as Error).name).toBe("VisibilityLostError");
    expect(String((outcome as Error).message)).toMatch(
      /^message \S+ may be visible to other workers again: its visibility ran out 3 s after it was received, after [1-3] failed heartbeats \(last: Internal failure \(injected by the fault proxy\)\.\); its work is stopped$/,
    );
    expect(seconds).toBeLessThan(5);
    const failed = log.filter((entry) => entry.event === "heartbeat-failed");
    expect(failed.length).toBeGreaterThanOrEqual(1);
    expect(failed[0]).toMatchObject({ failedBeats: 1, error: "Internal failure (injected by the fault proxy)." });
    expect(log.find((entry) => entry.event === "visibility-lost")).toMatchObject({ batch: "b00000" });
    expect(log.some((entry) => entry.event === "batch-done")).toBe(false);
    let batchFiles = 0;
    for await (const key of run.out.child("batches").list()) if (key.length > 0) batchFiles++;
    expect(batchFiles).toBe(0);
  });
});

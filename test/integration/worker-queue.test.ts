import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GetQueueAttributesCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { BATCH_MESSAGE_TYPE, batchResultKey } from "../../pipeline/manifest.js";
import { planRun } from "../../pipeline/plan.js";
import { S3Location } from "../../pipeline/s3-location.js";
import { runWorker } from "../../pipeline/worker.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

const SAMPLES = "../shared/imagenet/samples";
const SYNSETS = "../shared/imagenet/synset_words.txt";
const MODEL = "../shared/models/bvlc-googlenet.onnx";

describe("worker queue handling", () => {
  let emulator: Emulator;
  let synsets: Synsets;
  const started: CliProcess[] = [];

  const counts = async (queueUrl: string): Promise<{ visible: number; inFlight: number }> => {
    const response = await emulator.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
      }),
    );
    return {
      visible: Number(response.Attributes?.ApproximateNumberOfMessages),
      inFlight: Number(response.Attributes?.ApproximateNumberOfMessagesNotVisible),
    };
  };

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    synsets = await readSynsets(SYNSETS);
    const data = new S3Location("s3://data", emulator.s3);
    for (const name of ["n01440764_tench.JPEG", "n01860187_black_swan.JPEG"]) {
      await data.write(`images/${name}`, await readFile(join(SAMPLES, name)));
    }
    await data.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
  });

  afterAll(async () => {
    for (const worker of started) worker.killGroup("SIGKILL");
    await emulator?.stop();
  });

  it("leaves poison messages alone until the queue moves them to its dead-letter queue", async () => {
    // Prepare
    const queue = emulator.createQueue("poison", { visibilityTimeoutSeconds: 1, maxReceiveCount: 2 });
    const bodies = [
      "not json {",
      JSON.stringify({ type: "mystery", hello: 1 }),
      JSON.stringify({ type: BATCH_MESSAGE_TYPE, out: "s3://data/runs/never-planned", runId: "x", batchId: "b00000" }),
    ];
    for (const body of bodies) await emulator.sqs.send(new SendMessageCommand({ QueueUrl: queue.queueUrl, MessageBody: body }));
    const log: Record<string, unknown>[] = [];
    // Act
    const stats = await runWorker({
      queueUrl: queue.queueUrl,
      classNames: synsets.names,
      clients: { s3: emulator.s3, sqs: emulator.sqs },
      waitTimeSeconds: 1,
      visibilityTimeoutSeconds: 1,
      heartbeatSeconds: 0.5,
      untilEmpty: true,
      log: (entry) => log.push(entry),
    });
    // Assess
    const dead = emulator.server.inspectQueue(queue.dlqName)?.messages.ready.map((message) => message.body) ?? [];
    expect([...dead].sort()).toEqual([...bodies].sort());
    expect(await counts(queue.queueUrl)).toEqual({ visible: 0, inFlight: 0 });
    expect(stats).toMatchObject({ batches: 0, poisonMessages: 4, failedMessages: 2 });
    expect(log.find((entry) => entry.event === "message-failed")).toMatchObject({
      error: expect.stringMatching(/no manifest at s3:\/\/data\/runs\/never-planned\/manifest\.json/),
    });
    expect(log.filter((entry) => entry.event === "poison").map((entry) => entry.reason)).toContainEqual(
      expect.stringMatching(/unknown message type/),
    );
  });

  it("refuses a heartbeat that could not keep a message hidden", async () => {
    // Act / Assess
    await expect(
      runWorker({ queueUrl: "http://127.0.0.1:1/q", classNames: [], visibilityTimeoutSeconds: 10, heartbeatSeconds: 10 }),
    ).rejects.toThrow(/heartbeat \(10s\) must be positive and shorter than the visibility timeout \(10s\)/);
  });

  describe.each([
    ["abandons the batch it holds (visible again at once)", [] as string[], "abandoned"],
    ["with --finish-on-stop, finishes the batch it holds", ["--finish-on-stop"], "batch-done"],
  ])("on SIGTERM it %s and exits 0", (_name, flags, expectedEvent) => {
    it("stops taking messages", async () => {
      // Prepare: a one-batch run, and a visibility timeout far longer than the test.
      const name = expectedEvent === "abandoned" ? "abandon" : "finish";
      const queue = emulator.createQueue(`stop-${name}`, { visibilityTimeoutSeconds: 120, maxReceiveCount: 3 });
      const out = `s3://data/runs/${name}`;
      await planRun({
        input: "s3://data/images",
        out,
        queueUrl: queue.queueUrl,
        models: ["s3://data/models/bvlc-googlenet.onnx"],
        synsets,
        crops: 10,
        batchSize: 2,
        engine: "onnxruntime",
        runId: name,
        clients: { s3: emulator.s3, sqs: emulator.sqs },
      });
      const worker = spawnCli(
        ["worker", "--queue", queue.queueUrl, "--visibility-timeout", "120", "--wait", "1", ...flags],
        { ...emulator.env, GOOGLENET_EVAL_SYNSETS: SYNSETS },
      );
      started.push(worker);
      await worker.waitForEvent((event) => event.event === "batch-started");
      // Act: the polite stop ECS sends on scale-in or Spot reclaim.
      process.kill(worker.pid, "SIGTERM");
      const exit = await worker.exited;
      // Assess
      expect(exit, worker.stderr.join("")).toBe(0);
      expect(worker.events.some((event) => event.event === expectedEvent)).toBe(true);
      expect(worker.events[worker.events.length - 1]).toMatchObject({ event: "worker-stopped", reason: "signal" });
      const written = await new S3Location(out, emulator.s3).exists(batchResultKey("b00000"));
      if (expectedEvent === "abandoned") {
        expect(written).toBe(false);
        expect(await counts(queue.queueUrl)).toEqual({ visible: 1, inFlight: 0 });
      } else {
        expect(written).toBe(true);
        expect(await counts(queue.queueUrl)).toEqual({ visible: 0, inFlight: 0 });
      }
    });
  });
});

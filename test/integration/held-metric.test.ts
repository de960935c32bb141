import { S3Client } from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { runWorker } from "../../queue/worker.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { FOUR_PHOTOS, plannedDataRun, stageDataBucket, SYNSETS } from "../helpers/planned-run.js";

/** b00000 holds the first two (listing order), b00001 the rest. */
const PHOTOS = FOUR_PHOTOS;
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };
/** Longer than HeldMetric's 10 s tick: a holder would have written again by then. */
const IDLE_MS = 12_000;

type Entry = Record<string, unknown> & { at: number };

describe("what a worker tells the scaling metric while a failed batch sits out its backoff (fauxqs behind a fault proxy)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let synsets: Synsets;
  let viaProxy: { s3: S3Client; sqs: SQSClient };

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

  afterAll(async () => {
    viaProxy?.s3.destroy();
    viaProxy?.sqs.destroy();
    await proxy?.close();
    await emulator?.stop();
  });

  it("writes MessagesHeld for the queue while it holds a batch, and nothing while the failed one waits hidden", async () => {
    // Prepare: a 2-batch run; one photo of b00000 denied (403), so b00000 fails and is hidden for 30 s.
    const pair = await plannedDataRun(emulator, synsets, "held", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    proxy.addRule({ method: "GET", path: `/data/images/${PHOTOS[0]}`, fault: "403" });
    const log: Entry[] = [];
    const stop = new AbortController();
    let idleSince: number | undefined;
    const worker = runWorker({
      queueUrl: pair.queueUrl,
      classNames: synsets.names,
      clients: viaProxy,
      waitTimeSeconds: 1,
      engineSettings: { threads: 1 },
      signal: stop.signal,
      log: (entry) => {
        log.push({ ...entry, at: Date.now() });
        const failed = log.some((e) => e.event === "message-failed");
        const done = log.some((e) => e.event === "batch-done");
        if (failed && done && idleSince === undefined) {
          idleSince = Date.now();
          setTimeout(() => stop.abort(), IDLE_MS);
        }
      },
    });

    // Act: b00000 fails once, b00001 is scored, then the worker idles for 12 s before it is stopped.
    await worker;
    const attributes = await emulator.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: pair.queueUrl, AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"] }),
    );

    // Assess: each hold wrote a valid EMF line for this queue's name ...
    const held = log.filter((entry) => entry.event === "message-held");
    const failedId = log.find((entry) => entry.event === "message-failed")?.messageId;
    expect(held.length).toBeGreaterThanOrEqual(2);
    expect(new Set(held.map((entry) => entry.messageId))).toContain(failedId);
    for (const entry of held) {
      expect(entry).toMatchObject({
        _aws: { CloudWatchMetrics: [{ Namespace: "googlenet-eval", Dimensions: [["QueueName"]], Metrics: [{ Name: "MessagesHeld", Unit: "Count" }] }] },
        QueueName: pair.queueName,
        MessagesHeld: 1,
      });
      const stamp = (entry._aws as { Timestamp: number }).Timestamp;
      expect(stamp % 60_000).toBe(0);
      expect(entry.at - stamp).toBeLessThan(60_000);
    }
    // ... and none once both holds had ended, while SQS still counted the failed batch as not visible.
    const visible = Number(attributes.Attributes?.ApproximateNumberOfMessages);
    const notVisible = Number(attributes.Attributes?.ApproximateNumberOfMessagesNotVisible);
    const heldWhileIdle = log.filter((entry) => entry.event === "message-held" && entry.at >= (idleSince ?? 0)).length;
    // The scaling metric's inputs for that stretch: f6a092f's "visible + not visible" = 0 + 1 = 1,
    // one task kept (for the whole backoff, up to an hour a receive in the stack); now
    // "visible + held" = 0 + 0 = 0.
    expect({ visible, notVisible, heldWhileIdle }).toEqual({ visible: 0, notVisible: 1, heldWhileIdle: 0 });
    expect(visible + notVisible).toBe(1);
    expect(visible + heldWhileIdle).toBe(0);
  }, 120_000);
});

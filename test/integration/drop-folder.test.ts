import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadEngine } from "../../model/load.js";
import { readSynsets } from "../../model/synsets.js";
import { runWorker } from "../../queue/worker.js";
import type { ResultRecord, ScoredRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { scoreImages } from "../../scoring/scorer.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { s3EventBody, s3TestEventBody, startEmulator, type Emulator, type QueuePair } from "../helpers/emulator.js";

const SAMPLES = "../shared/imagenet/samples";
const MODEL = "../shared/models/bvlc-googlenet.onnx";
const SYNSETS = "../shared/imagenet/synset_words.txt";
const PHONE_KEY = "drop/my photos/café über.jpg";
const PLAIN_KEY = "drop/black swan.JPEG";
const TEXT_KEY = "drop/notes.txt";

describe("drop folder: S3 event messages to <drop-out>/<key>.json", () => {
  let emulator: Emulator;
  let queue: QueuePair;
  let worker: CliProcess | undefined;
  let phonePhoto: Buffer;
  let plainPhoto: Buffer;

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("photos");
    queue = emulator.createQueue("drops", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    // A landscape photo stored as a phone does: pixels as shot, EXIF orientation 6 (rotate 90°).
    phonePhoto = await sharp(await readFile(join(SAMPLES, "n02097474_Tibetan_terrier.JPEG")))
      .withMetadata({ orientation: 6 })
      .jpeg({ quality: 95 })
      .toBuffer();
    plainPhoto = await readFile(join(SAMPLES, "n01860187_black_swan.JPEG"));
    const bucket = new S3Location("s3://photos", emulator.s3);
    await bucket.write(PHONE_KEY, phonePhoto);
    await bucket.write(PLAIN_KEY, plainPhoto);
    await bucket.write(TEXT_KEY, "shopping list\n");
    await bucket.write("models/bvlc-googlenet.onnx", await readFile(MODEL));
  });

  afterAll(async () => {
    worker?.killGroup("SIGKILL");
    await emulator?.stop();
  });

  it("an object rewritten larger than the cap after its event is capped on the read: its error record, never read whole", async () => {
    // Prepare: the event says 1,000 bytes; the key now holds 30 MiB (a multipart upload).
    const key = "drop/rewritten.jpg";
    await new S3Location("s3://photos", emulator.s3).write(key, Buffer.alloc(30 * 1024 * 1024, 0xff));
    const pair = emulator.createQueue("drops-capped", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: s3EventBody("photos", [{ key, size: 1000 }]) }));
    const log: Record<string, unknown>[] = [];

    // Act
    const stats = await runWorker({
      queueUrl: pair.queueUrl,
      classNames: (await readSynsets(SYNSETS)).names,
      clients: { s3: emulator.s3, sqs: emulator.sqs },
      waitTimeSeconds: 1,
      untilEmpty: true,
      engineSettings: { threads: 1 },
      log: (entry) => log.push(entry),
      dropInput: "s3://photos/drop/",
      drop: { model: "s3://photos/models/bvlc-googlenet.onnx", engine: "onnxruntime", crops: 1, out: "s3://photos/capped-results", maxBytes: 1024 * 1024 },
    });

    // Assess
    expect(stats).toMatchObject({ dropMessages: 1, failedMessages: 0 });
    const record = JSON.parse((await new S3Location("s3://photos/capped-results", emulator.s3).read(`${key}.json`)).toString("utf8")) as unknown;
    // The model's sha256 as ../shared/models/README.md lists it: drop results name their model.
    expect(record).toEqual({
      key,
      error: `${key}: larger than the input limit of 1048576 bytes`,
      model: { url: "s3://photos/models/bvlc-googlenet.onnx", sha256: "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4" },
    });
  });

  it("takes its pixel limit from DROP_MAX_PIXELS: a photo one pixel over is its error record, not scored", async () => {
    // Prepare: the photo's size as sharp reads it from the file, one pixel more than the limit.
    const { width, height } = (await sharp(plainPhoto).metadata()) as { width: number; height: number };
    const pixels = width * height;
    const pair = emulator.createQueue("drops-pixels", { visibilityTimeoutSeconds: 30, maxReceiveCount: 2 });
    await emulator.sqs.send(new SendMessageCommand({ QueueUrl: pair.queueUrl, MessageBody: s3EventBody("photos", [{ key: PLAIN_KEY, size: plainPhoto.length }]) }));

    // Act: the setting as the ECS task definition passes it.
    const limited = spawnCli(["worker", "--until-empty", "--wait", "1", "--engine", "onnxruntime", "--threads", "1"], {
      ...emulator.env,
      QUEUE_URL: pair.queueUrl,
      DEFAULT_MODEL: "s3://photos/models/bvlc-googlenet.onnx",
      DEFAULT_CROPS: "1",
      DROP_OUTPUT: "s3://photos/pixel-results",
      DROP_MAX_PIXELS: String(pixels - 1),
      GOOGLENET_EVAL_SYNSETS: SYNSETS,
      DROP_INPUT: "s3://photos/drop/",
    });
    const exit = await limited.exited;

    // Assess
    expect(exit, limited.stderr.join("")).toBe(0);
    const record = JSON.parse((await new S3Location("s3://photos/pixel-results", emulator.s3).read(`${PLAIN_KEY}.json`)).toString("utf8")) as Record<string, unknown>;
    expect(record.error).toBe(`${PLAIN_KEY}: ${width}x${height} is ${pixels} pixels, more than the limit of ${pixels - 1} (maxPixels)`);
    expect(record).not.toHaveProperty("top5");
  });

  it("writes exactly one result per new image, keyed by the original key, and nothing else", async () => {
    // Prepare: the messages S3 would send, in AWS's JSON.
    const bodies = [
      s3TestEventBody("photos"),
      s3EventBody("photos", [{ key: PHONE_KEY, size: phonePhoto.length }]),
      s3EventBody("photos", [
        { key: PLAIN_KEY, size: plainPhoto.length },
        { key: TEXT_KEY, size: 14 },
      ]),
      // S3 delivers at least once: the same event again.
      s3EventBody("photos", [{ key: PLAIN_KEY, size: plainPhoto.length }]),
      // Outside the watched prefix: never read, moved to the dead-letter queue with the reason.
      s3EventBody("photos", [{ key: "models/bvlc-googlenet.onnx", size: 1000 }]),
    ];
    for (const body of bodies) await emulator.sqs.send(new SendMessageCommand({ QueueUrl: queue.queueUrl, MessageBody: body }));
    // Act: settings from the environment, as the ECS task definition passes them.
    worker = spawnCli(["worker", "--until-empty", "--wait", "1", "--engine", "onnxruntime"], {
      ...emulator.env,
      QUEUE_URL: queue.queueUrl,
      DEFAULT_MODEL: "s3://photos/models/bvlc-googlenet.onnx",
      DEFAULT_CROPS: "1",
      DROP_OUTPUT: "s3://photos/results",
      GOOGLENET_EVAL_SYNSETS: SYNSETS,
      DROP_INPUT: "s3://photos/drop/",
    });
    const exit = await worker.exited;
    // Assess
    expect(exit, worker.stderr.join("")).toBe(0);
    const results = new S3Location("s3://photos/results", emulator.s3);
    const written: string[] = [];
    for await (const key of results.list()) written.push(key);
    expect(written).toEqual([`${PLAIN_KEY}.json`, `${PHONE_KEY}.json`].sort());
    const phone = JSON.parse((await results.read(`${PHONE_KEY}.json`)).toString("utf8")) as ScoredRecord;
    const plain = JSON.parse((await results.read(`${PLAIN_KEY}.json`)).toString("utf8")) as ScoredRecord;
    // EXIF orientation applied: the stored landscape pixels come out portrait.
    const stored = await sharp(phonePhoto).metadata();
    expect(stored.width).toBeGreaterThan(stored.height as number);
    expect(phone).toMatchObject({ key: PHONE_KEY, label: null, width: stored.height, height: stored.width });
    const plainSize = await sharp(plainPhoto).metadata();
    expect(plain).toMatchObject({ key: PLAIN_KEY, label: null, width: plainSize.width, height: plainSize.height });
    expect(Object.keys(phone.top5)).toEqual(["1"]);
    // Standard queues do not promise order; the duplicate event rewrote the same key.
    expect(worker.events.filter((e) => e.event === "drop-done").map((e) => e.key).sort()).toEqual([PHONE_KEY, PLAIN_KEY, PLAIN_KEY].sort());
    expect(worker.events.find((e) => e.event === "drop-skipped")).toMatchObject({ key: TEXT_KEY, reason: expect.stringMatching(/not an image/) });
    expect(worker.events.filter((e) => e.event === "s3-test-event")).toHaveLength(1);
    expect(emulator.server.inspectQueue(queue.queueName)?.messages).toMatchObject({ ready: [], inflight: [] });
    const dead = emulator.server.inspectQueue(queue.dlqName)?.messages.ready ?? [];
    expect(dead.map((message) => message.body)).toEqual([bodies[4]]);
    expect(worker.events.find((e) => e.event === "poison")).toMatchObject({
      reason: "event for s3://photos/models/bvlc-googlenet.onnx, outside the watched drop input s3://photos/drop/",
      action: "moved to the dead-letter queue",
    });
    console.log(worker.lines.join("\n"));

    // The same prediction as scoring the same bytes here with orientation applied.
    const synsets = await readSynsets(SYNSETS);
    const model = await loadEngine(await readFile(MODEL), { source: MODEL, engine: "onnxruntime" });
    const local: ResultRecord[] = [];
    try {
      for await (const record of scoreImages(
        [
          { key: PHONE_KEY, label: null, read: async () => phonePhoto },
          { key: PLAIN_KEY, label: null, read: async () => plainPhoto },
        ],
        { models: [model], crops: 1, classNames: synsets.names, applyExifOrientation: true },
      )) {
        local.push(record);
      }
    } finally {
      await model.engine.dispose();
    }
    const classes = (record: ResultRecord | undefined) => (record as ScoredRecord).top5["1"]?.map((entry) => entry[0]);
    expect(classes(phone)).toEqual(classes(local[0]));
    expect(classes(plain)).toEqual(classes(local[1]));
    expect(phone.top5["1"]?.[0]?.[1]).toBeCloseTo((local[0] as ScoredRecord).top5["1"]?.[0]?.[1] as number, 5);
  });
});

import { DeleteObjectCommand, GetObjectCommand } from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { STATUS_FILE, aggregateRun } from "../../queue/aggregate.js";
import {
  MANIFEST_KEY,
  batchResultKeyFor,
  parseBatchMessage,
  readManifestWithDigest,
  type BatchMessage,
  type Manifest,
} from "../../queue/manifest.js";
import type { PlanOptions } from "../../queue/plan.js";
import type { ResultRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import type { Location } from "../../storage/location.js";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator, type QueuePair } from "../helpers/emulator.js";
import { tinyClassifierModel } from "../helpers/onnx-rewrite.js";
import { planDataRun, stageDataBucket, SYNSETS } from "../helpers/planned-run.js";

/** Three photos whose file names carry their WNID: classes 0, 1 and 2. */
const PHOTOS = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01484850_great_white_shark.JPEG"];
const FINAL_FILES = ["results.jsonl", "summary.json", "report.html", STATUS_FILE];

/** What a worker writes for an image: here the label ranked first, so every image is a top-1 hit. */
function scored(key: string, label: number): ResultRecord {
  const top5: [number, number, string][] = [0, 1, 2, 3, 4].map((i) => [(label + i) % 1000, 0.5 / (i + 1), `class ${(label + i) % 1000}`]);
  return { key, label, width: 500, height: 375, top5: { "1": top5 } };
}

const jsonl = (records: ResultRecord[]): string => records.map((record) => `${JSON.stringify(record)}\n`).join("");

/** A real S3 location that also records, per call, the bytes each write stored. */
class RecordingLocation implements Location {
  readonly writes: { key: string; body: string }[] = [];
  constructor(private readonly inner: Location) {}
  get url(): string {
    return this.inner.url;
  }
  list(): AsyncIterable<string> {
    return this.inner.list();
  }
  read(key: string): Promise<Buffer> {
    return this.inner.read(key);
  }
  readIfExists(key: string): Promise<Buffer | undefined> {
    return this.inner.readIfExists(key);
  }
  async write(key: string, body: string | Uint8Array): Promise<void> {
    this.writes.push({ key, body: Buffer.from(body).toString("utf8") });
    await this.inner.write(key, body);
  }
  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }
  clear(): Promise<number> {
    return this.inner.clear();
  }
  child(key: string): Location {
    return this.inner.child(key);
  }
}

describe("plan and aggregate keep runs apart (S3/SQS emulator)", () => {
  let emulator: Emulator;
  let synsets: Synsets;
  let queueNumber = 0;

  const newQueue = (): QueuePair => emulator.createQueue(`plan-${++queueNumber}`, { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
  const location = (url: string): S3Location => new S3Location(url, emulator.s3);
  const keysUnder = async (url: string): Promise<string[]> => {
    const keys: string[] = [];
    for await (const key of location(url).list()) keys.push(key);
    return keys;
  };
  const queued = async (queue: QueuePair): Promise<BatchMessage[]> =>
    (emulator.server.inspectQueue(queue.queueName)?.messages.ready ?? []).map((message) => {
      const parsed = parseBatchMessage(JSON.parse(message.body));
      if (parsed === undefined) throw new Error(`not a batch message: ${message.body}`);
      return parsed;
    });
  const counts = async (queue: QueuePair): Promise<{ visible: number; inFlight: number }> => {
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
  const plan = (queue: QueuePair, out: string, more: Partial<PlanOptions> = {}): ReturnType<typeof planDataRun> =>
    planDataRun(emulator, synsets, { queueUrl: queue.queueUrl, out, ...more });
  /** Does a worker's part for the given messages: one batch file per message, under its digest. */
  const work = async (manifest: Manifest, messages: readonly BatchMessage[]): Promise<void> => {
    for (const message of messages) {
      const batch = manifest.batches.find((candidate) => candidate.id === message.batchId);
      if (batch === undefined) throw new Error(`no batch ${message.batchId}`);
      const records = batch.keys.map((key, i) => scored(key, batch.labels[i] ?? 0));
      await location(message.out).write(batchResultKeyFor(message.manifestDigest, message.batchId), jsonl(records));
    }
  };

  beforeAll(async () => {
    emulator = await startEmulator();
    synsets = await readSynsets(SYNSETS);
    const data = await stageDataBucket(emulator, PHOTOS);
    await data.write("models/tiny.onnx", tinyClassifierModel());
  });

  afterAll(async () => {
    await emulator?.stop();
  });

  it("refuses a prefix holding an earlier run's batch files and sends nothing; --replace clears it and the new run stays clean", async () => {
    // Prepare: an earlier run's batch files (manifest@1 names), its manifest deleted.
    const queue = newQueue();
    const out = "s3://data/runs/reused";
    const old = location(out);
    await old.write("batches/b00000.jsonl", jsonl([scored("old-a.jpg", 7), scored("old-b.jpg", 7)]));
    await old.write("batches/b00001.jsonl", jsonl([scored("old-c.jpg", 7)]));

    // Act
    const refused = plan(queue, out, { runId: "reused-2" });

    // Assess
    await expect(refused).rejects.toThrow(
      "s3://data/runs/reused is not empty: it holds 2 objects (batches/b00000.jsonl, batches/b00001.jsonl), " +
        "and files of another run there could be taken for this one's. Give the run its own empty output prefix, " +
        "or replace it to delete everything under s3://data/runs/reused first. Nothing was sent",
    );
    expect(await counts(queue)).toEqual({ visible: 0, inFlight: 0 });
    expect(await keysUnder(out)).toEqual(["batches/b00000.jsonl", "batches/b00001.jsonl"]);

    // Act: again with --replace
    const planned = await plan(queue, out, { runId: "reused-2", replace: true });

    // Assess: the old files are gone, the manifest is there, one message per batch, each with the digest.
    expect(planned).toMatchObject({ runId: "reused-2", images: 3, labelled: 3, batches: 2, replaced: 2 });
    // label-check.json: plan's label check on the labelled photos, beside the manifest.
    expect(await keysUnder(out)).toEqual(["label-check.json", MANIFEST_KEY]);
    const { manifest, manifestDigest } = await readManifestWithDigest(old);
    expect(manifestDigest).toBe(planned.manifestDigest);
    expect(manifest).toMatchObject({ applyExifOrientation: false, maxPixels: 100_000_000 });
    expect(manifest.models.map((model) => [model.flavour, model.preprocess])).toEqual([["bvlc", null]]);
    const messages = await queued(queue);
    expect(messages.map((message) => [message.batchId, message.runId, message.manifestDigest])).toEqual([
      ["b00000", "reused-2", manifestDigest],
      ["b00001", "reused-2", manifestDigest],
    ]);

    // Act: the workers' batch files land, and so does a late one from the earlier run's last
    // worker (another digest) under the same prefix.
    await work(manifest, messages);
    const stale = "batches/b00001.00000000deadbeef.jsonl";
    await old.write(stale, jsonl([scored("old-c.jpg", 7)]));
    const result = await aggregateRun(old);

    // Assess
    expect(result).toMatchObject({ complete: true, missingBatches: [], ignoredBatchFiles: [stale] });
    const results = (await old.read("results.jsonl")).toString("utf8").trim().split("\n").map((line) => JSON.parse(line).key);
    expect(results).toEqual(PHOTOS);
    expect(JSON.parse((await old.read("summary.json")).toString("utf8"))).toMatchObject({
      images: 3,
      scored: 3,
      labelled: 3,
      schemes: { "1": { top1Error: 0, top5Error: 0 } },
    });
    expect(JSON.parse((await old.read(STATUS_FILE)).toString("utf8"))).toMatchObject({
      complete: true,
      ignoredBatchFileCount: 1,
      ignoredBatchFiles: [stale],
    });
  });

  it("--replace empties a prefix of more than one DeleteObjects page", async () => {
    // Prepare: 1001 objects, one past S3's 1000 keys per DeleteObjects request.
    const out = "s3://data/runs/crowded";
    const names = Array.from({ length: 1001 }, (_, i) => `batches/old-${String(i).padStart(4, "0")}.jsonl`);
    for (let start = 0; start < names.length; start += 50) {
      await Promise.all(names.slice(start, start + 50).map((name) => location(out).write(name, "{}\n")));
    }
    expect(await keysUnder(out)).toHaveLength(1001);

    // Act
    const planned = await plan(newQueue(), out, { replace: true });

    // Assess
    expect(planned.replaced).toBe(1001);
    // label-check.json: plan's label check on the labelled photos, beside the manifest.
    expect(await keysUnder(out)).toEqual(["label-check.json", MANIFEST_KEY]);
  });

  it("carries the decoding settings through the manifest, from the plan command's flags", async () => {
    // Prepare: an ONNX graph the architecture reader does not recognise, so only --preprocess places it.
    const queue = newQueue();
    const out = "s3://data/runs/settings";
    const args = ["plan", "--input", "s3://data/images", "--model", "s3://data/models/tiny.onnx", "--queue", queue.queueUrl];
    // The tiny graph takes 8x8 inputs, which no engine here scores, so plan must not score with it.
    const settings = ["--exif-orientation", "--max-pixels", "187500", "--preprocess", "torchvision", "--engine", "onnxruntime", "--no-label-check"];
    const env = { ...emulator.env, GOOGLENET_EVAL_SYNSETS: SYNSETS };

    // Act
    const cli = spawnCli([...args, "--out", out, "--crops", "1", ...settings], env);
    const exit = await cli.exited;

    // Assess
    expect(exit, cli.stderr.join("")).toBe(0);
    const printed = JSON.parse(cli.lines[0] ?? "");
    const { manifest, manifestDigest } = await readManifestWithDigest(location(out));
    expect(printed).toMatchObject({ images: 3, batches: 1, replaced: 0, manifestDigest });
    expect(manifest).toMatchObject({ applyExifOrientation: true, maxPixels: 187_500, engine: "onnxruntime", crops: 1 });
    expect(manifest.models).toEqual([
      { url: "s3://data/models/tiny.onnx", sha256: expect.stringMatching(/^[0-9a-f]{64}$/), flavour: "torchvision", preprocess: "torchvision" },
    ]);
    expect((await queued(queue)).map((message) => message.manifestDigest)).toEqual([manifestDigest]);

    // Act: the same command onto the now used prefix
    const again = spawnCli([...args, "--out", out, ...settings], env);

    // Assess
    expect(await again.exited).toBe(2);
    expect(again.stderr.join("")).toMatch(
      /s3:\/\/data\/runs\/settings is not empty: it holds 1 object \(manifest\.json\), .* replace it .* Nothing was sent \(on the command line: --out, --replace\)/,
    );
    expect(await counts(queue)).toEqual({ visible: 1, inFlight: 0 });
  });

  it("refuses to aggregate a manifest@1, saying how to plan again", async () => {
    // Prepare
    const out = location("s3://data/runs/format-1");
    const v1 = {
      format: "googlenet-eval/manifest@1",
      runId: "v1",
      createdAt: "2025-01-01T00:00:00.000Z",
      codeVersion: "0.0.9",
      input: "s3://data/images",
      out: out.url,
      models: [{ url: "s3://data/models/bvlc-googlenet.onnx", sha256: "a".repeat(64), flavour: "bvlc" }],
      crops: 1,
      engine: "auto",
      labels: "wnid-in-key",
      images: 1,
      batches: [{ id: "b00000", keys: [PHOTOS[0]], labels: [0] }],
    };
    await out.write(MANIFEST_KEY, `${JSON.stringify(v1, null, 2)}\n`);

    // Act / Assess
    await expect(aggregateRun(out)).rejects.toThrow(
      /^s3:\/\/data\/runs\/format-1\/manifest\.json is a googlenet-eval\/manifest@1 manifest, planned by an older googlenet-eval; .*replacing the same output prefix, or into a new one\)$/,
    );
  });

  it("aggregate exits 3 naming the missing batches, the dead-letter queue and the ignored files", async () => {
    // Prepare: batch b00001 never lands (its message went to the dead-letter queue); a stale file does.
    const queue = newQueue();
    const out = "s3://data/runs/partial";
    await plan(queue, out, { runId: "partial" });
    const { manifest } = await readManifestWithDigest(location(out));
    await work(manifest, (await queued(queue)).filter((message) => message.batchId === "b00000"));
    await location(out).write("batches/b00001.jsonl", jsonl([scored("old.jpg", 1)]));

    // Act
    const cli = spawnCli(["aggregate", "--out", out], emulator.env);
    const exit = await cli.exited;

    // Assess
    const stderr = cli.stderr.join("");
    expect(exit, stderr).toBe(3);
    expect(stderr).toContain(
      `run partial: ignored 1 batch file of another run (not named by this manifest's digest ${(await readManifestWithDigest(location(out))).manifestDigest.slice(0, 16)}): ` +
        `batches/b00001.jsonl; all listed in ${out}/${STATUS_FILE}`,
    );
    expect(stderr).toContain(
      "run partial: incomplete, 1 of 2 batches done; missing: b00001. No summary written. A missing batch is still queued or " +
        "being scored, or, after failing on every delivery, in the dead-letter queue",
    );
    expect(stderr).toContain("aws sqs start-message-move-task --source-arn <DLQ ARN>");
    expect(await location(out).exists("summary.json")).toBe(false);
  });

  it("two concurrent final aggregations write the same bytes, and a later one never downgrades the status", async () => {
    // Prepare: a finished run.
    const queue = newQueue();
    const out = "s3://data/runs/concurrent";
    await plan(queue, out, { runId: "concurrent" });
    const { manifest, manifestDigest } = await readManifestWithDigest(location(out));
    await work(manifest, await queued(queue));
    const first = new RecordingLocation(location(out));
    const second = new RecordingLocation(location(out));

    // Act
    const [a, b] = await Promise.all([aggregateRun(first), aggregateRun(second)]);

    // Assess
    expect(a.complete && b.complete).toBe(true);
    expect(first.writes.map((write) => write.key)).toEqual(FINAL_FILES);
    expect(second.writes).toEqual(first.writes);
    for (const write of first.writes) expect((await location(out).read(write.key)).toString("utf8")).toBe(write.body);

    // Act: a batch file disappears, and an aggregation runs again.
    await emulator.s3.send(new DeleteObjectCommand({ Bucket: "data", Key: `runs/concurrent/${batchResultKeyFor(manifestDigest, "b00001")}` }));
    const later = await aggregateRun(location(out));

    // Assess
    expect(later).toMatchObject({ complete: false, missingBatches: ["b00001"], keptComplete: true });
    const status = await emulator.s3.send(new GetObjectCommand({ Bucket: "data", Key: `runs/concurrent/${STATUS_FILE}` }));
    expect(await status.Body?.transformToString()).toBe(first.writes[3]?.body);
  });
});

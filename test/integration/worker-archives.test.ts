import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { aggregateRun } from "../../queue/aggregate.js";
import { readManifest } from "../../queue/manifest.js";
import { planRun, type PlanOptions } from "../../queue/plan.js";
import { runWorker, type WorkerOptions } from "../../queue/worker.js";
import type { ResultRecord, ScoredRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator, type QueuePair } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from "../helpers/fault-proxy.js";
import { gnuTar, pythonTar } from "../helpers/real-tar.js";

/*
 * The queued pipeline over tar archives (issue 20): plan indexes an S3 archive once and stores
 * the index beside the manifest; workers read each batch of members with one ranged GET
 * carrying If-Match. On the S3/SQS emulator behind the fault proxy, which counts the requests.
 * Archives are written by GNU tar and Python's tarfile, never by the code under test.
 */

const SAMPLES = "../shared/imagenet/samples";
const SYNSETS = "../shared/imagenet/synset_words.txt";
const MODEL = "../shared/models/bvlc-googlenet.onnx";
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };
/** The figure: a planned archive run at 32 images per batch takes at most 1 GET per 16 images. */
const IMAGES_PER_BATCH = 32;

type Log = Record<string, unknown>[];

/** The S3 GETs the proxy saw (from `since` on) of keys under `path` (`/bucket/key...`). */
function getsOf(requests: readonly ProxiedRequest[], path: string, since = 0): ProxiedRequest[] {
  return requests.slice(since).filter((request) => request.service === "s3" && request.method === "GET" && request.path.startsWith(path));
}

/** results.jsonl of an aggregated run, by the key's last segment (the photo's file name). */
async function resultsByName(out: S3Location): Promise<Map<string, ResultRecord>> {
  const lines = (await out.read("results.jsonl")).toString("utf8").split("\n").filter(Boolean);
  return new Map(lines.map((line) => JSON.parse(line) as ResultRecord).map((record) => [record.key.slice(record.key.lastIndexOf("/") + 1), record]));
}

/** Every record of the run's batch files. */
async function batchRecords(out: S3Location): Promise<ResultRecord[]> {
  const records: ResultRecord[] = [];
  const batches = out.child("batches");
  for await (const key of batches.list()) {
    for (const line of (await batches.read(key)).toString("utf8").split("\n").filter(Boolean)) records.push(JSON.parse(line) as ResultRecord);
  }
  return records;
}

describe("plan, worker and aggregate over tar archives on S3 (fauxqs behind a fault proxy)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let synsets: Synsets;
  let viaProxy: { s3: S3Client; sqs: SQSClient };
  let data: S3Location;
  let scratch: string;
  /** The sample photos in file-name order. */
  let photos: string[];

  beforeAll(async () => {
    emulator = await startEmulator();
    proxy = await startFaultProxy(emulator.endpoint);
    emulator.server.createBucket("data");
    synsets = await readSynsets(SYNSETS);
    data = new S3Location("s3://data", emulator.s3);
    await data.write("models/bvlc.onnx", await readFile(MODEL));
    photos = (await readdir(SAMPLES)).sort();
    scratch = await mkdtemp(join(tmpdir(), "worker-archives-"));
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
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  /** Plans at 1 crop through the emulator directly (so the proxy counts only the workers' requests). */
  async function plan(input: string, name: string, queue: QueuePair, more: Partial<PlanOptions> = {}) {
    return planRun({
      input,
      out: `s3://data/runs/${name}`,
      queueUrl: queue.queueUrl,
      models: ["s3://data/models/bvlc.onnx"],
      synsets,
      crops: 1,
      batchSize: IMAGES_PER_BATCH,
      engine: "onnxruntime",
      runId: name,
      labelCheck: false,
      clients: { s3: emulator.s3, sqs: emulator.sqs },
      ...more,
    });
  }

  function worker(queueUrl: string, log: Log, more: Partial<WorkerOptions> = {}) {
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

  it("an S3 archive gives the records of the same photos as loose objects, at 1 ranged GET per 32-image batch", async () => {
    // Prepare: 64 photos as a GNU-format tar and as loose objects; each planned on its own queue.
    const chosen = photos.slice(0, 2 * IMAGES_PER_BATCH);
    await data.write("a/photos.tar", await gnuTar(join(scratch, "a.tar"), "gnu", SAMPLES, chosen));
    for (const name of chosen) await data.write(`loose/${name}`, await readFile(join(SAMPLES, name)));
    const archiveQueue = emulator.createQueue("archive", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const looseQueue = emulator.createQueue("loose", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    // The archive run keeps plan's label check, which reads members through the archive too.
    const planned = await plan("s3://data/a/photos.tar", "archive", archiveQueue, { labelCheck: true });
    await plan("s3://data/loose", "loose", looseQueue);

    // Act
    const archiveLog: Log = [];
    const beforeArchive = proxy.requests.length;
    const archiveStats = await worker(archiveQueue.queueUrl, archiveLog);
    const archiveRequests = proxy.requests.slice(beforeArchive);
    const looseLog: Log = [];
    const beforeLoose = proxy.requests.length;
    const looseStats = await worker(looseQueue.queueUrl, looseLog);
    const looseRequests = proxy.requests.slice(beforeLoose);
    const archiveOut = new S3Location("s3://data/runs/archive", emulator.s3);
    const looseOut = new S3Location("s3://data/runs/loose", emulator.s3);
    await aggregateRun(archiveOut, { classNames: synsets.names });
    await aggregateRun(looseOut, { classNames: synsets.names });

    // Assess: what plan found, and the manifest's archive batches.
    expect(planned).toMatchObject({ input: "1 tar archive, 64 images", images: 64, batches: 2, indexes: { built: 1, reused: 0 } });
    const manifest = await readManifest(archiveOut);
    expect(manifest.archives).toMatchObject([{ key: "photos.tar", url: "s3://data/a/photos.tar", images: 64, index: "archives/0.json" }]);
    expect(manifest.batches.map((batch) => batch.members)).toEqual([
      { archive: 0, first: 0, last: 31 },
      { archive: 0, first: 32, last: 63 },
    ]);
    expect(manifest.batches[0]?.keys[0]).toBe(`photos.tar/${chosen[0]}`);
    // The same records: top-5 classes, probabilities within 1e-6, labels and sizes.
    expect(archiveStats).toMatchObject({ batches: 2, failedMessages: 0 });
    expect(looseStats).toMatchObject({ batches: 2, failedMessages: 0 });
    const fromArchive = await resultsByName(archiveOut);
    const fromLoose = await resultsByName(looseOut);
    expect([...fromArchive.keys()]).toEqual(chosen);
    for (const name of chosen) {
      const a = fromArchive.get(name) as ScoredRecord;
      const b = fromLoose.get(name) as ScoredRecord;
      expect(a.key).toBe(`photos.tar/${name}`);
      expect([a.label, a.width, a.height]).toEqual([b.label, b.width, b.height]);
      const top = (record: ScoredRecord) => record.top5["1"] ?? [];
      expect(top(a).map((entry) => entry[0]), name).toEqual(top(b).map((entry) => entry[0]));
      top(a).forEach((entry, i) => expect(Math.abs(entry[1] - (top(b)[i]?.[1] ?? NaN)), name).toBeLessThanOrEqual(1e-6));
    }
    // GETs of the input at the proxy: one ranged GET per batch, with If-Match, against one per photo.
    const archiveGets = getsOf(archiveRequests, "/data/a/photos.tar");
    const looseGets = getsOf(looseRequests, "/data/loose/");
    expect(archiveGets).toHaveLength(2);
    expect(archiveGets.length / chosen.length).toBeLessThanOrEqual(1 / 16);
    expect(looseGets).toHaveLength(chosen.length);
    const indexGets = getsOf(archiveRequests, "/data/runs/archive/archives/");
    expect(indexGets).toHaveLength(1);
    const allArchiveGets = getsOf(archiveRequests, "/data/").length;
    const allLooseGets = getsOf(looseRequests, "/data/").length;
    console.log(
      `archive run: ${archiveGets.length} GETs of the archive for ${chosen.length} images (${(archiveGets.length / chosen.length).toFixed(4)} per image), ` +
        `${indexGets.length} of its index, ${allArchiveGets} S3 GETs in all (model and manifest included); ` +
        `loose run: ${looseGets.length} GETs of images (${(looseGets.length / chosen.length).toFixed(4)} per image), ${allLooseGets} S3 GETs in all`,
    );
  });

  it("an archive replaced between plan and worker: its batch goes to the dead-letter queue on its first receive, with the reason", async () => {
    // Prepare: a ustar archive of four photos, planned, then overwritten by another archive.
    await data.write("c/photos.tar", await gnuTar(join(scratch, "c1.tar"), "ustar", SAMPLES, photos.slice(100, 104)));
    const queue = emulator.createQueue("replaced", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    await plan("s3://data/c/photos.tar", "replaced", queue);
    await data.write("c/photos.tar", await gnuTar(join(scratch, "c2.tar"), "ustar", SAMPLES, photos.slice(200, 204)));
    const log: Log = [];
    const before = proxy.requests.length;

    // Act
    const stats = await worker(queue.queueUrl, log);

    // Assess: not retried; dead-lettered once with the reason; one GET of the archive, refused 412.
    expect(log.filter((entry) => entry.event === "message-failed")).toEqual([]);
    expect(stats).toMatchObject({ batches: 0, failedMessages: 0, poisonMessages: 1 });
    const reason = /^s3:\/\/data\/c\/photos\.tar changed since its index was built \(ETag no longer "[0-9a-f-]+"\): plan the run again$/;
    expect(String(log.find((entry) => entry.event === "poison")?.reason)).toMatch(reason);
    const dead = emulator.server.inspectQueue(queue.dlqName)?.messages.ready ?? [];
    expect(dead).toHaveLength(1);
    expect(dead[0]?.messageAttributes["googlenet-eval-reason"]?.StringValue).toMatch(reason);
    expect(emulator.server.inspectQueue(queue.queueName)?.messages).toMatchObject({ ready: [], inflight: [] });
    expect(getsOf(proxy.requests, "/data/c/photos.tar", before).map((request) => request.status)).toEqual([412]);
    expect(await batchRecords(new S3Location("s3://data/runs/replaced", emulator.s3))).toEqual([]);
    console.log(`archive replaced after plan -> 1 ranged GET (412), dead-lettered on receive 1: ${String(dead[0]?.messageAttributes["googlenet-eval-reason"]?.StringValue)}`);
  });

  it("503s on a ranged GET past the SDK's retries fail the batch once; the next receive reads it and the batch is done", async () => {
    // Prepare: a pax archive of four photos; its first three GETs (all of the SDK's attempts) answer 503 SlowDown.
    const chosen = photos.slice(300, 304);
    await data.write("d/photos.tar", await gnuTar(join(scratch, "d.tar"), "pax", SAMPLES, chosen));
    const queue = emulator.createQueue("slowdown", { visibilityTimeoutSeconds: 5, maxReceiveCount: 5 });
    await plan("s3://data/d/photos.tar", "slowdown", queue);
    const slow = proxy.addRule({ method: "GET", path: "/data/d/photos.tar", fault: "503", times: 3 });
    const log: Log = [];
    const before = proxy.requests.length;

    // Act
    const stats = await worker(queue.queueUrl, log);

    // Assess
    expect(slow.hits).toBe(3);
    const failures = log.filter((entry) => entry.event === "message-failed");
    expect(failures.map((entry) => [entry.batch, entry.receiveCount])).toEqual([["b00000", 1]]);
    expect(String(failures[0]?.error)).toMatch(/^cannot read image photos\.tar\/.*: cannot read s3:\/\/data\/d\/photos\.tar \(bytes=\d+-\d+\): .*(SlowDown|reduce your request rate)/i);
    expect(log.find((entry) => entry.event === "batch-done")).toMatchObject({ batch: "b00000", receiveCount: 2, failures: 0 });
    expect(stats).toMatchObject({ batches: 1, failedMessages: 1, poisonMessages: 0 });
    const records = await batchRecords(new S3Location("s3://data/runs/slowdown", emulator.s3));
    expect(records.map((record) => record.key)).toEqual(chosen.map((name) => `photos.tar/${name}`));
    expect(records.filter((record) => "error" in record)).toEqual([]);
    const gets = getsOf(proxy.requests, "/data/d/photos.tar", before);
    expect(gets.map((request) => request.status)).toEqual([503, 503, 503, 206]);
    console.log(`503 x3 on the ranged GET -> batch failed on receive 1, done on receive 2; archive GETs: ${gets.map((request) => request.status).join(", ")}`);
  });

  it.each([
    ["a .tar.gz archive", "gz/photos.tar.gz", "s3://data/gz/photos.tar.gz", "aws s3 cp s3://data/gz/photos.tar.gz - | gunzip | aws s3 cp - s3://data/gz/photos.tar"],
    ["a prefix holding a .tgz shard", "tgz-shards/shard-1.tgz", "s3://data/tgz-shards", "aws s3 cp s3://data/tgz-shards/shard-1.tgz - | gunzip | aws s3 cp - s3://data/tgz-shards/shard-1.tar"],
  ])("plan of %s: exit 2 with the one-line fix, nothing read, written or sent", async (_name, key, input, fix) => {
    // Prepare: gzipped by GNU tar; through the proxy, so any GET of it would show.
    const gzipped = await gnuTar(join(scratch, "g.tar.gz"), "gnu", SAMPLES, photos.slice(400, 402), { gzip: true });
    await data.write(key, gzipped);
    if (key.startsWith("tgz-shards/")) await data.write("tgz-shards/shard-0.tar", await gnuTar(join(scratch, "g0.tar"), "gnu", SAMPLES, photos.slice(402, 404)));
    const queue = emulator.createQueue(`gz-${key.length}`, { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const out = `s3://data/runs/gz-${key.length}`;
    const before = proxy.requests.length;

    // Act
    const cli = spawnCli(["plan", input, "--model", "s3://data/models/bvlc.onnx", "--queue", queue.queueUrl, "--out", out, "--crops", "1"], {
      ...emulator.env,
      AWS_ENDPOINT_URL: proxy.url,
      GOOGLENET_EVAL_SYNSETS: SYNSETS,
    });
    const code = await cli.exited;

    // Assess
    // The SDK's own warnings about the Node version may come first; plan's refusal is one line.
    const ours = cli.stderr.join("").split("\n").filter((line) => line.startsWith("googlenet-eval") || line.startsWith("indexing"));
    expect(code).toBe(2);
    expect(ours).toEqual([
      `googlenet-eval plan: s3://data/${key}: workers read archives by byte range, and ranges need an uncompressed tar: ` +
        `gunzip it first, e.g. ${fix}, then plan ${fix.slice(fix.lastIndexOf(" ") + 1)} (score reads .tar.gz as it is). Nothing was sent`,
    ]);
    expect(getsOf(proxy.requests, "/data/gz/", before)).toEqual([]);
    expect(getsOf(proxy.requests, "/data/tgz-shards/", before)).toEqual([]);
    expect(emulator.server.inspectQueue(queue.queueName)?.messages.ready).toEqual([]);
    const written: string[] = [];
    for await (const found of new S3Location(out, emulator.s3).list()) written.push(found);
    expect(written).toEqual([]);
  });

  it("--index-cache: a second plan of the same archive (same ETag and size) takes its index without a GET of the archive", async () => {
    // Prepare: an archive written by Python's tarfile; both plans go through the proxy.
    const chosen = photos.slice(500, 506);
    await data.write("f/photos.tar", await pythonTar(join(scratch, "f.tar"), chosen.map((name) => ({ name, from: join(SAMPLES, name) }))));
    const queue = emulator.createQueue("cache", { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 });
    const progress: [string, number, number][][] = [[], []];
    const planThroughProxy = (run: number) =>
      plan("s3://data/f/photos.tar", `cache-${run}`, queue, {
        indexCache: "s3://data/index-cache",
        clients: viaProxy,
        onIndexProgress: (archive, bytes, size) => progress[run]?.push([archive, bytes, size]),
      });
    const size = (await readFile(join(scratch, "f.tar"))).length;

    // Act
    const first = proxy.requests.length;
    const once = await planThroughProxy(0);
    const second = proxy.requests.length;
    const again = await planThroughProxy(1);

    // Assess: the first plan streamed the archive once (the one GET of its body) and reported its
    // progress up to its size; the second read the cache and never the archive.
    expect(getsOf(proxy.requests.slice(first, second), "/data/f/photos.tar")).toHaveLength(1);
    expect(progress[0]?.at(-1)).toEqual(["photos.tar", size, size]);
    expect(once).toMatchObject({ input: "1 tar archive, 6 images", indexes: { built: 1, reused: 0 } });
    expect(getsOf(proxy.requests, "/data/f/photos.tar", second)).toEqual([]);
    expect(progress[1]).toEqual([]);
    expect(again).toMatchObject({ input: "1 tar archive, 6 images", indexes: { built: 0, reused: 1 } });
    const stored = async (run: number) => (await data.read(`runs/cache-${run}/archives/0.json`)).toString("utf8");
    expect(await stored(1)).toBe(await stored(0));
    const [onceManifest, againManifest] = await Promise.all([0, 1].map((run) => readManifest(new S3Location(`s3://data/runs/cache-${run}`, emulator.s3))));
    expect(againManifest?.archives).toEqual(onceManifest?.archives);
    expect(againManifest?.batches.map((batch) => batch.keys)).toEqual([chosen.map((name) => `photos.tar/${name}`)]);
    console.log(`--index-cache: first plan ${getsOf(proxy.requests.slice(first, second), "/data/f/photos.tar").length} GET of the archive (${size} bytes, ${progress[0]?.length} progress calls), second plan 0`);
  });

  it("plan as a process: a progress line in bytes, what it found, and the index taken from --index-cache the second time", async () => {
    // Prepare
    const bytes = await gnuTar(join(scratch, "cli.tar"), "gnu", SAMPLES, photos.slice(950, 953));
    await data.write("cli/photos.tar", bytes);
    const queue = emulator.createQueue("cli", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const planCli = async (run: number) => {
      const cli = spawnCli(
        ["plan", "s3://data/cli/photos.tar", "--model", "s3://data/models/bvlc.onnx", "--queue", queue.queueUrl, "--out", `s3://data/runs/cli-${run}`,
          "--crops", "1", "--no-label-check", "--index-cache", "s3://data/cli-cache"],
        { ...emulator.env, GOOGLENET_EVAL_SYNSETS: SYNSETS },
      );
      const code = await cli.exited;
      return { code, lines: cli.stderr.join("").split("\n").filter((line) => /^(indexing |input: )/.test(line)) };
    };

    // Act
    const first = await planCli(0);
    const second = await planCli(1);

    // Assess
    // A line when indexing starts, at most one every 2 s, and one at the end (how many in between depends on the host).
    const size = bytes.length.toLocaleString("en-US");
    expect(first.code).toBe(0);
    expect(first.lines[0]).toMatch(new RegExp(`^indexing photos\\.tar: [\\d,]+ of ${size} bytes \\(\\d+%\\)$`));
    expect(first.lines.slice(-2)).toEqual([`indexing photos.tar: ${size} of ${size} bytes (100%)`, "input: 1 tar archive, 3 images"]);
    expect(second).toEqual({ code: 0, lines: ["input: 1 tar archive, 3 images (1 index from s3://data/cli-cache)"] });
  });

  it("a local archive (a worker on the planning host) is read in place, by offsets", async () => {
    // Prepare
    const chosen = photos.slice(900, 903);
    const path = join(scratch, "local.tar");
    await gnuTar(path, "gnu", SAMPLES, chosen);
    const queue = emulator.createQueue("local", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const planned = await plan(path, "local", queue);
    const log: Log = [];

    // Act
    const stats = await worker(queue.queueUrl, log);

    // Assess
    expect(planned).toMatchObject({ input: "1 tar archive, 3 images", batches: 1 });
    expect(stats).toMatchObject({ batches: 1, failedMessages: 0 });
    const records = await batchRecords(new S3Location("s3://data/runs/local", emulator.s3));
    expect(records.map((record) => [record.key, "top5" in record])).toEqual(chosen.map((name) => [`local.tar/${name}`, true]));
  });

  it("WebDataset shards beside loose photos: batches never span two shards, and .cls members label the records", async () => {
    // Prepare: two shards of three samples each (a .jpg and a .cls holding the photo's class,
    // its line in synset_words.txt), written by Python's tarfile, and two loose photos beside them.
    const classOf = (name: string) => synsets.wnids.indexOf(name.slice(0, name.indexOf("_")));
    const shardPhotos = [photos.slice(600, 603), photos.slice(700, 703)];
    for (const [n, names] of shardPhotos.entries()) {
      const members = names.flatMap((name, i) => [
        { name: `s${n}/sample${i}.jpg`, from: join(SAMPLES, name) },
        { name: `s${n}/sample${i}.cls`, text: `${classOf(name)}\n` },
      ]);
      await data.write(`wds/shard-${n}.tar`, await pythonTar(join(scratch, `shard-${n}.tar`), members));
    }
    const loose = photos.slice(800, 802);
    for (const name of loose) await data.write(`wds/${name}`, await readFile(join(SAMPLES, name)));
    const queue = emulator.createQueue("wds", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const planned = await plan("s3://data/wds", "wds", queue, { batchSize: 2 });
    const log: Log = [];
    const before = proxy.requests.length;

    // Act
    const stats = await worker(queue.queueUrl, log);
    const out = new S3Location("s3://data/runs/wds", emulator.s3);
    await aggregateRun(out, { classNames: synsets.names });

    // Assess: the loose photos batch alone, then each shard in runs of at most two members.
    expect(planned).toMatchObject({ input: "2 tar shards, 6 images and 2 loose images", images: 8, batches: 5 });
    const manifest = await readManifest(out);
    expect(manifest.labels).toBe("WebDataset .cls members");
    expect(manifest.batches.map((batch) => [batch.keys, batch.members])).toEqual([
      [loose, undefined],
      [["shard-0.tar/s0/sample0.jpg", "shard-0.tar/s0/sample1.jpg"], { archive: 0, first: 0, last: 1 }],
      [["shard-0.tar/s0/sample2.jpg"], { archive: 0, first: 2, last: 2 }],
      [["shard-1.tar/s1/sample0.jpg", "shard-1.tar/s1/sample1.jpg"], { archive: 1, first: 0, last: 1 }],
      [["shard-1.tar/s1/sample2.jpg"], { archive: 1, first: 2, last: 2 }],
    ]);
    expect(stats).toMatchObject({ batches: 5, failedMessages: 0 });
    const results = (await out.read("results.jsonl")).toString("utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line) as ScoredRecord);
    const expectedLabels = [...loose, ...shardPhotos.flat()].map(classOf);
    expect(results.map((record) => record.label)).toEqual(expectedLabels);
    expect(results.filter((record) => "error" in record)).toEqual([]);
    // One ranged GET per archive batch, none of the shards otherwise.
    expect(getsOf(proxy.requests, "/data/wds/shard-", before)).toHaveLength(4);
  });
});

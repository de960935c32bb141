import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createAggregateHandler, type S3EventLike } from "../../handlers/aggregate-lambda.js";
import { STATUS_FILE } from "../../queue/aggregate.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest, type Manifest } from "../../queue/manifest.js";
import type { ResultRecord } from "../../scoring/records.js";
import type { Location } from "../../storage/location.js";
import { S3Location } from "../../storage/s3-location.js";
import { s3EventBody, startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { bvlcModel, testManifest } from "../helpers/manifests.js";

const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };
/** Enough batches that reading them all and reading O(1) of them are far apart. */
const BATCH_COUNT = 40;
const FINAL_FILES = ["results.jsonl", "summary.json", "report.html", STATUS_FILE];

const labelOf = (index: number): number => index % 7;

function record(index: number): ResultRecord {
  const label = labelOf(index);
  const top5: [number, number, string][] = [0, 1, 2, 3, 4].map((k) => [(label + k) % 1000, 0.5 / (k + 1), `class ${(label + k) % 1000}`]);
  return { key: `img${String(index).padStart(3, "0")}.jpg`, label, width: 500, height: 375, top5: { "1": top5, "10": top5 } };
}

function manifestOf(out: string, runId: string): Manifest {
  const batches = Array.from({ length: BATCH_COUNT }, (_, i) => ({ id: `b${String(i).padStart(5, "0")}`, keys: [record(i).key], labels: [labelOf(i)] }));
  return testManifest({
    runId,
    input: "s3://data/validation/",
    out,
    models: [bvlcModel("s3://data/models/bvlc-googlenet.onnx", "a".repeat(64))],
    engine: "tfjs",
    labels: "s3://data/val.txt",
    images: BATCH_COUNT,
    batches,
  });
}

/** A real S3Location that calls `pause` once, right after the step named, to order two calls. */
class PausingLocation implements Location {
  constructor(
    private readonly inner: S3Location,
    private readonly step: "list" | "status-read",
    private pause: (() => Promise<void>) | undefined,
  ) {}
  get url(): string {
    return this.inner.url;
  }
  private async paused(): Promise<void> {
    const pause = this.pause;
    this.pause = undefined;
    await pause?.();
  }
  async *list(): AsyncIterable<string> {
    const keys: string[] = [];
    for await (const key of this.inner.list()) keys.push(key);
    if (this.step === "list") await this.paused();
    yield* keys;
  }
  read(key: string): Promise<Buffer> {
    return this.inner.read(key);
  }
  async readIfExists(key: string): Promise<Buffer | undefined> {
    const bytes = await this.inner.readIfExists(key);
    if (key === STATUS_FILE && this.step === "status-read") await this.paused();
    return bytes;
  }
  write(key: string, body: string | Uint8Array): Promise<void> {
    return this.inner.write(key, body);
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

describe("the aggregate Lambda after a run is complete (fauxqs behind a fault proxy, AWS's S3 event JSON)", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let s3: S3Client;

  beforeAll(async () => {
    emulator = await startEmulator();
    proxy = await startFaultProxy(emulator.endpoint);
    emulator.server.createBucket("data");
    s3 = new S3Client({ region: "us-east-1", endpoint: proxy.url, forcePathStyle: true, credentials: CREDENTIALS });
  });

  afterEach(() => proxy.clearRules());

  afterAll(async () => {
    s3?.destroy();
    await proxy?.close();
    await emulator?.stop();
  });

  /** A planned run whose batch files are written, except those in `leaveOut`; returns its keys. */
  async function runWithBatches(runId: string, leaveOut: readonly number[] = []) {
    const url = `s3://data/runs/${runId}`;
    const out = new S3Location(url, emulator.s3);
    const manifest = manifestOf(url, runId);
    await out.write(MANIFEST_KEY, serializeManifest(manifest));
    const keyOf = (i: number): string => batchResultKeyFor(digestOfManifest(manifest), manifest.batches[i]?.id ?? "");
    const writeBatch = (i: number): Promise<void> => out.write(keyOf(i), `${JSON.stringify(record(i))}\n`);
    for (let i = 0; i < BATCH_COUNT; i++) if (!leaveOut.includes(i)) await writeBatch(i);
    const event = (i: number): S3EventLike => JSON.parse(s3EventBody("data", [{ key: `runs/${runId}/${keyOf(i)}`, size: 300 }])) as S3EventLike;
    return { url, out, keyOf, writeBatch, event };
  }

  /** What the proxy saw from `since` on: GETs of objects under the run, and PUTs, by key. */
  function trafficSince(since: number, runId: string): { gets: string[]; puts: string[] } {
    const prefix = `/data/runs/${runId}/`;
    const under = proxy.requests.filter((r) => r.at >= since && r.path.startsWith(prefix));
    // A listing is a GET on the bucket with a query, never on a key under the run.
    const keyOf = (path: string): string => path.slice(prefix.length);
    return {
      gets: under.filter((r) => r.method === "GET").map((r) => keyOf(r.path)),
      puts: under.filter((r) => r.method === "PUT").map((r) => keyOf(r.path)),
    };
  }

  const lastModified = async (runId: string): Promise<(string | undefined)[]> =>
    Promise.all(
      FINAL_FILES.map(async (name) => {
        const head = await emulator.s3.send(new HeadObjectCommand({ Bucket: "data", Key: `runs/${runId}/${name}` }));
        return `${head.ETag} ${head.LastModified?.toISOString()}`;
      }),
    );

  it("a duplicate event after completion reads O(1) objects and rewrites nothing", async () => {
    // Prepare: every batch in; the last batch's event completes the run.
    const run = await runWithBatches("duplicate");
    const logged: string[] = [];
    const handler = createAggregateHandler({ open: (url) => new S3Location(url, s3), log: (line) => logged.push(line) });
    const first = await handler(run.event(BATCH_COUNT - 1));
    const before = await lastModified("duplicate");
    // S3 stamps LastModified to the second: a rewrite must be able to show a later one.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const since = proxy.now();

    // Act: S3 delivers that event again, and another batch's event arrives late.
    const again = await handler(run.event(BATCH_COUNT - 1));
    const late = await handler(run.event(0));

    // Assess: both left the run as it was, each reading the manifest, the status and its one batch file.
    const { gets, puts } = trafficSince(since, "duplicate");
    expect({ puts: puts.length, batchReads: gets.filter((key) => key.startsWith("batches/")).length }).toEqual({ puts: 0, batchReads: 2 });
    expect(gets.sort()).toEqual([MANIFEST_KEY, MANIFEST_KEY, STATUS_FILE, STATUS_FILE, run.keyOf(0), run.keyOf(BATCH_COUNT - 1)].sort());
    expect(await lastModified("duplicate")).toEqual(before);
    expect(first[0]).toMatchObject({ complete: true, images: BATCH_COUNT });
    expect(again[0]).toMatchObject({ complete: true, alreadyAggregated: true });
    expect(late[0]).toMatchObject({ complete: true, alreadyAggregated: true });
    expect(logged.map((line) => JSON.parse(line).event)).toEqual(["aggregated", "already-aggregated", "already-aggregated"]);
  });

  it("a batch file rewritten with other bytes after completion is aggregated again", async () => {
    // Prepare
    const run = await runWithBatches("rewritten");
    const handler = createAggregateHandler({ open: (url) => new S3Location(url, s3), log: () => undefined });
    await handler(run.event(BATCH_COUNT - 1));
    const changed: ResultRecord = { ...record(3), top5: { "1": [[999, 0.9, "class 999"]], "10": [[999, 0.9, "class 999"]] } };
    await run.out.write(run.keyOf(3), `${JSON.stringify(changed)}\n`);

    // Act
    const outcome = await handler(run.event(3));

    // Assess
    expect(outcome[0]).toMatchObject({ complete: true, images: BATCH_COUNT });
    expect(outcome[0]).not.toHaveProperty("alreadyAggregated");
    const results = (await run.out.read("results.jsonl")).toString("utf8").split("\n");
    expect(JSON.parse(results[3] ?? "")).toMatchObject({ key: changed.key, top5: { "1": [[999, 0.9, "class 999"]] } });
  });

  describe.each([
    { step: "list" as const, when: "after its listing" },
    { step: "status-read" as const, when: "after it read the status, before it could write" },
  ])("a late call that pauses $when while the last batch completes the run", ({ step }) => {
    it("writes nothing: no waiting status over complete, no second aggregation", async () => {
      // Prepare: every batch but the last; A is b00000's event, B the last batch's.
      const runId = `race-${step}`;
      const run = await runWithBatches(runId, [BATCH_COUNT - 1]);
      const logged: string[] = [];
      let completedAt = Number.NaN;
      const completeTheRun = async (): Promise<void> => {
        await run.writeBatch(BATCH_COUNT - 1);
        const b = await createAggregateHandler({ open: (url) => new S3Location(url, s3), log: () => undefined })(run.event(BATCH_COUNT - 1));
        expect(b[0]).toMatchObject({ complete: true });
        completedAt = proxy.now();
      };
      const late = createAggregateHandler({ open: (url) => new PausingLocation(new S3Location(url, s3), step, completeTheRun), log: (line) => logged.push(line) });

      // Act
      const outcome = await late(run.event(0));

      // Assess: after B completed, A sent no PUT and read no batch file but its own; the status says complete.
      const { gets, puts } = trafficSince(completedAt, runId);
      expect({ puts, batchReads: gets.filter((key) => key.startsWith("batches/")).length }).toEqual({ puts: [], batchReads: step === "list" ? 1 : 0 });
      const status = JSON.parse((await run.out.read(STATUS_FILE)).toString("utf8")) as { complete: boolean; missingBatches: string[] };
      expect(status).toMatchObject({ complete: true, missingBatches: [] });
      expect(outcome[0]?.error).toBeUndefined();
      expect(JSON.parse(logged.at(-1) ?? "").event).toMatch(/^(waiting|already-aggregated)$/);
    });
  });
});

import { mkdtemp, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StorageError } from "../../storage/errors.js";
import { STATUS_FILE, aggregateRun } from "../../queue/aggregate.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest, type Manifest } from "../../queue/manifest.js";
import type { ResultRecord, TopEntry } from "../../scoring/records.js";
import { LocalLocation, type Location } from "../../storage/location.js";
import { bvlcModel, manifestBatch, testManifest } from "../helpers/manifests.js";

/** A scored record whose top-5 under both schemes is `classes`, first most probable. */
function scored(key: string, label: number | null, classes: number[]): ResultRecord {
  const top5: TopEntry[] = classes.map((c, i) => [c, 0.5 / (i + 1), `class ${c}`]);
  return { key, label, width: 500, height: 375, top5: { "1": top5, "10": top5 } };
}

function failed(key: string): ResultRecord {
  return { key, error: "Input buffer contains unsupported image format" };
}

const BATCHES: { id: string; records: ResultRecord[] }[] = [
  {
    id: "b00000",
    records: [scored("a.jpg", 1, [1, 2, 3, 4, 5]), scored("b.jpg", 2, [1, 2, 3, 4, 5]), failed("bad.jpg")],
  },
  { id: "b00001", records: [scored("c.jpg", 1, [9, 8, 7, 6, 5]), scored("d.jpg", null, [1, 2, 3, 4, 5])] },
];
const FINAL_FILES = ["results.jsonl", "summary.json", "report.html", STATUS_FILE];

function manifest(out: string): Manifest {
  return testManifest({
    runId: "run-7",
    input: "/data/images",
    out,
    models: [bvlcModel("/models/bvlc-googlenet.onnx", "f".repeat(64))],
    labels: "/data/val.txt",
    images: 5,
    batches: BATCHES.map((batch) => manifestBatch(batch.id, batch.records)),
  });
}

function jsonl(records: ResultRecord[]): string {
  return records.map((record) => `${JSON.stringify(record)}\n`).join("");
}

/**
 * A real local folder that records what each write stored and can pause one call: a hook runs
 * after the wrapped call and before its caller goes on, to stage an interleaving.
 */
class ObservedLocation implements Location {
  readonly writes: { key: string; body: string }[] = [];
  afterList?: () => Promise<void>;
  afterStatusRead?: () => Promise<void>;
  constructor(private readonly inner: LocalLocation) {}
  get url(): string {
    return this.inner.url;
  }
  async *list(): AsyncIterable<string> {
    const keys: string[] = [];
    for await (const key of this.inner.list()) keys.push(key);
    const hook = this.afterList;
    this.afterList = undefined;
    await hook?.();
    yield* keys;
  }
  read(key: string): Promise<Buffer> {
    return this.inner.read(key);
  }
  async readIfExists(key: string): Promise<Buffer | undefined> {
    const bytes = await this.inner.readIfExists(key);
    if (key === STATUS_FILE) {
      const hook = this.afterStatusRead;
      this.afterStatusRead = undefined;
      await hook?.();
    }
    return bytes;
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

describe("aggregateRun", () => {
  let dir: string;
  let out: LocalLocation;
  let digest: string;
  const keyOf = (id: string): string => batchResultKeyFor(digest, id);
  const writeBatches = async (ids = BATCHES.map((b) => b.id)): Promise<void> => {
    for (const batch of BATCHES) if (ids.includes(batch.id)) await out.write(keyOf(batch.id), jsonl(batch.records));
  };
  const status = async (): Promise<Record<string, unknown>> => JSON.parse(await readFile(join(dir, STATUS_FILE), "utf8"));
  const finalBytes = async (): Promise<Buffer[]> => Promise.all(FINAL_FILES.map((name) => readFile(join(dir, name))));

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aggregate-"));
    out = new LocalLocation(dir);
    await out.write(MANIFEST_KEY, serializeManifest(manifest(dir)));
    digest = digestOfManifest(manifest(dir));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("names the missing batches and writes no summary", async () => {
    // Prepare
    await writeBatches(["b00000"]);
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result).toMatchObject({ complete: false, missingBatches: ["b00001"], ignoredBatchFiles: [], keptComplete: false });
    expect(result.summary).toBeUndefined();
    expect(await out.exists("summary.json")).toBe(false);
    expect(await out.exists("results.jsonl")).toBe(false);
    expect(await status()).toEqual({
      runId: "run-7",
      manifestDigest: digest,
      complete: false,
      batches: 2,
      finishedBatches: 1,
      missingBatches: ["b00001"],
      ignoredBatchFileCount: 0,
      ignoredBatchFiles: [],
    });
  });

  it("writes results in manifest order, the summary with per-class rates, and the same bytes twice", async () => {
    // Prepare: batch files written in reverse order, as two workers might.
    for (const batch of [...BATCHES].reverse()) await out.write(keyOf(batch.id), jsonl(batch.records));
    // Act
    const first = await aggregateRun(out);
    const bytes1 = await finalBytes();
    const second = await aggregateRun(out);
    // Assess
    expect(first.complete).toBe(true);
    expect((bytes1[0] as Buffer).toString().trim().split("\n").map((line) => JSON.parse(line).key)).toEqual([
      "a.jpg",
      "b.jpg",
      "bad.jpg",
      "c.jpg",
      "d.jpg",
    ]);
    const summary = JSON.parse((bytes1[1] as Buffer).toString());
    expect(summary).toMatchObject({ images: 5, scored: 4, failed: 1, labelled: 3, failedKeys: ["bad.jpg"], runId: "run-7" });
    // a: top-1 right; b: top-5 right, top-1 wrong; c: both wrong.
    expect(summary.schemes["10"]).toMatchObject({ top1Error: 2 / 3, top5Error: 1 / 3 });
    expect(summary.perClassScheme).toBe("10");
    expect(summary.perClass).toEqual([
      { class: 1, name: "class 1", images: 2, top1Error: 0.5, top5Error: 0.5 },
      { class: 2, name: "class 2", images: 1, top1Error: 1, top5Error: 0 },
    ]);
    expect(await status()).toMatchObject({ complete: true, finishedBatches: 2, missingBatches: [] });
    expect(second.summary).toEqual(first.summary);
    expect(await finalBytes()).toEqual(bytes1);
  });

  it("ignores and lists batch files of another run, which never enter the results", async () => {
    // Prepare: this run's two batches, an earlier run's file under another digest, and a
    // manifest@1-style name; both foreign files hold records that must not appear.
    await writeBatches();
    const stale = "batches/b00001.00000000deadbeef.jsonl";
    await out.write(stale, jsonl([scored("c.jpg", 1, [1, 2, 3, 4, 5]), scored("d.jpg", null, [1, 2, 3, 4, 5])]));
    await out.write("batches/b00000.jsonl", jsonl([scored("a.jpg", 1, [7, 7, 7, 7, 7])]));
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result.complete).toBe(true);
    expect(result.ignoredBatchFiles).toEqual(["batches/b00000.jsonl", stale]);
    expect(await status()).toMatchObject({ complete: true, ignoredBatchFileCount: 2, ignoredBatchFiles: ["batches/b00000.jsonl", stale] });
    const records = (await readFile(join(dir, "results.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
    expect(records.find((r) => r.key === "c.jpg").top5["10"][0][0]).toBe(9);
    expect(records.find((r) => r.key === "a.jpg").top5["10"][0][0]).toBe(1);
    expect(result.summary?.schemes["10"]).toMatchObject({ top1Error: 2 / 3, top5Error: 1 / 3 });
  });

  it("counts only this run's files: a prefix of an earlier run's files is missing everything", async () => {
    // Prepare: the old run's files only (other digest), none of this run's.
    await out.write("batches/b00000.1111111111111111.jsonl", jsonl(BATCHES[0]?.records ?? []));
    await out.write("batches/b00001.1111111111111111.jsonl", jsonl(BATCHES[1]?.records ?? []));
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result).toMatchObject({ complete: false, missingBatches: ["b00000", "b00001"] });
    expect(result.ignoredBatchFiles).toHaveLength(2);
    expect(await out.exists("summary.json")).toBe(false);
  });

  it("never downgrades a complete status when batch files later go missing", async () => {
    // Prepare
    await writeBatches();
    await aggregateRun(out);
    const before = await finalBytes();
    await unlink(join(dir, ...keyOf("b00001").split("/")));
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result).toMatchObject({ complete: false, missingBatches: ["b00001"], keptComplete: true });
    expect(await finalBytes()).toEqual(before);
    expect(await status()).toMatchObject({ complete: true });
  });

  it("overwrites a complete status of another manifest", async () => {
    // Prepare: a status left by an earlier run under this prefix (other digest).
    await out.write(STATUS_FILE, JSON.stringify({ runId: "old", manifestDigest: "0".repeat(64), complete: true }));
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result.keptComplete).toBe(false);
    expect(await status()).toMatchObject({ runId: "run-7", complete: false, missingBatches: ["b00000", "b00001"] });
  });

  it("ends complete when the last batch lands while a late invocation writes its waiting status", async () => {
    // Prepare: the late invocation A lists with b00001 missing and reads the status; then, before
    // A writes "waiting", b00001 lands and invocation B aggregates the whole run.
    await writeBatches(["b00000"]);
    const late = new ObservedLocation(out);
    const timely = new ObservedLocation(new LocalLocation(dir));
    late.afterStatusRead = async () => {
      await writeBatches(["b00001"]);
      expect((await aggregateRun(timely)).complete).toBe(true);
    };
    // Act
    const result = await aggregateRun(late);
    // Assess: A wrote "waiting" over B's "complete", looked again and finished the run itself.
    expect(late.writes.map((w) => w.key)).toEqual([STATUS_FILE, ...FINAL_FILES]);
    expect(JSON.parse(late.writes[0]?.body ?? "")).toMatchObject({ complete: false });
    expect(result).toMatchObject({ complete: true, keptComplete: false });
    expect(await status()).toMatchObject({ complete: true, missingBatches: [] });
    expect(late.writes.slice(1)).toEqual(timely.writes);
  });

  it("does not report a kept status when the run completed while it listed", async () => {
    // Prepare: A lists with b00001 missing; B completes the run before A reads the status.
    await writeBatches(["b00000"]);
    const late = new ObservedLocation(out);
    late.afterList = async () => {
      await writeBatches(["b00001"]);
      await aggregateRun(new LocalLocation(dir));
    };
    // Act
    const result = await aggregateRun(late);
    // Assess: A left the complete status alone, then saw every batch and wrote the same bytes.
    expect(result).toMatchObject({ complete: true, keptComplete: false });
    expect(late.writes.map((w) => w.key)).toEqual(FINAL_FILES);
  });

  it("takes class names from the options when given", async () => {
    // Prepare
    await writeBatches();
    const names = Array.from({ length: 1000 }, (_, i) => `synset ${i}`);
    // Act
    const result = await aggregateRun(out, { classNames: names, write: false });
    // Assess
    expect(result.summary?.perClass.map((entry) => entry.name)).toEqual(["synset 1", "synset 2"]);
    expect(await out.exists("summary.json")).toBe(false);
  });

  it("refuses a batch file whose keys differ from the manifest", async () => {
    // Prepare
    await out.write(keyOf("b00000"), jsonl(BATCHES[0]?.records ?? []));
    await out.write(keyOf("b00001"), jsonl([scored("other.jpg", 1, [1, 2, 3, 4, 5])]));
    // Act / Assess
    await expect(aggregateRun(out)).rejects.toThrow(StorageError);
    await expect(aggregateRun(out)).rejects.toThrow(/b00001\.[0-9a-f]{16}\.jsonl holds keys \[other\.jpg\]/);
  });

  it("says where it looked when there is no manifest", async () => {
    // Act / Assess
    await expect(aggregateRun(new LocalLocation(join(dir, "nothing")))).rejects.toThrow(/no manifest at .*nothing\/manifest\.json/);
  });
});

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StorageError } from "../../model/errors.js";
import { STATUS_FILE, aggregateRun } from "../../pipeline/aggregate.js";
import { MANIFEST_FORMAT, MANIFEST_KEY, batchResultKey, serializeManifest, type Manifest } from "../../pipeline/manifest.js";
import type { ResultRecord, TopEntry } from "../../pipeline/records.js";
import { LocalLocation } from "../../pipeline/storage.js";

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

function manifest(out: string): Manifest {
  return {
    format: MANIFEST_FORMAT,
    runId: "run-7",
    createdAt: "2026-01-01T00:00:00.000Z",
    codeVersion: "0.1.0",
    input: "/data/images",
    out,
    models: [{ url: "/models/bvlc-googlenet.onnx", sha256: "f".repeat(64), flavour: "bvlc", preprocess: null }],
    crops: 10,
    engine: "onnxruntime",
    applyExifOrientation: false,
    maxPixels: 100_000_000,
    labels: "/data/val.txt",
    images: 5,
    batches: BATCHES.map((batch) => ({
      id: batch.id,
      keys: batch.records.map((record) => record.key),
      labels: batch.records.map((record) => ("label" in record ? record.label : null)),
    })),
  };
}

function jsonl(records: ResultRecord[]): string {
  return records.map((record) => `${JSON.stringify(record)}\n`).join("");
}

describe("aggregateRun", () => {
  let dir: string;
  let out: LocalLocation;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aggregate-"));
    out = new LocalLocation(dir);
    await out.write(MANIFEST_KEY, serializeManifest(manifest(dir)));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("names the missing batches and writes no summary", async () => {
    // Prepare
    await out.write(batchResultKey("b00000"), jsonl(BATCHES[0]?.records ?? []));
    // Act
    const result = await aggregateRun(out);
    // Assess
    expect(result).toMatchObject({ complete: false, missingBatches: ["b00001"] });
    expect(result.summary).toBeUndefined();
    expect(await out.exists("summary.json")).toBe(false);
    expect(await out.exists("results.jsonl")).toBe(false);
    expect(JSON.parse(await readFile(join(dir, STATUS_FILE), "utf8"))).toMatchObject({
      complete: false,
      finishedBatches: 1,
      missingBatches: ["b00001"],
    });
  });

  it("writes results in manifest order, the summary with per-class rates, and the same bytes twice", async () => {
    // Prepare: batch files written in reverse order, as two workers might.
    for (const batch of [...BATCHES].reverse()) await out.write(batchResultKey(batch.id), jsonl(batch.records));
    // Act
    const first = await aggregateRun(out);
    const results1 = await readFile(join(dir, "results.jsonl"));
    const summary1 = await readFile(join(dir, "summary.json"));
    const second = await aggregateRun(out);
    // Assess
    expect(first.complete).toBe(true);
    expect(results1.toString().trim().split("\n").map((line) => JSON.parse(line).key)).toEqual([
      "a.jpg",
      "b.jpg",
      "bad.jpg",
      "c.jpg",
      "d.jpg",
    ]);
    const summary = JSON.parse(summary1.toString());
    expect(summary).toMatchObject({ images: 5, scored: 4, failed: 1, labelled: 3, failedKeys: ["bad.jpg"], runId: "run-7" });
    // a: top-1 right; b: top-5 right, top-1 wrong; c: both wrong.
    expect(summary.schemes["10"]).toMatchObject({ top1Error: 2 / 3, top5Error: 1 / 3 });
    expect(summary.perClassScheme).toBe("10");
    expect(summary.perClass).toEqual([
      { class: 1, name: "class 1", images: 2, top1Error: 0.5, top5Error: 0.5 },
      { class: 2, name: "class 2", images: 1, top1Error: 1, top5Error: 0 },
    ]);
    expect(second.summary).toEqual(first.summary);
    expect(await readFile(join(dir, "summary.json"))).toEqual(summary1);
    expect(await readFile(join(dir, "results.jsonl"))).toEqual(results1);
  });

  it("takes class names from the options when given", async () => {
    // Prepare
    for (const batch of BATCHES) await out.write(batchResultKey(batch.id), jsonl(batch.records));
    const names = Array.from({ length: 1000 }, (_, i) => `synset ${i}`);
    // Act
    const result = await aggregateRun(out, { classNames: names, write: false });
    // Assess
    expect(result.summary?.perClass.map((entry) => entry.name)).toEqual(["synset 1", "synset 2"]);
    expect(await out.exists("summary.json")).toBe(false);
  });

  it("refuses a batch file whose keys differ from the manifest", async () => {
    // Prepare
    await out.write(batchResultKey("b00000"), jsonl(BATCHES[0]?.records ?? []));
    await out.write(batchResultKey("b00001"), jsonl([scored("other.jpg", 1, [1, 2, 3, 4, 5])]));
    // Act / Assess
    await expect(aggregateRun(out)).rejects.toThrow(StorageError);
    await expect(aggregateRun(out)).rejects.toThrow(/b00001\.jsonl holds keys \[other\.jpg\]/);
  });

  it("says where it looked when there is no manifest", async () => {
    // Act / Assess
    await expect(aggregateRun(new LocalLocation(join(dir, "nothing")))).rejects.toThrow(/no manifest at .*nothing\/manifest\.json/);
  });
});

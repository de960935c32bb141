import { mkdtemp, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createAggregateHandler, runsFromEvent, type S3EventLike } from "../../handlers/aggregate-lambda.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest, type Manifest } from "../../queue/manifest.js";
import type { ResultRecord, TopEntry } from "../../scoring/records.js";
import { LocalLocation, parseS3Url } from "../../storage/location.js";
import { bvlcModel, manifestBatch, testManifest } from "../helpers/manifests.js";

/** An S3 event notification in AWS's shape, keys URL-encoded as S3 sends them. */
function s3Event(bucket: string, keys: string[], eventName = "ObjectCreated:Put"): S3EventLike {
  return {
    Records: keys.map((key) => ({
      eventSource: "aws:s3",
      eventName,
      s3: { bucket: { name: bucket }, object: { key: encodeURIComponent(key).replace(/%2F/g, "/").replace(/%20/g, "+") } },
    })),
  };
}

function scored(key: string, label: number, classes: number[]): ResultRecord {
  const top5: TopEntry[] = classes.map((c, i) => [c, 0.5 / (i + 1), `class ${c}`]);
  return { key, label, width: 500, height: 375, top5: { "1": top5, "10": top5 } };
}

const BATCHES = [
  { id: "b00000", records: [scored("a.jpg", 1, [1, 2, 3, 4, 5]), scored("b.jpg", 2, [1, 2, 3, 4, 5])] },
  { id: "b00001", records: [scored("c.jpg", 9, [9, 8, 7, 6, 5])] },
];

function manifest(out: string): Manifest {
  return testManifest({
    runId: "run 1",
    input: "s3://eval-bucket/validation/",
    out,
    models: [bvlcModel("s3://eval-bucket/models/bvlc-googlenet.onnx", "a".repeat(64))],
    engine: "tfjs",
    labels: "s3://eval-bucket/models/val.txt",
    images: 3,
    batches: BATCHES.map((b) => manifestBatch(b.id, b.records)),
  });
}

const jsonl = (records: ResultRecord[]): string => records.map((r) => `${JSON.stringify(r)}\n`).join("");

describe("runsFromEvent", () => {
  it("derives each run folder once, from any batch file name, decodes keys and ignores non-batch keys", () => {
    // Prepare
    const event = s3Event("eval-bucket", [
      "runs/run 1/batches/b00000.0123456789abcdef.jsonl",
      "runs/run 1/batches/b00001.jsonl",
      "runs/2026/café/batches/b00000.jsonl",
      "runs/run 1/results.jsonl",
      "runs/run 1/batches/nested/x.jsonl",
    ]);

    // Act
    const { runs, ignored } = runsFromEvent(event);

    // Assess
    expect(runs).toEqual(["s3://eval-bucket/runs/run 1", "s3://eval-bucket/runs/2026/café"]);
    expect(ignored).toEqual(["runs/run 1/results.jsonl", "runs/run 1/batches/nested/x.jsonl"]);
  });

  it("ignores events that are not object creations", () => {
    // Prepare
    const event = s3Event("eval-bucket", ["runs/r/batches/b1.jsonl"], "ObjectRemoved:Delete");

    // Act
    const { runs, ignored } = runsFromEvent(event);

    // Assess
    expect(runs).toEqual([]);
    expect(ignored).toEqual(["runs/r/batches/b1.jsonl"]);
  });
});

describe("the aggregate Lambda handler over a real run folder", () => {
  let root: string;
  let out: LocalLocation;
  let logged: string[];
  let handler: ReturnType<typeof createAggregateHandler>;
  let keyOf: (batch: string) => string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "aggregate-lambda-"));
    // s3://eval-bucket/<key> is served from <root>/<key>: the real aggregateRun, a local store.
    const open = (url: string): LocalLocation => new LocalLocation(join(root, parseS3Url(url).key));
    out = open("s3://eval-bucket/runs/run 1");
    await out.write(MANIFEST_KEY, serializeManifest(manifest("s3://eval-bucket/runs/run 1")));
    const digest = digestOfManifest(manifest("s3://eval-bucket/runs/run 1"));
    keyOf = (batch) => batchResultKeyFor(digest, batch);
    logged = [];
    handler = createAggregateHandler({ open, log: (line) => logged.push(line) });
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("waits while a batch is missing, writing nothing, then writes the summary once all are in and leaves it on a repeated event", async () => {
    // Prepare
    await out.write(keyOf("b00000"), jsonl(BATCHES[0]?.records ?? []));

    // Act: the first batch lands
    const first = await handler(s3Event("eval-bucket", [`runs/run 1/${keyOf("b00000")}`]));

    // Assess
    expect(first).toEqual([{ run: "s3://eval-bucket/runs/run 1", complete: false, batches: 2, missingBatches: 1 }]);
    expect(await out.exists("summary.json")).toBe(false);
    // "waiting" is only logged: a written one could land over the last batch's "complete".
    expect(await out.exists("aggregate-status.json")).toBe(false);

    // Act: the last batch lands, its event is delivered twice, and our own results.jsonl fires too
    await out.write(keyOf("b00001"), jsonl(BATCHES[1]?.records ?? []));
    const last = await handler(
      s3Event("eval-bucket", [`runs/run 1/${keyOf("b00001")}`, `runs/run 1/${keyOf("b00001")}`, "runs/run 1/results.jsonl"]),
    );
    const summaryBytes = await readFile(join(root, "runs", "run 1", "summary.json"));
    const again = await handler(s3Event("eval-bucket", [`runs/run 1/${keyOf("b00000")}`]));

    // Assess
    expect(last).toEqual([{ run: "s3://eval-bucket/runs/run 1", complete: true, batches: 2, missingBatches: 0, images: 3 }]);
    expect(JSON.parse(summaryBytes.toString("utf8"))).toMatchObject({ images: 3, scored: 3, schemes: { "1": { top1Error: 1 / 3 } } });
    expect(again).toEqual([{ run: "s3://eval-bucket/runs/run 1", complete: true, batches: 2, missingBatches: 0, alreadyAggregated: true }]);
    expect(await readFile(join(root, "runs", "run 1", "summary.json"))).toEqual(summaryBytes);
    expect(logged.map((l) => JSON.parse(l).event)).toEqual(["waiting", "ignored", "aggregated", "already-aggregated"]);
  });

  it("logs and counts batch files of another run, and keeps a complete status when batches go missing", async () => {
    // Prepare: a complete run, plus a stale file of an earlier run under the same prefix.
    for (const batch of BATCHES) await out.write(keyOf(batch.id), jsonl(batch.records));
    await out.write("batches/b00000.00000000deadbeef.jsonl", jsonl([scored("zzz.jpg", 1, [1, 2, 3, 4, 5])]));
    const run = "s3://eval-bucket/runs/run 1";

    // Act
    const done = await handler(s3Event("eval-bucket", ["runs/run 1/batches/b00000.00000000deadbeef.jsonl"]));
    const statusBytes = await readFile(join(root, "runs", "run 1", "aggregate-status.json"));
    await unlink(join(root, "runs", "run 1", ...keyOf("b00001").split("/")));
    const later = await handler(s3Event("eval-bucket", [`runs/run 1/${keyOf("b00000")}`]));

    // Assess
    expect(done).toEqual([{ run, complete: true, batches: 2, missingBatches: 0, ignoredBatchFiles: 1, images: 3 }]);
    expect(later).toEqual([{ run, complete: false, batches: 2, missingBatches: 1, ignoredBatchFiles: 1, keptComplete: true }]);
    expect(await readFile(join(root, "runs", "run 1", "aggregate-status.json"))).toEqual(statusBytes);
    expect(logged.map((l) => JSON.parse(l))).toEqual([
      { event: "ignored-batch-files", run, count: 1, keys: ["batches/b00000.00000000deadbeef.jsonl"] },
      { event: "aggregated", ...done[0] },
      { event: "ignored-batch-files", run, count: 1, keys: ["batches/b00000.00000000deadbeef.jsonl"] },
      { event: "kept-complete", ...later[0] },
    ]);
  });

  it("throws after logging when a run cannot be aggregated, so Lambda retries the event", async () => {
    // Prepare: a batch result for a run that has no manifest
    const event = s3Event("eval-bucket", ["runs/ghost/batches/b00000.jsonl"]);

    // Act / Assess
    await expect(handler(event)).rejects.toThrow(/runs\/ghost.*no manifest/);
    expect(JSON.parse(logged[0] ?? "")).toMatchObject({ event: "failed", run: "s3://eval-bucket/runs/ghost" });
  });
});

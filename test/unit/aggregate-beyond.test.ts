import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { aggregateRun, labelSpaceOfManifest } from "../../queue/aggregate.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest, type Manifest } from "../../queue/manifest.js";
import { BUILT_IN_LABELS_SOURCE } from "../../scoring/imagenet-validation.js";
import type { ResultRecord, Summary, TopEntry } from "../../scoring/records.js";
import { LocalLocation } from "../../storage/location.js";
import { bvlcModel, manifestBatch, testManifest } from "../helpers/manifests.js";

function top(...pairs: [number, number][]): TopEntry[] {
  const entries: TopEntry[] = pairs.map(([c, p]) => [c, p, `class ${c}`]);
  for (let i = entries.length; i < 5; i++) entries.push([900 + i, 0.001, `class ${900 + i}`]);
  return entries;
}

// Batch b0 from a worker that keeps labelProbability; b1 from one written before it (no field).
// The shipped real.json lists val 1 -> [] , val 2 -> [970, 795], val 4 -> [809] (README).
const BATCHES: { id: string; records: ResultRecord[] }[] = [
  {
    id: "b00000",
    records: [
      { key: "ILSVRC2012_val_00000002.JPEG", label: 970, width: 5, height: 5, top5: { "1": top([795, 0.6], [970, 0.2]) }, labelProbability: { "1": 0.2 } },
      { key: "ILSVRC2012_val_00000001.JPEG", label: 65, width: 5, height: 5, top5: { "1": top([65, 0.9]) }, labelProbability: { "1": 0.9 } },
    ],
  },
  {
    id: "b00001",
    records: [{ key: "ILSVRC2012_val_00000004.JPEG", label: 809, width: 5, height: 5, top5: { "1": top([1, 0.5], [2, 0.3]) } }],
  },
];

function manifest(out: string): Manifest {
  return testManifest({
    runId: "run-real",
    input: "/data/val",
    out,
    models: [bvlcModel("/models/bvlc-googlenet.onnx", "f".repeat(64))],
    crops: 1,
    labels: BUILT_IN_LABELS_SOURCE,
    images: 3,
    batches: BATCHES.map((batch) => manifestBatch(batch.id, batch.records)),
  });
}

describe("aggregate: ReaL, built-in labels and calibration across batches", () => {
  let dir: string;
  let out: LocalLocation;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "aggregate-beyond-"));
    out = new LocalLocation(dir);
    const m = manifest(dir);
    await out.write(MANIFEST_KEY, serializeManifest(m));
    const digest = digestOfManifest(m);
    for (const batch of BATCHES) {
      await out.write(batchResultKeyFor(digest, batch.id), batch.records.map((r) => `${JSON.stringify(r)}\n`).join(""));
    }
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("judges ReaL with the shipped real.json by default, counts built-in labels, and refuses calibration over mixed batches", async () => {
    // Act
    const result = await aggregateRun(out);
    const written = JSON.parse(await readFile(join(dir, "summary.json"), "utf8")) as Summary;

    // Assess: by hand, val 2 right at top-1 (795 is in its list) and top-5, val 4 wrong at both,
    // val 1 left out: 1/2 and 1/2.
    expect(result.complete).toBe(true);
    expect(written.schemes["1"]?.real).toMatchObject({ top1Error: 0.5, top5Error: 0.5, leftOut: 1 });
    expect(written.realLabels).toEqual({ source: "built-in real.json", images: 3 });
    expect(written.builtInLabels).toEqual({ file: "ilsvrc2012_validation_synset_labels.txt", images: 3 });
    expect(written.schemes["1"]?.calibration).toBeUndefined();
    expect(written.calibrationMissing).toMatch(/^1 of 3 labelled records carry no labelProbability/);
    expect(await readFile(join(dir, "report.html"), "utf8")).toContain("No calibration: 1 of 3 labelled records");
  });

  it("writes the label space into summary.json, as a local score's has it", async () => {
    // Act
    await aggregateRun(out);
    const written = JSON.parse(await readFile(join(dir, "summary.json"), "utf8")) as { labelSpace?: unknown };
    // Assess: built-in labels (validation names) and no subset.
    expect(written.labelSpace).toEqual({ layout: "wnid-in-path", classes: null });
  });

  it("leaves ReaL out with realLabels null (--real-labels none)", async () => {
    const result = await aggregateRun(out, { realLabels: null });
    expect(result.summary?.schemes["1"]?.real).toBeUndefined();
    expect(result.summary?.realLabels).toBeUndefined();
  });
});

describe("a queued run's label space, from its manifest", () => {
  it.each([
    ["s3://data/val.txt", undefined, { layout: "label-file", classes: null }],
    ["folder-index", undefined, { layout: "folder-index", classes: null }],
    ["wnid-in-key", [1, 7, 9], { layout: "wnid-in-path", classes: { count: 3, indices: [1, 7, 9] } }],
    [BUILT_IN_LABELS_SOURCE, undefined, { layout: "wnid-in-path", classes: null }],
    [null, undefined, { layout: "wnid-in-path", classes: null }],
  ] as const)("labels %s, classes %j", (labels, classes, expected) => {
    expect(labelSpaceOfManifest({ labels, ...(classes !== undefined ? { classes } : {}) })).toEqual(expected);
  });
});

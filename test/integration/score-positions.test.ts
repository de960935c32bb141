import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord, ScoredRecord, Summary } from "../../scoring/records.js";
import { ONE_CROP_POSITION, decodePositions } from "../../scoring/statistics.js";
import { spawnCli } from "../helpers/cli-process.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");

/** Three photos the model gets partly wrong at single crops, so the verdicts vary. */
const PHOTOS: [file: string, label: number][] = [
  ["n01440764_tench.JPEG", 0],
  ["n02096051_Airedale.JPEG", 191],
  ["n01518878_ostrich.JPEG", 9],
];

describe("a 144-crop score run", () => {
  let work: string;
  let records: ScoredRecord[];
  let summary: Summary;

  beforeAll(async () => {
    // Prepare: three real photos, labelled, one unlabelled copy.
    work = await mkdtemp(join(tmpdir(), "score-positions-"));
    await mkdir(join(work, "images"));
    for (const [file] of PHOTOS) await copyFile(join(SHARED, "imagenet/samples", file), join(work, "images", file));
    await copyFile(join(SHARED, "imagenet/samples", PHOTOS[0]![0]), join(work, "images", "unlabelled.jpg"));
    await writeFile(join(work, "val.txt"), PHOTOS.map(([file, label]) => `${file} ${label}`).join("\n"));

    // Act
    const cli = spawnCli(
      [
        "score",
        join(work, "images"),
        "--model",
        join(SHARED, "models/bvlc-googlenet.onnx"),
        "--labels",
        join(work, "val.txt"),
        "--synsets",
        join(SHARED, "imagenet/synset_words.txt"),
        "--engine",
        "onnxruntime",
        "--out",
        join(work, "out"),
      ],
      {},
    );
    const code = await cli.exited;
    if (code !== 0) throw new Error(`score exited ${code}: ${cli.stderr.join("")}`);
    const lines = (await readFile(join(work, "out", "results.jsonl"), "utf8")).split("\n").filter(Boolean);
    records = lines.map((line) => JSON.parse(line) as ResultRecord) as ScoredRecord[];
    summary = JSON.parse(await readFile(join(work, "out", "summary.json"), "utf8")) as Summary;
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("records each labelled image's 144 per-position verdicts, and none for an unlabelled one", () => {
    const labelled = records.filter((record) => record.label !== null);
    expect(labelled).toHaveLength(3);
    for (const record of labelled) expect(record.positions).toMatch(/^[023]{144}$/);
    expect(records.find((record) => record.key === "unlabelled.jpg")?.positions).toBeUndefined();
  });

  it("judges position (256, center, center, unmirrored) exactly as scheme 1", () => {
    for (const record of records.filter((r) => r.label !== null)) {
      const { top1, top5 } = decodePositions(record.positions as string, record.key);
      const entries = record.top5["1"] ?? [];
      expect(top1[ONE_CROP_POSITION]).toBe(entries[0]?.[0] === record.label);
      expect(top5[ONE_CROP_POSITION]).toBe(entries.some((entry) => entry[0] === record.label));
    }
    const one = summary.positions?.[ONE_CROP_POSITION];
    expect(one).toMatchObject({ scale: 256, square: "center", crop: "center", mirror: false });
    expect(one?.top1Error).toBe(summary.schemes["1"]?.top1Error);
    expect(one?.top5Error).toBe(summary.schemes["1"]?.top5Error);
  });

  it("summarises all three schemes with intervals, positions and scheme comparisons", () => {
    expect(Object.keys(summary.schemes)).toEqual(["1", "10", "144"]);
    expect(summary.positions).toHaveLength(144);
    expect(summary.schemes["144"]?.top5Interval).toHaveLength(2);
    expect(summary.comparisons?.map((c) => `${c.a}-${c.b}-${c.metric}`)).toEqual([
      "144-1-top1",
      "144-1-top5",
      "144-10-top1",
      "144-10-top5",
      "10-1-top1",
      "10-1-top5",
    ]);
  });
});

import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord, ScoredRecord, Summary } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

/*
 * score on tar archives made by GNU tar and gzip, never by this code: each must give what the
 * same photos give as a folder. The photos are named as validation images of their own class
 * (the TF-slim file says which validation numbers are which class), so the built-in labels
 * label them, and a label file written from samples-val.txt labels the folder.
 */

const SHARED = resolve(import.meta.dirname, "../../../shared");
const SAMPLES = join(SHARED, "imagenet/samples");
const MODEL = join(SHARED, "models/bvlc-googlenet.onnx");
const PHOTOS = ["n01440764_tench.JPEG", "n01518878_ostrich.JPEG", "n02096051_Airedale.JPEG", "n01855672_goose.JPEG"];

let dir: string;
let emulator: Emulator;
/** Validation file name of each photo, and its class index from samples-val.txt. */
const named = new Map<string, { file: string; label: number }>();

async function score(input: string, extra: string[] = [], env: Record<string, string> = {}) {
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}`);
  const cli = spawnCli(["score", input, "--model", MODEL, "--crops", "10", "--engine", "onnxruntime", "--out", out, ...extra], env);
  const code = await cli.exited;
  const stderr = cli.stderr.join("");
  const read = (file: string) => readFileSync(join(out, file), "utf8");
  const records = code === 0 ? read("results.jsonl").trim().split("\n").map((line) => JSON.parse(line) as ResultRecord) : [];
  const summary = code === 0 ? (JSON.parse(read("summary.json")) as Summary & Record<string, unknown>) : undefined;
  return { code, stderr, records, summary };
}

/** Records by the key's last segment, each scheme's top-5 classes and probabilities. */
function byName(records: readonly ResultRecord[]) {
  return new Map(records.map((record) => [record.key.split("/").at(-1) as string, record]));
}

function expectSameScores(archive: readonly ResultRecord[], folder: readonly ResultRecord[]): void {
  const a = byName(archive);
  const f = byName(folder);
  expect([...a.keys()].sort()).toEqual([...f.keys()].sort());
  for (const [name, record] of f) {
    const other = a.get(name) as ScoredRecord;
    const mine = record as ScoredRecord;
    expect(other.label).toBe(mine.label);
    for (const scheme of ["1", "10"] as const) {
      expect(other.top5[scheme]?.map(([index]) => index)).toEqual(mine.top5[scheme]?.map(([index]) => index));
      other.top5[scheme]?.forEach(([, probability], i) => expect(Math.abs(probability - (mine.top5[scheme]?.[i]?.[1] ?? Number.NaN))).toBeLessThanOrEqual(1e-6));
    }
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "score-archives-"));
  const wnidOfVal = readFileSync(join(SHARED, "imagenet/ilsvrc2012_validation_synset_labels.txt"), "utf8").trim().split("\n");
  const caffe = new Map(readFileSync(join(SHARED, "imagenet/samples-val.txt"), "utf8").trim().split("\n").map((line) => line.split(" ") as [string, string]));
  mkdirSync(join(dir, "val"));
  mkdirSync(join(dir, "tree/extras"), { recursive: true });
  for (const photo of PHOTOS) {
    const n = wnidOfVal.indexOf(photo.slice(0, 9)) + 1;
    const file = `ILSVRC2012_val_${String(n).padStart(8, "0")}.JPEG`;
    named.set(photo, { file, label: Number(caffe.get(photo)) });
    cpSync(join(SAMPLES, photo), join(dir, "val", file));
    cpSync(join(SAMPLES, photo), join(dir, "tree", file));
  }
  writeFileSync(join(dir, "labels.txt"), [...named.values()].map(({ file, label }) => `${file} ${label}\n`).join(""));
  // The archive's own extras: a folder and a file that is not an image, skipped and counted.
  writeFileSync(join(dir, "tree/extras/README.txt"), "not an image\n");
  execFileSync("tar", ["--format=pax", "-cf", join(dir, "val.tar"), "-C", join(dir, "tree"), "."]);
  execFileSync("sh", ["-c", `gzip -c '${join(dir, "val.tar")}' > '${join(dir, "val.tar.gz")}'`]);
  emulator = await startEmulator();
  emulator.server.createBucket("data");
});

afterAll(async () => {
  await emulator?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("score on tar archives, against the same photos as a folder", () => {
  let folder: Awaited<ReturnType<typeof score>>;

  beforeAll(async () => {
    folder = await score(join(dir, "val"), ["--labels", join(dir, "labels.txt")]);
    expect(folder.code).toBe(0);
  });

  it("a GNU tar (pax) archive, no --labels: the built-in labels, the same records and error table", async () => {
    const run = await score(join(dir, "val.tar"));

    expect(run.code).toBe(0);
    expect(run.stderr).toContain("input: 1 tar archive, 4 images (skipped: 2 directories, 1 other file)");
    expect(run.stderr).toMatch(/labels: built-in ILSVRC 2012 validation labels .* for 4 of 4 images/);
    expect(run.records.map((record) => record.key).sort()).toEqual([...named.values()].map(({ file }) => `val.tar/${file}`).sort());
    expectSameScores(run.records, folder.records);
    // The error table exactly; NLL and ECE to float rounding, as the archive's order (the order
    // of the sums) is not the folder's.
    for (const scheme of ["1", "10"] as const) {
      const [mine, theirs] = [run.summary?.schemes[scheme], folder.summary?.schemes[scheme]];
      expect([mine?.top1Error, mine?.top5Error, mine?.real]).toEqual([theirs?.top1Error, theirs?.top5Error, theirs?.real]);
      expect(mine?.calibration?.nll).toBeCloseTo(theirs?.calibration?.nll as number, 12);
      expect(mine?.calibration?.ece).toBeCloseTo(theirs?.calibration?.ece as number, 12);
    }
    expect(run.summary?.input).toMatchObject({ archives: 1, archiveImages: 4, skipped: { directories: 2, links: 0, other: 0, notImages: 1 } });
  });

  it("the same archive gzipped (.tar.gz), streamed once: the same records", async () => {
    const run = await score(join(dir, "val.tar.gz"));

    expect(run.code).toBe(0);
    expect(run.records.map((record) => record.key).sort()).toEqual([...named.values()].map(({ file }) => `val.tar.gz/${file}`).sort());
    expectSameScores(run.records, folder.records);
  });

  it("the archive on S3 (ranged GETs): the same records", async () => {
    await new S3Location("s3://data", emulator.s3).write("sets/val.tar", readFileSync(join(dir, "val.tar")));

    const run = await score("s3://data/sets/val.tar", [], emulator.env);

    expect(run.code).toBe(0);
    expect(run.stderr).toContain("input: 1 tar archive, 4 images");
    expectSameScores(run.records, folder.records);
  });
});

describe("damaged archives and WebDataset shards", () => {
  it("a header whose checksum fails mid-archive: exit 1 naming the archive and byte offset, no results", async () => {
    const bytes = readFileSync(join(dir, "val.tar"));
    // Python's tarfile says where the third file's header is; one flipped bit in its name field.
    const offset = Number(execFileSync("python3", ["-c", "import tarfile,sys\nprint([m for m in tarfile.open(sys.argv[1]) if m.isfile()][2].offset)", join(dir, "val.tar")], { encoding: "utf8" }));
    bytes[offset + 3] = (bytes[offset + 3] as number) ^ 0x01;
    writeFileSync(join(dir, "damaged.tar"), bytes);

    const run = await score(join(dir, "damaged.tar"));

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`${join(dir, "damaged.tar")}: damaged tar header at byte ${offset}`);
  });

  it("a member cut off by the end of the file is that member's error record; the rest are scored", async () => {
    const lastData = JSON.parse(execFileSync("python3", ["-c", "import tarfile,sys,json\nm=[m for m in tarfile.open(sys.argv[1]) if m.isfile() and m.name.endswith('JPEG')][-1]\nprint(json.dumps([m.name.removeprefix('./'), m.offset_data]))", join(dir, "val.tar")], { encoding: "utf8" })) as [string, number];
    cpSync(join(dir, "val.tar"), join(dir, "cut.tar"));
    truncateSync(join(dir, "cut.tar"), lastData[1] + 1000);

    const run = await score(join(dir, "cut.tar"));

    expect(run.code).toBe(0);
    expect(run.records.filter((record) => "error" in record)).toEqual([{ key: `cut.tar/${lastData[0]}`, error: `cut.tar/${lastData[0]}: cut off by the end of the archive` }]);
    expect(run.summary).toMatchObject({ images: 4, scored: 3, failed: 1 });
  });

  it("WebDataset shards: .cls members label their samples when no --labels is given", async () => {
    const shards = join(dir, "shards");
    mkdirSync(shards);
    const samples = [...named.entries()];
    for (const [shard, part] of [samples.slice(0, 2), samples.slice(2)].entries()) {
      const staging = join(dir, `wds-${shard}`);
      mkdirSync(staging);
      for (const [i, [photo, { label }]] of part.entries()) {
        cpSync(join(SAMPLES, photo), join(staging, `sample${shard}${i}.jpg`));
        writeFileSync(join(staging, `sample${shard}${i}.cls`), `${label}\n`);
      }
      execFileSync("tar", ["--format=gnu", "-cf", join(shards, `shard-${shard}.tar`), "-C", staging, "."]);
    }

    const run = await score(shards);

    expect(run.code).toBe(0);
    expect(run.stderr).toContain("input: 2 tar shards, 4 images");
    expect(run.stderr).toContain("labels: WebDataset .cls members for 4 of 4 images");
    const labels = Object.fromEntries(run.records.map((record) => [record.key, (record as ScoredRecord).label]));
    expect(labels).toEqual({
      "shard-0.tar/sample00.jpg": samples[0]?.[1].label,
      "shard-0.tar/sample01.jpg": samples[1]?.[1].label,
      "shard-1.tar/sample10.jpg": samples[2]?.[1].label,
      "shard-1.tar/sample11.jpg": samples[3]?.[1].label,
    });
  });
});

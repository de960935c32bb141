import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { readSynsets } from "../../model/synsets.js";
import { aggregateRun } from "../../queue/aggregate.js";
import { batchResultKeyFor, readManifestWithDigest } from "../../queue/manifest.js";
import { LABEL_CHECK_FILE } from "../../queue/plan-label-check.js";
import { planRun } from "../../queue/plan.js";
import { planDataRun } from "../helpers/planned-run.js";
import { LabelMismatchError } from "../../scoring/label-check.js";
import type { ResultRecord, ScoredRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { startEmulator } from "../helpers/emulator.js";

const REPO = resolve(import.meta.dirname, "../..");
const SHARED = resolve(REPO, "../shared");
const MODEL = join(SHARED, "models/bvlc-googlenet.onnx");
const UNTRAINED = join(SHARED, "models/torchvision-googlenet-untrained.onnx");
const SYNSETS = join(SHARED, "imagenet/synset_words.txt");
const SAMPLES = join(SHARED, "imagenet/samples");
const SAMPLES_VAL = join(SHARED, "imagenet/samples-val.txt");
const VALIDATION_WNIDS = join(SHARED, "imagenet/ilsvrc2012_validation_synset_labels.txt");

/**
 * Devkit-style ids for the test: class c has id (7c + 3) mod 1000 + 1, a permutation of 1..1000
 * (7 is prime to 1000) and no shift. The devkit's real ILSVRC2012_ID order (meta.mat) is not in
 * ../shared (its README lists what is), so this stands in for it: the check learns id -> class
 * only from the given labels against the built-in ones, never from the order's structure, so any
 * permutation exercises it as the devkit's would.
 */
const devkitId = (label: number): number => ((7 * label + 3) % 1000) + 1;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ["--import", "tsx", "handlers/cli.ts", ...args], { cwd: REPO, env: { ...process.env, FORCE_COLOR: "0" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

async function readResults(out: string): Promise<ScoredRecord[]> {
  const text = await readFile(join(out, "results.jsonl"), "utf8");
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ResultRecord)
    .filter((record): record is ScoredRecord => !("error" in record));
}

let work: string;
/** samples-val.txt as shipped: file name and class index per line. */
let truth: [file: string, label: number][];

/** A folder of the first `count` sample photos (sorted by name: classes 0, 1, 2, ...). */
async function photos(name: string, count: number): Promise<string> {
  const folder = join(work, name);
  await mkdir(folder, { recursive: true });
  for (const [file] of truth.slice(0, count)) await copyFile(join(SAMPLES, file), join(folder, file));
  return folder;
}

/** A val.txt for the same photos with every label moved by `shift` (the test's own rewrite). */
async function labels(name: string, count: number, shift: number): Promise<string> {
  const file = join(work, name);
  await writeFile(file, truth.slice(0, count).map(([photo, label]) => `${photo} ${label + shift}\n`).join(""));
  return file;
}

/**
 * The first `count` sample photos copied to validation names of their own class: for each, the
 * first validation number whose line in the TF-slim file (read here, not through the code) is
 * the photo's WNID. Returns the folder and, per photo, its new name and samples-val.txt label.
 */
async function validationPhotos(name: string, count: number): Promise<{ folder: string; named: [file: string, label: number][] }> {
  const folder = join(work, name);
  await mkdir(folder, { recursive: true });
  const wnidOfVal = (await readFile(VALIDATION_WNIDS, "utf8")).trim().split("\n");
  const named: [string, number][] = [];
  for (const [photo, label] of truth.slice(0, count)) {
    const n = wnidOfVal.indexOf(photo.slice(0, 9)) + 1;
    expect(n).toBeGreaterThan(0);
    const file = `ILSVRC2012_val_${String(n).padStart(8, "0")}.JPEG`;
    await copyFile(join(SAMPLES, photo), join(folder, file));
    named.push([file, label]);
  }
  return { folder, named };
}

const score = (images: string, labelFile: string, out: string, model = MODEL, ...extra: string[]): Promise<Run> =>
  cli(["score", images, "--model", model, "--engine", "onnxruntime", "--crops", "1", "--labels", labelFile, "--synsets", SYNSETS, "--out", out, ...extra]);

const percent = (hits: number, images: number): string => `${((100 * hits) / images).toFixed(1)}%`;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "label-check-"));
  truth = (await readFile(SAMPLES_VAL, "utf8"))
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => line.split(" ") as [string, string])
    .map(([file, label]) => [file, Number(label)] as [string, number])
    .sort(([a], [b]) => (a < b ? -1 : 1));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("score's label check (real photos, bvlc GoogLeNet, 1 crop, onnxruntime)", () => {
  it("stops after the first 200 labelled images when every label is one too high, naming the remapping and both accuracies", async () => {
    // Prepare: 210 photos, labels from samples-val.txt rewritten with every label +1.
    const images = await photos("shifted-210", 210);
    const shifted = await labels("plus-one-210.txt", 210, 1);
    const out = join(work, "out-shifted-210");

    // Act
    const run = await score(images, shifted, out);

    // Assess: exit 2, 200 records (not 210), and the message's figures recounted from them.
    expect(run.stderr).not.toMatch(/unexpected error/);
    expect(run.code).toBe(2);
    const records = await readResults(out);
    expect(records).toHaveLength(200);
    const given = records.filter((r) => r.top5["1"]?.[0]?.[0] === r.label).length;
    const remapped = records.filter((r) => r.top5["1"]?.[0]?.[0] === (r.label as number) - 1).length;
    expect(remapped).toBeGreaterThan(100);
    expect(run.stderr).toContain(
      `googlenet-eval score: label check: labels as given: top-1 ${percent(given, 200)} (${given} of 200); ` +
        `labels one too high (1-based class ids: given n is class n-1): ${percent(remapped, 200)} (${remapped} of 200), one-sided exact sign test p = `,
    );
    expect(run.stderr).toContain("scoring stopped after 200 labelled image(s): the labels do not match the model's class order");
    expect(run.stderr).toContain("(on the command line: --no-label-check)");
    expect(await readdir(out)).not.toContain("summary.json");
  });

  it("is silent on the right labels", async () => {
    // Prepare
    const images = await photos("right-40", 40);
    const right = await labels("right-40.txt", 40, 0);
    // Act
    const run = await score(images, right, join(work, "out-right-40"));
    // Assess
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/label check passed on 40 labelled image\(s\): labels as given: top-1 \d+\.\d% \(\d+ of 40\)/);
  });

  it("with fewer than 200 labelled images, decides on all of them at the end; --no-label-check runs on with a warning", async () => {
    // Prepare
    const images = await photos("shifted-40", 40);
    const shifted = await labels("plus-one-40.txt", 40, 1);

    // Act
    const stopped = await score(images, shifted, join(work, "out-shifted-40"));
    const forced = await score(images, shifted, join(work, "out-forced-40"), MODEL, "--no-label-check");

    // Assess
    expect(stopped.code).toBe(2);
    expect(stopped.stderr).toContain("scoring stopped after 40 labelled image(s)");
    expect(forced.code).toBe(0);
    expect(forced.stderr).toMatch(/warning \(label check off\): label check: labels as given: top-1 .* labels one too high/);
    expect(await readdir(join(work, "out-forced-40"))).toContain("summary.json");
  });

  it("does not stop an untrained model (accuracy near chance) whatever the labels", async () => {
    // Prepare
    const images = await photos("untrained-40", 40);
    const right = await labels("untrained-right.txt", 40, 0);
    const shifted = await labels("untrained-shifted.txt", 40, 1);
    // Act
    const onRight = await score(images, right, join(work, "out-untrained-right"), UNTRAINED);
    const onShifted = await score(images, shifted, join(work, "out-untrained-shifted"), UNTRAINED);
    // Assess
    expect(onRight.code).toBe(0);
    expect(onShifted.code).toBe(0);
    expect(onShifted.stderr).toMatch(/label check passed on 40 labelled image\(s\)/);
  });
});

describe("score's label check on photos with validation names and a label file in devkit ids", () => {
  it("stops, naming the devkit ids with their accuracy beside the given labels'; silent on the sorted-WNID labels", async () => {
    // Prepare: 40 photos under validation names of their own class; two val.txt files for them.
    const { folder, named } = await validationPhotos("val-names-40", 40);
    const devkit = join(work, "devkit-40.txt");
    await writeFile(devkit, named.map(([file, label]) => `${file} ${devkitId(label)}\n`).join(""));
    const right = join(work, "val-names-right-40.txt");
    await writeFile(right, named.map(([file, label]) => `${file} ${label}\n`).join(""));
    const out = join(work, "out-devkit-40");

    // Act
    const stopped = await score(folder, devkit, out);
    const passed = await score(folder, right, join(work, "out-val-names-right-40"));

    // Assess: exit 2 after all 40; the figures recounted from the records (top-1 against the
    // samples-val.txt label each photo really has).
    expect(stopped.stderr).not.toMatch(/unexpected error/);
    expect(stopped.code).toBe(2);
    const records = await readResults(out);
    expect(records).toHaveLength(40);
    const labelOf = new Map(named);
    const given = records.filter((r) => r.top5["1"]?.[0]?.[0] === r.label).length;
    const remapped = records.filter((r) => r.top5["1"]?.[0]?.[0] === labelOf.get(r.key)).length;
    expect(given).toBe(0);
    expect(remapped).toBeGreaterThan(20);
    expect(stopped.stderr).toContain(
      `label check: labels as given: top-1 0.0% (0 of 40); labels in the devkit's ids (ILSVRC2012_ID order, as in ILSVRC2012_validation_ground_truth.txt), ` +
        `not sorted-WNID indices (given n is the class the built-in validation labels give the images labelled n; learned from 40 image(s) named ILSVRC2012_val_*): ` +
        `${percent(remapped, 40)} (${remapped} of 40), one-sided exact sign test p = `,
    );
    expect(stopped.stderr).toContain("scoring stopped after 40 labelled image(s)");
    expect(passed.code).toBe(0);
    expect(passed.stderr).toMatch(/label check passed on 40 labelled image\(s\): labels as given: top-1 \d+\.\d% \(\d+ of 40\); best remapping \((minus-one|plus-one|folders-as-strings|model-folders-as-strings)\)/);
  });
});

describe("plan's label check (S3/SQS emulator, real photos, bvlc GoogLeNet at 1 crop on this CPU)", () => {
  it("refuses to send when every label is one too high: nothing on the queue, nothing under --out; right labels are sent with the diagnosis beside the manifest", async () => {
    // Prepare: 40 photos and two val.txt files (right, every label +1) in the emulator's bucket.
    const emulator = await startEmulator();
    try {
      emulator.server.createBucket("data");
      const data = new S3Location("s3://data", emulator.s3);
      for (const [file] of truth.slice(0, 40)) await data.write(`images/${file}`, await readFile(join(SAMPLES, file)));
      await data.write("models/bvlc.onnx", await readFile(MODEL));
      await data.write("right.txt", truth.slice(0, 40).map(([file, label]) => `${file} ${label}\n`).join(""));
      await data.write("shifted.txt", truth.slice(0, 40).map(([file, label]) => `${file} ${label + 1}\n`).join(""));
      const queue = emulator.createQueue("label-check", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
      const synsets = await readSynsets(SYNSETS);
      const plan = (labels: string, out: string) =>
        planDataRun(emulator, synsets, { queueUrl: queue.queueUrl, out, models: ["s3://data/models/bvlc.onnx"], labels, batchSize: 8 });
      const visible = async (): Promise<number> => {
        const response = await emulator.sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: queue.queueUrl, AttributeNames: ["ApproximateNumberOfMessages"] }),
        );
        return Number(response.Attributes?.ApproximateNumberOfMessages);
      };
      const keysUnder = async (url: string): Promise<string[]> => {
        const keys: string[] = [];
        for await (const key of new S3Location(url, emulator.s3).list()) keys.push(key);
        return keys;
      };

      // Act
      const refused = await plan("s3://data/shifted.txt", "s3://data/runs/shifted").catch((error: unknown) => error);

      // Assess
      expect(refused).toBeInstanceOf(LabelMismatchError);
      expect((refused as Error).message).toMatch(
        /^label check: labels as given: top-1 \d+\.\d% \(\d+ of 40\); labels one too high \(1-based class ids: given n is class n-1\): \d+\.\d% \(\d+ of 40\).*nothing was sent: the labels do not match/,
      );
      expect(await visible()).toBe(0);
      expect(await keysUnder("s3://data/runs/shifted")).toEqual([]);

      // Act: the right labels.
      const sent = await plan("s3://data/right.txt", "s3://data/runs/right");

      // Assess
      expect(sent.batches).toBe(5);
      expect(await visible()).toBe(5);
      expect(sent.labelCheck?.winner).toBeNull();
      const stored = JSON.parse((await data.read("runs/right/" + LABEL_CHECK_FILE)).toString("utf8")) as { summary: string; images: number };
      expect(stored.images).toBe(40);
      expect(stored.summary).toMatch(/^label check passed on 40 labelled image\(s\)/);

      // Act: a worker's part done by hand (each image's label ranked first), then aggregate.
      const { manifest, manifestDigest } = await readManifestWithDigest(new S3Location("s3://data/runs/right", emulator.s3));
      for (const batch of manifest.batches) {
        const lines = batch.keys.map((key, i) => {
          const label = batch.labels[i] as number;
          return `${JSON.stringify({ key, label, width: 500, height: 375, top5: { "1": [[label, 0.9, "x"]] } })}\n`;
        });
        await data.write(`runs/right/${batchResultKeyFor(manifestDigest, batch.id)}`, lines.join(""));
      }
      await aggregateRun(new S3Location("s3://data/runs/right", emulator.s3));

      // Assess: report.html has the diagnosis in its own section.
      const report = (await data.read("runs/right/report.html")).toString("utf8");
      expect(report).toContain('<section id="label-check"><h2>Label check</h2>');
      expect(report).toContain(stored.summary.split(";")[0] as string);
    } finally {
      await emulator.stop();
    }
  });

  it("refuses to send validation-named photos labelled in devkit ids, naming the remapping; sends them labelled by sorted WNID", async () => {
    // Prepare: 40 photos under validation names of their own class, a devkit-id and a right val.txt.
    const emulator = await startEmulator();
    try {
      emulator.server.createBucket("data");
      const data = new S3Location("s3://data", emulator.s3);
      const { folder, named } = await validationPhotos("plan-val-names-40", 40);
      for (const [file] of named) await data.write(`images/${file}`, await readFile(join(folder, file)));
      await data.write("models/bvlc.onnx", await readFile(MODEL));
      await data.write("devkit.txt", named.map(([file, label]) => `${file} ${devkitId(label)}\n`).join(""));
      await data.write("right.txt", named.map(([file, label]) => `${file} ${label}\n`).join(""));
      const queue = emulator.createQueue("label-check-devkit", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
      const synsets = await readSynsets(SYNSETS);
      const plan = (labels: string, out: string) =>
        planRun({
          input: "s3://data/images",
          out,
          queueUrl: queue.queueUrl,
          models: ["s3://data/models/bvlc.onnx"],
          labels,
          synsets,
          crops: 1,
          batchSize: 8,
          engine: "onnxruntime",
          clients: { s3: emulator.s3, sqs: emulator.sqs },
        });

      // Act
      const refused = await plan("s3://data/devkit.txt", "s3://data/runs/devkit").catch((error: unknown) => error);
      const sent = await plan("s3://data/right.txt", "s3://data/runs/right");

      // Assess
      expect(refused).toBeInstanceOf(LabelMismatchError);
      expect((refused as Error).message).toMatch(
        /^label check: labels as given: top-1 0\.0% \(0 of 40\); labels in the devkit's ids \(ILSVRC2012_ID order.*learned from 40 image\(s\) named ILSVRC2012_val_\*\): \d+\.\d% \(\d+ of 40\).*nothing was sent/,
      );
      expect((refused as LabelMismatchError).diagnosis.winner?.id).toBe("devkit-ids");
      expect(sent.batches).toBe(5);
      expect(sent.labelCheck?.winner).toBeNull();
    } finally {
      await emulator.stop();
    }
  });
});

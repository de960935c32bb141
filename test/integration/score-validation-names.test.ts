import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScoredRecord, Summary } from "../../scoring/records.js";

const REPO = resolve(import.meta.dirname, "../..");
const SHARED = resolve(REPO, "../shared/imagenet");
const MODEL = resolve(REPO, "../shared/models/bvlc-googlenet.onnx");

/** Photos of five classes; each is copied to a validation name of its own class. */
const PHOTOS = [
  "n01440764_tench.JPEG",
  "n01443537_goldfish.JPEG",
  "n01494475_hammerhead.JPEG",
  "n01518878_ostrich.JPEG",
  "n01855672_goose.JPEG",
];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((done, fail) => {
    // One node process with tsx's loader: npx would start npm and tsx's own CLI first (about a
    // second of CPU per run) and put npm's warnings on stderr.
    const child = spawn(process.execPath, ["--import", "tsx", "handlers/cli.ts", ...args], { cwd: REPO, env: { ...process.env, FORCE_COLOR: "0" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

/** Wilson 95% interval, written out again here (not imported) as the check's own arithmetic. */
function wilson(errors: number, n: number): [number, number] {
  const z = 1.96;
  const p = errors / n;
  const d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d;
  const h = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [errors === 0 ? 0 : c - h, errors === n ? 1 : c + h];
}

describe("score on photos named as ILSVRC 2012 validation images, with no --labels", () => {
  let dir: string;
  let images: string;
  /** Validation number picked for each photo; the labels the photos really have, from samples-val.txt. */
  const picked = new Map<string, { n: number; label: number }>();
  let realLists: number[][];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "score-val-names-"));
    images = join(dir, "images");
    // The data, not the code under test: line n of the TF-slim file is the WNID of val n; the
    // photos' class indices come from samples-val.txt, a file the built-in labels never read.
    const wnidOfVal = (await readFile(join(SHARED, "ilsvrc2012_validation_synset_labels.txt"), "utf8")).trim().split("\n");
    const caffe = new Map(
      (await readFile(join(SHARED, "samples-val.txt"), "utf8"))
        .trim()
        .split("\n")
        .map((line) => line.split(" ") as [string, string])
        .map(([file, index]) => [file, Number(index)]),
    );
    realLists = JSON.parse(await readFile(join(SHARED, "real.json"), "utf8")) as number[][];
    for (const [i, photo] of PHOTOS.entries()) {
      const wnid = photo.slice(0, 9);
      // The goldfish (second) takes a validation image whose ReaL list is empty (val 236), so
      // leftOut is seen; the others one with a list.
      const n = wnidOfVal.findIndex((w, j) => w === wnid && (i === 1 ? realLists[j]?.length === 0 : (realLists[j]?.length ?? 0) > 0)) + 1;
      expect(n).toBeGreaterThan(0);
      picked.set(photo, { n, label: caffe.get(photo) as number });
      await mkdir(images, { recursive: true });
      await copyFile(join(SHARED, "samples", photo), join(images, `ILSVRC2012_val_${String(n).padStart(8, "0")}.JPEG`));
    }
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("labels them from the built-in validation labels and reports ReaL and calibration per scheme", async () => {
    // Act
    const out = join(dir, "out");
    const run = await cli(["score", images, "--model", MODEL, "--crops", "10", "--out", out, "--engine", "onnxruntime", "--threads", "1"]);

    // Assess
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/labels: built-in ILSVRC 2012 validation labels \(.*ilsvrc2012_validation_synset_labels\.txt\) for 5 of 5 images/);
    expect(run.stderr).toContain("label space: labels from the built-in ILSVRC 2012 validation labels (names ILSVRC2012_val_NNNNNNNN); all 1000 classes\n");
    expect(run.stdout).toMatch(/top-5 error\s+ReaL top-1\s+ReaL top-5\s+NLL\s+ECE/);
    expect(run.stdout).toMatch(/labels: built-in ILSVRC 2012 validation labels \(ilsvrc2012_validation_synset_labels\.txt\) for 5 images/);
    const header = JSON.parse(await readFile(join(out, "run-header.json"), "utf8")) as { builtInLabels?: { images: number } };
    expect(header.builtInLabels?.images).toBe(5);
    const records = (await readFile(join(out, "results.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as ScoredRecord);
    const summary = JSON.parse(await readFile(join(out, "summary.json"), "utf8")) as Summary;
    expect(summary.labelled).toBe(5);
    expect(summary.builtInLabels).toEqual({ file: "ilsvrc2012_validation_synset_labels.txt", images: 5 });
    expect(summary.realLabels).toEqual({ source: "built-in real.json", images: 5 });
    for (const record of records) {
      const photo = [...picked.entries()].find(([, p]) => record.key === `ILSVRC2012_val_${String(p.n).padStart(8, "0")}.JPEG`);
      expect(record.label).toBe(photo?.[1].label);
      // labelProbability is the same mean the top-5 lists: where the label is in the top-5, they agree.
      for (const scheme of ["1", "10"] as const) {
        const p = record.labelProbability?.[scheme];
        expect(typeof p).toBe("number");
        const listed = record.top5[scheme]?.find(([c]) => c === record.label);
        if (listed) expect(p).toBe(listed[1]);
      }
    }
    for (const scheme of ["1", "10"] as const) {
      // ReaL and NLL recomputed here from results.jsonl and real.json with the test's own arithmetic.
      const judged = records.map((r) => ({ list: realLists[Number(r.key.slice(15, 23)) - 1] as number[], top: r.top5[scheme] ?? [] }));
      const kept = judged.filter((j) => j.list.length > 0);
      const top1Errors = kept.filter((j) => !j.list.includes(j.top[0]?.[0] as number)).length;
      const top5Errors = kept.filter((j) => !j.top.some(([c]) => j.list.includes(c))).length;
      const real = summary.schemes[scheme]?.real;
      expect(real?.leftOut).toBe(1);
      expect(real?.top1Error).toBe(top1Errors / 4);
      expect(real?.top5Error).toBe(top5Errors / 4);
      expect(real?.top1Interval[1]).toBeCloseTo(wilson(top1Errors, 4)[1], 12);
      const nll = records.reduce((sum, r) => sum - Math.log(Math.max(r.labelProbability?.[scheme] as number, 1e-12)), 0) / 5;
      expect(summary.schemes[scheme]?.calibration?.nll).toBeCloseTo(nll, 12);
      const ece = summary.schemes[scheme]?.calibration?.ece as number;
      expect(ece).toBeGreaterThanOrEqual(0);
      expect(ece).toBeLessThanOrEqual(1);
    }
    const report = await readFile(join(out, "report.html"), "utf8");
    expect(report).toContain('id="beyond-section"');
    expect(report).toMatch(/id="chart-reliability-1"[\s\S]*<svg/);
    expect(report).toContain('id="chart-reliability-10"');
  }, 600_000);

  it("--labels none leaves them unlabelled, ReaL still judged by name", async () => {
    // Act
    const out = join(dir, "out-none");
    const run = await cli(["score", images, "--model", MODEL, "--crops", "1", "--labels", "none", "--out", out, "--engine", "onnxruntime", "--threads", "1"]);

    // Assess
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/built-in ILSVRC 2012 validation labels/);
    const summary = JSON.parse(await readFile(join(out, "summary.json"), "utf8")) as Summary;
    expect(summary.labelled).toBe(0);
    expect(summary.builtInLabels).toBeUndefined();
    expect(summary.schemes["1"]).toBeUndefined();
    expect(summary.realLabels?.images).toBe(5);
  }, 600_000);
});

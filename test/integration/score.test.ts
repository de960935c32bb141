import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord, ScoredRecord, Summary } from "../../scoring/records.js";

const REPO = resolve(import.meta.dirname, "../..");
const SHARED = resolve(REPO, "../shared");
const MODEL = join(SHARED, "models/bvlc-googlenet.onnx");
const TORCHVISION = join(SHARED, "models/torchvision-googlenet-untrained.onnx");
const SYNSETS = join(SHARED, "imagenet/synset_words.txt");
const SAMPLES = join(SHARED, "imagenet/samples");

/** Real photos (landscape, portrait, square-ish) and their class indices in samples-val.txt. */
const PHOTOS: [file: string, label: number][] = [
  ["n01440764_tench.JPEG", 0],
  ["n01443537_goldfish.JPEG", 1],
  ["n01494475_hammerhead.JPEG", 4],
  ["n01518878_ostrich.JPEG", 9],
  ["n01855672_goose.JPEG", 99],
  ["n01860187_black_swan.JPEG", 100],
];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI the way a user does, through tsx; `env` is the whole environment when given. */
function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((done, fail) => {
    // One node process with tsx's loader: npx would start npm and tsx's own CLI first (about a
    // second of CPU per run) and put npm's warnings on stderr.
    const child = spawn(process.execPath, ["--import", "tsx", "handlers/cli.ts", ...args], { cwd: REPO, env: { ...env, FORCE_COLOR: "0" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

async function readResults(out: string): Promise<ResultRecord[]> {
  const text = await readFile(join(out, "results.jsonl"), "utf8");
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as ResultRecord);
}

async function readSummary(out: string): Promise<Summary> {
  return JSON.parse(await readFile(join(out, "summary.json"), "utf8")) as Summary;
}

let work: string;
let images: string;
let valTxt: string;
/** Keys in the order the listing gives them: sorted, sub-folder paths `/`-separated. */
let expectedKeys: string[];
const BAD = { "a-corrupt.jpg": "truncated", "empty.JPG": "empty", "notes.jpg": "not an image" } as const;

beforeAll(async () => {
  // Prepare: 6 real photos (two in a sub-folder), a truncated JPEG, an empty file, a text file
  // named .jpg, and a file that is not listed as an image.
  work = await mkdtemp(join(tmpdir(), "score-it-"));
  images = join(work, "images");
  await mkdir(join(images, "more"), { recursive: true });
  const keys: string[] = [];
  for (const [i, [file]] of PHOTOS.entries()) {
    const key = i < 4 ? file : `more/${file}`;
    await copyFile(join(SAMPLES, file), join(images, key));
    keys.push(key);
  }
  const tench = await readFile(join(SAMPLES, "n01440764_tench.JPEG"));
  await writeFile(join(images, "a-corrupt.jpg"), tench.subarray(0, Math.floor(tench.length / 3)));
  await writeFile(join(images, "empty.JPG"), "");
  await writeFile(join(images, "notes.jpg"), "these are not pixels\n");
  await writeFile(join(images, "README.txt"), "not listed: not an image extension\n");
  expectedKeys = [...keys, ...Object.keys(BAD)].sort();
  valTxt = join(work, "val.txt");
  await writeFile(valTxt, PHOTOS.map(([file, label]) => `${file} ${label}`).join("\n") + "\n");
}, 60_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const scoreArgs = (out: string, ...extra: string[]): string[] => [
  "score",
  images,
  "--model",
  MODEL,
  "--engine",
  "onnxruntime",
  "--crops",
  "10",
  "--labels",
  valTxt,
  "--synsets",
  SYNSETS,
  "--out",
  out,
  ...extra,
];

/** Error rates recomputed from results.jsonl alone, to hold summary.json to. */
function ratesFrom(records: ResultRecord[], scheme: "1" | "10"): { top1Error: number; top5Error: number } {
  const labelled = records.filter((r): r is ScoredRecord => !("error" in r) && r.label !== null);
  const top = (r: ScoredRecord): number[] => (r.top5[scheme] ?? []).map((entry) => entry[0]);
  return {
    top1Error: labelled.filter((r) => top(r)[0] !== r.label).length / labelled.length,
    top5Error: labelled.filter((r) => !top(r).includes(r.label as number)).length / labelled.length,
  };
}

describe("googlenet-eval score (real model, real photos, onnxruntime, 10 crops)", () => {
  let out: string;
  let first: Run;

  beforeAll(async () => {
    out = join(work, "out");
    first = await cli(scoreArgs(out));
  }, 300_000);

  it("exits 0 and prints the Table 3 block", () => {
    expect(first.stderr).not.toMatch(/unexpected error/);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/images 9, scored 6, failed 3, labelled 6/);
    expect(first.stdout).toMatch(/^1\s+1\s+bvlc-googlenet\.onnx\s+\d+\.\d\d%\s+\d+\.\d\d%\s+\d+\.\d{4}\s+\d+\.\d\d%$/m);
    expect(first.stdout).toMatch(/^1\s+10\s+bvlc-googlenet\.onnx\s+\d+\.\d\d%\s+\d+\.\d\d%\s+\d+\.\d{4}\s+\d+\.\d\d%$/m);
  });

  it("writes one results.jsonl line per image in input order, with error records for the bad files", async () => {
    // Act
    const records = await readResults(out);

    // Assess
    expect(records.map((r) => r.key)).toEqual(expectedKeys);
    for (const [key, reason] of Object.entries(BAD)) {
      const record = records.find((r) => r.key === key);
      expect(record, key).toMatchObject({ key, error: expect.stringContaining(key) });
      expect((record as { error: string }).error.toLowerCase()).toContain(reason);
    }
    for (const [file, label] of PHOTOS) {
      const record = records.find((r) => r.key.endsWith(file)) as ScoredRecord;
      expect(record.label).toBe(label);
      expect(Object.keys(record.top5)).toEqual(["1", "10"]);
      expect(record.models).toBeUndefined();
      for (const entries of Object.values(record.top5)) {
        expect(entries).toHaveLength(5);
        const probabilities = entries.map((entry) => entry[1]);
        expect(probabilities).toEqual([...probabilities].sort((a, b) => b - a));
        expect(probabilities.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1 + 1e-6);
      }
    }
    // The real network knows these photos: the goldfish is a goldfish with the 10 crops.
    const goldfish = records.find((r) => r.key.endsWith("n01443537_goldfish.JPEG")) as ScoredRecord;
    expect(goldfish.top5["10"]?.[0]).toEqual([1, expect.any(Number), "goldfish"]);
    expect(goldfish.width).toBe(376);
    expect(goldfish.height).toBe(263);
  });

  it("writes summary.json consistent with results.jsonl", async () => {
    // Act
    const [records, summary] = [await readResults(out), await readSummary(out)];

    // Assess
    const failed = records.filter((r) => "error" in r);
    expect(summary).toMatchObject({
      images: records.length,
      scored: records.length - failed.length,
      failed: failed.length,
      labelled: 6,
      failedKeys: failed.map((r) => r.key),
    });
    expect(summary.schemes).toMatchObject({ "1": ratesFrom(records, "1"), "10": ratesFrom(records, "10") });
    expect(summary.models).toEqual([
      {
        file: MODEL,
        sha256: "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4",
        flavour: "bvlc",
        schemes: summary.schemes,
      },
    ]);
  });

  it("scores nothing again when re-run with the same --out, and gives the same summary", async () => {
    // Prepare
    const before = await readFile(join(out, "results.jsonl"), "utf8");
    const summaryBefore = await readSummary(out);

    // Act
    const again = await cli(scoreArgs(out));

    // Assess
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/resuming: 9 of 9 images already/);
    expect(again.stderr).toMatch(/^0\/0 images/m);
    expect(await readFile(join(out, "results.jsonl"), "utf8")).toBe(before);
    expect(await readSummary(out)).toEqual(summaryBefore);
  });

  it("resumes a run killed with SIGKILL mid-way and ends with the same results", async () => {
    // Prepare: small batches on one thread so the run is still going when it is killed. It runs
    // as one node process (node --import tsx), so SIGKILL hits the scorer itself, not a wrapper.
    const killedOut = join(work, "killed");
    const child = spawn(process.execPath, ["--import", "tsx", "handlers/cli.ts", ...scoreArgs(killedOut, "--crops-per-call", "2", "--threads", "1")], {
      cwd: REPO,
      stdio: "ignore",
    });
    const exited = new Promise((done) => child.on("exit", done));
    let linesAtKill = 0;
    let keysAtKill: string[] = [];
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const text = await readFile(join(killedOut, "results.jsonl"), "utf8").catch(() => "");
      const complete = text.split("\n").slice(0, -1);
      linesAtKill = complete.length;
      keysAtKill = complete.map((line) => (JSON.parse(line) as ResultRecord).key);
      if (linesAtKill >= 3) break;
      await new Promise((wait) => setTimeout(wait, 20));
    }

    // Act
    child.kill("SIGKILL");
    await exited;
    const resumed = await cli(scoreArgs(killedOut));

    // Assess
    expect(linesAtKill).toBeGreaterThanOrEqual(3);
    expect(linesAtKill).toBeLessThan(expectedKeys.length);
    // Appended as the scorer yields, so this also shows it yields in input order.
    expect(keysAtKill).toEqual(expectedKeys.slice(0, keysAtKill.length));
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toMatch(/resuming: \d+ of 9 images already/);
    const done = Number(/resuming: (\d+) of 9/.exec(resumed.stderr)?.[1]);
    expect(done).toBeGreaterThanOrEqual(3);
    expect(resumed.stderr).toMatch(new RegExp(`^${9 - done}/${9 - done} images`, "m"));
    const [records, reference] = [await readResults(killedOut), await readResults(out)];
    expect(records.map((r) => r.key)).toEqual(expectedKeys);
    records.forEach((record, i) => {
      const expected = reference[i] as ResultRecord;
      if ("error" in expected) return expect(record).toEqual(expected);
      // Other batch sizes and thread counts may change float rounding, not the ranking.
      const got = record as ScoredRecord;
      for (const scheme of ["1", "10"] as const) {
        expect(got.top5[scheme]?.map((e) => e[0])).toEqual(expected.top5[scheme]?.map((e) => e[0]));
        got.top5[scheme]?.forEach((entry, k) => expect(entry[1]).toBeCloseTo(expected.top5[scheme]?.[k]?.[1] as number, 5));
      }
    });
    expect((await readSummary(killedOut)).schemes).toEqual((await readSummary(out)).schemes);
  });
});

describe("googlenet-eval score: class names with no synsets file", () => {
  it("names classes from the list built into the package, equal to ImageNet's synset_words.txt", async () => {
    // Prepare: two photos alone in a folder of their own (no synset_words.txt beside them, none
    // in the environment); the expected names read here straight from ../shared.
    const folder = join(work, "two-photos");
    await mkdir(folder, { recursive: true });
    for (const [file] of PHOTOS.slice(0, 2)) await copyFile(join(SAMPLES, file), join(folder, file));
    const names = (await readFile(SYNSETS, "utf8"))
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => line.slice(line.indexOf(" ") + 1).split(",")[0]?.trim());
    const env = { ...process.env };
    delete env.GOOGLENET_EVAL_SYNSETS;
    const out = join(work, "built-in-names");

    // Act
    const run = await cli(["score", folder, "--model", MODEL, "--engine", "onnxruntime", "--crops", "1", "--out", out], env);

    // Assess
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^class names: the 1000 ImageNet classes \(built in: .*data\/synset_words\.txt\)$/m);
    const records = (await readResults(out)).filter((r): r is ScoredRecord => !("error" in r));
    expect(records.map((r) => r.key)).toEqual(PHOTOS.slice(0, 2).map(([file]) => file));
    expect(names).toHaveLength(1000);
    for (const record of records) {
      const entries = record.top5["1"] ?? [];
      expect(entries).toHaveLength(5);
      for (const [index, , name] of entries) expect(name).toBe(names[index]);
    }
    // Labels come from the WNIDs in the file names, looked up in the same built-in list.
    expect(records.map((r) => r.label)).toEqual([0, 1]);
    expect(records[1]?.top5["1"]?.[0]).toEqual([1, expect.any(Number), "goldfish"]);
  });
});

describe("googlenet-eval score: labels and flags", () => {
  it.each([
    {
      name: "LOC_val_solution.csv",
      text: () => `ImageId,PredictionString\n${PHOTOS.map(([f]) => `${f.replace(".JPEG", "")},${f.slice(0, 9)} 1 2 3 4`).join("\n")}\n`,
    },
    {
      name: "no --labels (WNIDs in the file names)",
      text: undefined,
    },
  ])("labels every photo from $name", async ({ name, text }) => {
    // Prepare
    const out = join(work, `labels-${name.replace(/\W+/g, "-")}`);
    const labelArgs: string[] = [];
    if (text) {
      const path = join(work, "LOC_val_solution.csv");
      await writeFile(path, text());
      labelArgs.push("--labels", path);
    }
    const args = scoreArgs(out, "--crops", "1").filter((_, i, all) => all[i] !== "--labels" && all[i - 1] !== "--labels");

    // Act
    const run = await cli([...args, ...labelArgs]);

    // Assess
    expect(run.code).toBe(0);
    const records = (await readResults(out)).filter((r): r is ScoredRecord => !("error" in r));
    expect(records.map((r) => [r.key.split("/").pop(), r.label])).toEqual(
      [...PHOTOS].sort((a, b) => expectedKeys.findIndex((k) => k.endsWith(a[0])) - expectedKeys.findIndex((k) => k.endsWith(b[0]))),
    );
    expect(Object.keys(records[0]?.top5 ?? {})).toEqual(["1"]);
  });

  it("refuses the devkit ground truth before loading anything, saying what to use", async () => {
    // Prepare
    const path = join(work, "ILSVRC2012_validation_ground_truth.txt");
    await writeFile(path, Array.from({ length: 50_000 }, (_, i) => String((i * 7) % 1000 + 1)).join("\n") + "\n");

    // Act
    const run = await cli(["score", images, "--model", MODEL, "--labels", path, "--synsets", SYNSETS, "--out", join(work, "gt")]);

    // Assess
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/LabelFileError: .*ILSVRC2012_validation_ground_truth\.txt.*devkit ids.*val\.txt.*LOC_val_solution\.csv/);
  });

  it.each([
    [["--crops", "7"], /--crops must be one of: 1, 10, 144/],
    [["--engine", "tfj"], /--engine must be one of: tfjs, onnxruntime, auto/],
    [["--preprocess", "caffe"], /--preprocess must be one of: bvlc, torchvision/],
    [["--crops-per-call", "0"], /--crops-per-call must be a positive integer/],
    [["--frobnicate"], /Unknown option '--frobnicate'.*--help/],
    [["--batch", "0"], /--batch is deprecated .*; use --crops-per-call\n.*--crops-per-call must be a positive integer/],
  ])("exits 2 on bad flags %j, listing the valid choices", async (extra, message) => {
    // Act
    const run = await cli(["score", images, "--model", MODEL, ...extra]);

    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it("exits 2 with usage for an unknown command, and prints the crop plan as JSON", async () => {
    // Act
    const [unknown, crops] = [await cli(["scroe"]), await cli(["crops", "--size", "500x375", "--json"])];

    // Assess
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "scroe"; use one of: crops, score/);
    expect(crops.code).toBe(0);
    const plan = JSON.parse(crops.stdout) as { width: number; height: number; crops: unknown[] };
    expect(plan).toMatchObject({ width: 500, height: 375 });
    expect(plan.crops).toHaveLength(144);
  });
});

/**
 * A classifier that is no GoogLeNet: global average pool, then a linear map from the three
 * channel means to 1000 logits. Real ONNX that onnxruntime runs, small enough to write here.
 */
function tinyClassifierOnnx(): Uint8Array {
  const { onnx } = onnxProto;
  const FLOAT = 1;
  const tensorInfo = (name: string, dims: (number | string)[]) => ({
    name,
    type: {
      tensorType: {
        elemType: FLOAT,
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
  const weights = Array.from({ length: 3 * 1000 }, (_, i) => Math.sin(i));
  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: "", version: 13 }],
    graph: {
      name: "tiny",
      node: [
        { opType: "GlobalAveragePool", input: ["pixels"], output: ["pooled"] },
        { opType: "Flatten", input: ["pooled"], output: ["flat"] },
        { opType: "Gemm", input: ["flat", "w"], output: ["scores"], attribute: [{ name: "transB", type: 2, i: 1 }] },
      ],
      initializer: [{ name: "w", dataType: FLOAT, dims: [1000, 3], floatData: weights }],
      input: [tensorInfo("pixels", ["batch", 3, 224, 224])],
      output: [tensorInfo("scores", ["batch", 1000])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

describe("googlenet-eval score: other models", () => {
  it("runs any ImageNet classifier in ONNX once --preprocess names its input convention", async () => {
    // Prepare
    const tiny = join(work, "tiny-classifier.onnx");
    await writeFile(tiny, tinyClassifierOnnx());
    const base = ["score", images, "--model", tiny, "--engine", "onnxruntime", "--crops", "1", "--synsets", SYNSETS];

    // Act
    const refused = await cli([...base, "--out", join(work, "tiny-refused")]);
    const run = await cli([...base, "--preprocess", "torchvision", "--out", join(work, "tiny")]);

    // Assess
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /ModelFormatError: .*tiny-classifier\.onnx.*name it with preprocess bvlc .* or preprocess torchvision .*\(on the command line: --preprocess bvlc\|torchvision\)\n/,
    );
    expect(run.code).toBe(0);
    const records = (await readResults(join(work, "tiny"))).filter((r): r is ScoredRecord => !("error" in r));
    expect(records).toHaveLength(6);
    for (const record of records) {
      // Logits were softmaxed: probabilities in (0, 1), and five of them sum to less than 1.
      const probabilities = (record.top5["1"] ?? []).map((entry) => entry[1]);
      expect(probabilities.every((p) => p > 0 && p < 1)).toBe(true);
      expect(probabilities.reduce((a, b) => a + b, 0)).toBeLessThan(1);
    }
    expect((await readSummary(join(work, "tiny"))).models[0]).toMatchObject({ file: tiny, flavour: "torchvision" });
  });

  it("averages an ensemble of a softmax model and a logits model, reporting each", async () => {
    // Prepare
    const out = join(work, "ensemble");

    // Act
    const run = await cli(["score", images, "--model", MODEL, "--model", TORCHVISION, "--engine", "onnxruntime", "--crops", "1", "--synsets", SYNSETS, "--labels", valTxt, "--out", out]);

    // Assess
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^2\s+1\s+ensemble\s+\d+\.\d\d%\s+\d+\.\d\d%\s+\d+\.\d{4}\s+\d+\.\d\d%$/m);
    const records = (await readResults(out)).filter((r): r is ScoredRecord => !("error" in r));
    let checked = 0;
    for (const record of records) {
      expect(record.models).toHaveLength(2);
      const [a, b] = (record.models ?? []).map((m) => m.top5["1"] ?? []);
      const [mapA, mapB] = [new Map(a?.map((e) => [e[0], e[1]])), new Map(b?.map((e) => [e[0], e[1]]))];
      // A class outside a model's top-5 has at most that model's 5th probability.
      const [floorA, floorB] = [a?.[4]?.[1] ?? 0, b?.[4]?.[1] ?? 0];
      for (const [index, probability] of (record.top5["1"] ?? []).map((e) => [e[0], e[1]] as const)) {
        const [pa, pb] = [mapA.get(index), mapB.get(index)];
        // The ensemble's probability is the mean of the models' probabilities.
        if (pa !== undefined && pb !== undefined) expect(probability).toBeCloseTo((pa + pb) / 2, 6);
        else if (pa !== undefined) expect(2 * probability - pa).toBeLessThanOrEqual(floorB + 1e-6);
        else if (pb !== undefined) expect(2 * probability - pb).toBeLessThanOrEqual(floorA + 1e-6);
        else expect(2 * probability).toBeLessThanOrEqual(floorA + floorB + 1e-6);
        expect(probability).toBeGreaterThanOrEqual(Math.max(pa ?? 0, pb ?? 0) / 2 - 1e-6);
        checked++;
      }
      // The ensemble's best is at least half of either model's best.
      const best = record.top5["1"]?.[0]?.[1] ?? 0;
      expect(best).toBeGreaterThanOrEqual(Math.max(a?.[0]?.[1] ?? 0, b?.[0]?.[1] ?? 0) / 2 - 1e-6);
    }
    expect(checked).toBe(records.length * 5);
    const summary = await readSummary(out);
    expect(summary.models.map((m) => [m.file, m.flavour])).toEqual([
      [MODEL, "bvlc"],
      [TORCHVISION, "torchvision"],
    ]);
    expect(summary.models[1]?.sha256).toBe("1843af8e0dc3c89ab917b54e5fca51e7821f9bb70ca677583d43a7bdfa9b46aa");
  });
});

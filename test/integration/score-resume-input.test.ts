import { copyFile, mkdir, mkdtemp, readFile, readdir, realpath, rename, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord } from "../../scoring/records.js";
import { spawnCli } from "../helpers/cli-process.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");
const SAMPLES = join(SHARED, "imagenet/samples");
const BVLC = join(SHARED, "models/bvlc-googlenet.onnx");
const SYNSETS = join(SHARED, "imagenet/synset_words.txt");

/** The names both folders use, in listing order. */
const NAMES = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01494475_hammerhead.JPEG"] as const;
/** Other real photos, saved under NAMES in the second folder: same keys, other images. */
const OTHERS = ["n01518878_ostrich.JPEG", "n01855672_goose.JPEG", "n01530575_brambling.JPEG"] as const;

interface Run {
  code: number | string;
  out: string;
}

async function runCli(args: string[], cwd?: string): Promise<Run> {
  const cli = spawnCli(args, {}, cwd === undefined ? {} : { cwd });
  const code = await cli.exited;
  return { code, out: [...cli.lines, ...cli.stderr].join("\n") };
}

const scoreArgs = (input: string, out: string): string[] => [
  "score",
  input,
  "--model",
  BVLC,
  "--engine",
  "onnxruntime",
  "--crops",
  "1",
  "--synsets",
  SYNSETS,
  "--out",
  out,
];

function parseResults(text: string): ResultRecord[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ResultRecord);
}

let work: string;
let folderA: string;
let folderB: string;
let out: string;
/** results.jsonl of a clean run of folder A. */
let clean: ResultRecord[];
/** What a run of A killed after two images leaves: two lines and its run header. */
let partial: string;

beforeAll(async () => {
  // Prepare: two folders of real photos with the same file names, and a run of A cut back to
  // two images, as a killed run leaves it.
  work = await mkdtemp(join(tmpdir(), "score-resume-input-"));
  folderA = join(work, "A");
  folderB = join(work, "B");
  await mkdir(folderA);
  await mkdir(folderB);
  for (const [i, name] of NAMES.entries()) {
    await copyFile(join(SAMPLES, name), join(folderA, name));
    await copyFile(join(SAMPLES, OTHERS[i] as string), join(folderB, name));
  }
  out = join(work, "out");
  const first = await runCli(scoreArgs(folderA, out));
  expect(first.code, first.out).toBe(0);
  const text = await readFile(join(out, "results.jsonl"), "utf8");
  clean = parseResults(text);
  partial = `${text.split("\n").slice(0, 2).join("\n")}\n`;
  await writeFile(join(out, "results.jsonl"), partial);
  for (const file of ["summary.json", "run.json", "report.html"]) await unlink(join(out, file));
}, 300_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("score: a resume must be of the input it resumes", () => {
  it("refuses another folder with the same file names, naming both inputs, and changes no file", async () => {
    // Prepare
    const header = await readFile(join(out, "run-header.json"), "utf8");

    // Act
    const run = await runCli(scoreArgs(folderB, out));

    // Assess
    expect(run.code, run.out).toBe(2);
    expect(run.out).toContain(
      `googlenet-eval score: ${out} already holds a run with input ${await realpath(folderA)}; ` +
        `this run has input ${await realpath(folderB)}: use another output folder, or delete ${out} to start again`,
    );
    expect(await readFile(join(out, "results.jsonl"), "utf8")).toBe(partial);
    expect(await readFile(join(out, "run-header.json"), "utf8")).toBe(header);
    expect((await readdir(out)).sort()).toEqual(["results.jsonl", "run-header.json"]);
  });

  it("refuses the folder moved elsewhere: a new input", async () => {
    // Prepare
    const moved = join(work, "A-moved");
    await rename(folderA, moved);

    // Act
    let run: Run;
    try {
      run = await runCli(scoreArgs(moved, out));
    } finally {
      await rename(moved, folderA);
    }

    // Assess
    expect(run.code, run.out).toBe(2);
    expect(run.out).toContain(`already holds a run with input ${await realpath(folderA)}; this run has input ${join(await realpath(work), "A-moved")}:`);
    expect(await readFile(join(out, "results.jsonl"), "utf8")).toBe(partial);
  });

  it("resumes the same folder named by a relative path from another working directory, scoring only the rest", async () => {
    // Act: the first run named A by its absolute path from the repository root.
    const run = await runCli(scoreArgs("A", out), work);

    // Assess
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/resuming: 2 of 3 images already in/);
    expect(parseResults(await readFile(join(out, "results.jsonl"), "utf8"))).toEqual(clean);
  });

  it("resumes the same folder reached through a symbolic link", async () => {
    // Prepare
    await symlink(folderA, join(work, "A-link"));

    // Act
    const run = await runCli(scoreArgs(join(work, "A-link"), out));

    // Assess
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/resuming: 3 of 3 images already in/);
  });

  it("resumes a header written before inputs were recorded with a warning, and records the input", async () => {
    // Prepare: the header as versions before this field wrote it.
    const header = JSON.parse(await readFile(join(out, "run-header.json"), "utf8")) as Record<string, unknown>;
    delete header.input;
    await writeFile(join(out, "run-header.json"), JSON.stringify(header, null, 2));

    // Act
    const run = await runCli(scoreArgs(folderA, out));

    // Assess
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain(
      `warning: ${out}/run-header.json does not name its input (written by versions before inputs were recorded); ` +
        `resuming it as a run of ${await realpath(folderA)}, now recorded there`,
    );
    const after = JSON.parse(await readFile(join(out, "run-header.json"), "utf8")) as Record<string, unknown>;
    expect(after).toEqual({ ...header, input: await realpath(folderA) });
  });
});

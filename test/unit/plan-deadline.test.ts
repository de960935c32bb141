import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../handlers/cli.js";
import { tinyClassifierModel } from "../helpers/onnx-rewrite.js";

const SYNSETS = "../shared/imagenet/synset_words.txt";
/** Nothing listens here: a plan that got as far as sending fails with "cannot send". */
const DEAD_QUEUE = "http://127.0.0.1:9/000000000000/work";

/** Runs the CLI in this process and returns its exit code and stderr. */
async function runCli(argv: string[]): Promise<{ code: number; stderr: string }> {
  const written: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => (written.push(String(chunk)), true)) as typeof process.stderr.write;
  try {
    return { code: await main(argv), stderr: written.join("") };
  } finally {
    process.stderr.write = original;
  }
}

describe("plan refuses batches no worker could finish within its deadline", () => {
  let dir: string;
  let args: string[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "plan-deadline-"));
    await mkdir(join(dir, "images"));
    await writeFile(join(dir, "images", "n01440764_a.jpg"), "not decoded at plan time");
    await writeFile(join(dir, "model.onnx"), tinyClassifierModel());
    const common = ["--model", join(dir, "model.onnx"), "--preprocess", "torchvision", "--queue", DEAD_QUEUE, "--synsets", SYNSETS, "--no-label-check"];
    args = ["plan", join(dir, "images"), "--out", join(dir, "run"), ...common];
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    // 7,000 x 144 = 1,008,000 crops > 900 s x 1,000 crops/s = 900,000; 900,000 / 144 = 6,250 images.
    [["--images-per-batch", "7000"], "a batch of 7000 images x 144 crops x 1 model is 1008000 crops", "900000 crops within its deadline of 900 s", "at most 6250 images per batch"],
    // 100 x 144 = 14,400 crops > 10 s x 1,000 = 10,000; 10,000 / 144 = 69 images.
    [["--images-per-batch", "100", "--deadline", "10"], "is 14400 crops", "10000 crops within its deadline of 10 s", "at most 69 images per batch"],
    // An ensemble of two runs every crop twice: 4,000 x 144 x 2 = 1,152,000 > 900,000; 900,000 / 288 = 3,125.
    [["--images-per-batch", "4000", "--model", "second"], "x 2 models is 1152000 crops", "900000 crops within its deadline of 900 s", "at most 3125 images per batch"],
  ])("%j: exit 2 with the arithmetic and the fix, before anything is read or sent", async (flags, work, possible, fix) => {
    // Prepare: "second" is no file: a plan that got as far as reading models would say so.
    // Act
    const { code, stderr } = await runCli([...args, ...flags]);
    // Assess
    expect(code).toBe(2);
    expect(stderr).toContain(work);
    expect(stderr).toContain(`a worker can score at most ${possible} even at 1000 crops/s per model`);
    expect(stderr).toContain("an estimate: twice the README's assumed, unmeasured T4 speed of 500 crops/s");
    expect(stderr).toContain(`${fix}, fewer crops, or a longer deadline`);
    expect(stderr).toContain("(on the command line: --images-per-batch, --crops, --deadline)");
    expect(await readdir(dir)).not.toContain("run");
  });

  it("takes the deadline from BATCH_DEADLINE_SECONDS, as the workers do", async () => {
    // Prepare: 32 x 144 = 4,608 crops > 4 s x 1,000 = 4,000.
    process.env.BATCH_DEADLINE_SECONDS = "4";
    try {
      // Act
      const { code, stderr } = await runCli(args);
      // Assess
      expect(code).toBe(2);
      expect(stderr).toContain("a batch of 32 images x 144 crops x 1 model is 4608 crops, but a worker can score at most 4000 crops within its deadline of 4 s");
    } finally {
      delete process.env.BATCH_DEADLINE_SECONDS;
    }
  });

  it("lets a batch that fits at 1,000 crops/s through to the queue", async () => {
    // Act: 6,250 x 144 = 900,000 crops, exactly what 900 s allows.
    const { code, stderr } = await runCli([...args, "--images-per-batch", "6250"]);
    // Assess: it got as far as sending, to a queue nothing listens on.
    expect(code).toBe(1);
    expect(stderr).toMatch(/cannot send batch messages to http:\/\/127\.0\.0\.1:9/);
  });
});

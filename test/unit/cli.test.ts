import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { main } from "../../handlers/cli.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest } from "../../queue/manifest.js";
import type { ResultRecord, TopEntry } from "../../scoring/records.js";
import { LocalLocation } from "../../storage/location.js";
import { manifestBatch, testManifest } from "../helpers/manifests.js";

const REPO = resolve(import.meta.dirname, "../..");
const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/batches";
/** Nothing listens here: a command that got past its flags would fail to connect. */
const DEAD_QUEUE = "http://127.0.0.1:9/000000000000/work";

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** `main(argv)` in this process, with what it writes to stdout and stderr captured. */
async function run(argv: string[]): Promise<Ran> {
  let stdout = "";
  let stderr = "";
  const capture = (append: (text: string) => void) =>
    ((chunk: string | Uint8Array) => {
      append(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
      return true;
    }) as typeof process.stdout.write;
  vi.spyOn(process.stdout, "write").mockImplementation(capture((text) => (stdout += text)));
  vi.spyOn(process.stderr, "write").mockImplementation(capture((text) => (stderr += text)));
  const consoleError = vi.spyOn(console, "error").mockImplementation((line: string) => (stderr += `${line}\n`));
  const consoleLog = vi.spyOn(console, "log").mockImplementation((line: string) => (stdout += `${line}\n`));
  try {
    const code = await main(argv);
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
    void consoleError;
    void consoleLog;
  }
}

const savedSynsets = process.env.GOOGLENET_EVAL_SYNSETS;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "cli-test-"));
  delete process.env.GOOGLENET_EVAL_SYNSETS;
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

afterEach(() => {
  if (savedSynsets === undefined) delete process.env.GOOGLENET_EVAL_SYNSETS;
  else process.env.GOOGLENET_EVAL_SYNSETS = savedSynsets;
});

describe("googlenet-eval with no command, --help and --version", () => {
  it("prints the usage on stderr and exits 2 when no command is given", async () => {
    // Act
    const ran = await run([]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stdout).toBe("");
    expect(ran.stderr).toMatch(/^googlenet-eval: no command given\n\nusage: googlenet-eval <command> \[options\]\n/);
    expect(ran.stderr).toMatch(/\n {2}score {2}/);
    expect(ran.stderr.endsWith("\n")).toBe(true);
  });

  it.each([["--help"], ["-h"], ["help"]])("prints the usage on stdout and exits 0 for %s", async (flag) => {
    // Act
    const ran = await run([flag]);
    // Assess
    expect(ran.code).toBe(0);
    expect(ran.stderr).toBe("");
    expect(ran.stdout).toMatch(/^usage: googlenet-eval <command> \[options\]\n/);
  });

  it.each([["--version"], ["-v"]])("prints package.json's version for %s", async (flag) => {
    // Prepare
    const { version } = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as { version: string };
    // Act
    const ran = await run([flag]);
    // Assess
    expect(ran.code).toBe(0);
    expect(ran.stdout).toBe(`googlenet-eval ${version}\n`);
  });

  it("exits 2 with the list of commands for an unknown one", async () => {
    // Act
    const ran = await run(["scroe"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/^unknown command "scroe"; use one of: crops, score, plan, worker, aggregate, report\n/);
  });
});

describe("each command's --help", () => {
  it.each([
    ["score", ["--crops-per-call", "--tfjs-workers", "--threads", "--out", "<images>"], ["  --batch ", "  --workers "]],
    ["plan", ["--images-per-batch", "--out", "plan <images>"], ["  --batch-size ", "  --input "]],
    ["worker", ["--crops-per-call", "--threads", "--deadline", "--drop-input", "--drop-out", "--drop-max-pixels", "--require-gpu", "--device", "--on-stop"], ["  --finish-on-stop "]],
    ["aggregate", ["--out"], []],
    ["report", ["--out"], []],
  ])("%s lists the new spellings and not the old ones as options", async (command, present, absent) => {
    // Act
    const ran = await run([command, "--help"]);
    // Assess
    expect(ran.code).toBe(0);
    for (const flag of present) expect(ran.stdout).toContain(flag);
    for (const flag of absent) expect(ran.stdout).not.toContain(flag);
  });

  it.each(["score", "plan", "worker", "aggregate", "report"])("%s --help names a bad image's record as docs/faults.md does: an error record", async (command) => {
    // Act
    const ran = await run([command, "--help"]);
    // Assess
    expect(ran.stdout).not.toMatch(/fail(ed|ure) records?/i);
  });

  it("crops --help describes the geometry itself, pointing at no file an installed package lacks", async () => {
    // Act
    const ran = await run(["crops", "--help"]);
    // Assess
    expect(ran.code).toBe(0);
    expect(ran.stdout).not.toMatch(/PROTOCOL\.md|\.\.\/shared/);
    expect(ran.stdout).toMatch(/256, 288, 320, 352/);
    expect(ran.stdout).toMatch(/tl, tr, bl, br and center/);
    expect(ran.stdout).toMatch(/4 x 3 x 6 x 2 = 144/);
  });
});

/** Settings that get every command past its required flags, so only the flag under test is bad. */
const SCORE = ["score", REPO, "--model", "m.onnx"];
const PLAN = ["plan", "images", "--model", "m.onnx", "--queue", DEAD_QUEUE, "--out", "o"];
const WORKER = ["worker", "--queue", QUEUE];

describe("an invalid flag value is a usage error naming the flag and its range", () => {
  it.each([
    [SCORE, "--crops", "7", "--crops must be one of: 1, 10, 144"],
    [SCORE, "--crops-per-call", "0", "--crops-per-call must be a positive integer"],
    [SCORE, "--crops-per-call", "many", "--crops-per-call must be a positive integer"],
    [SCORE, "--threads", "0", "--threads must be a positive integer"],
    [SCORE, "--tfjs-workers", "0.5", "--tfjs-workers must be a positive integer"],
    [SCORE, "--tfjs-workers", "-1", "Option '--tfjs-workers' argument is ambiguous."],
    [SCORE, "--max-pixels", "1.5", "--max-pixels must be a positive integer"],
    [SCORE, "--max-pixels", "99999999999999999999", "--max-pixels must be a positive integer"],
    [SCORE, "--engine", "tfj", "--engine must be one of: tfjs, onnxruntime, auto"],
    [SCORE, "--backend", "gpu", "--backend must be one of: auto, tensorflow, wasm, cpu"],
    [SCORE, "--device", "tpu", "--device must be one of: cpu, cuda"],
    [PLAN, "--crops", "0", "--crops must be one of: 1, 10, 144"],
    [PLAN, "--images-per-batch", "0", "--images-per-batch must be a positive integer"],
    [PLAN, "--max-pixels", "0", "--max-pixels must be a positive integer"],
    [PLAN, "--preprocess", "caffe", "--preprocess must be one of: bvlc, torchvision"],
    [WORKER, "--crops", "12", "--crops / DEFAULT_CROPS must be one of: 1, 10, 144"],
    [WORKER, "--threads", "0", "--threads / THREADS must be a positive integer"],
    [WORKER, "--crops-per-call", "0", "--crops-per-call / CROPS_PER_CALL must be a positive integer"],
    [WORKER, "--deadline", "0", "--deadline / BATCH_DEADLINE_SECONDS must be a whole number of seconds from 1 to 43200"],
    [WORKER, "--deadline", "43201", "--deadline / BATCH_DEADLINE_SECONDS must be a whole number of seconds from 1 to 43200"],
    [WORKER, "--visibility-timeout", "1", "--visibility-timeout / VISIBILITY_TIMEOUT_SECONDS must be a whole number of seconds from 2 to 43200"],
    [WORKER, "--heartbeat", "0", "--heartbeat must be from 1 to the visibility timeout minus 1"],
    [WORKER, "--heartbeat", "soon", "--heartbeat must be from 1 to the visibility timeout minus 1"],
    [WORKER, "--stop-timeout", "0", "--stop-timeout / STOP_TIMEOUT_SECONDS must be a whole number of seconds from 1 to 43200"],
    [WORKER, "--wait", "21", "--wait must be a whole number of seconds from 0 to 20"],
    [WORKER, "--model-cache", "0", "--model-cache must be a positive integer"],
    [WORKER, "--on-stop", "later", "--on-stop must be one of: fit, finish, abandon"],
    [["crops"], "--size", "0x5", "--size must be WxH with positive integers, e.g. --size 500x375"],
    [["crops"], "--size", "1x99999999999999", "--size 1x99999999999999: invalid image size"],
  ])("%j %s %s", async (base, flag, value, message) => {
    // Act
    const ran = await run([...base, flag, value]);
    // Assess: one line, exit 2, no stack trace.
    expect(ran.code).toBe(2);
    expect(ran.stderr).toContain(message);
    expect(ran.stderr).toMatch(/^googlenet-eval \w+: [^\n]+\n$/);
    expect(ran.stderr).not.toMatch(/^\s+at /m);
  });

  it("refuses a heartbeat as long as the visibility timeout, giving the range that fits", async () => {
    // Act
    const ran = await run([...WORKER, "--visibility-timeout", "20", "--heartbeat", "20"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toBe("googlenet-eval worker: --heartbeat must be from 1 to the visibility timeout minus 1 (1 to 19 here)\n");
  });

  it("refuses an unknown flag, pointing at the command's --help", async () => {
    // Act
    const ran = await run([...SCORE, "--frobnicate"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/^googlenet-eval score: Unknown option '--frobnicate'.*; see googlenet-eval score --help\n$/);
  });
});

describe("old spellings, accepted for one release with one warning line each", () => {
  it.each([
    [["--batch", "0"], "--batch", "--crops-per-call", "--crops-per-call must be a positive integer"],
    [["--workers", "0"], "--workers", "--tfjs-workers", "--tfjs-workers must be a positive integer"],
  ])("score %j counts as %s's new name %s", async (flags, old, now, message) => {
    // Act
    const ran = await run([...SCORE, ...flags]);
    // Assess: the old value reached the new flag's check, after the warning.
    expect(ran.code).toBe(2);
    const lines = ran.stderr.split("\n");
    expect(lines[0]).toBe(`googlenet-eval score: ${old} is deprecated and goes in 0.2.0; use ${now}`);
    expect(lines[1]).toBe(`googlenet-eval score: ${message}`);
    expect(lines).toHaveLength(3);
  });

  it("refuses an old and a new spelling of one setting together", async () => {
    // Act
    const ran = await run([...SCORE, "--batch", "4", "--crops-per-call", "8"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toBe("googlenet-eval score: --batch and --crops-per-call are the same setting; give only --crops-per-call\n");
  });

  it("worker takes --finish-on-stop as --on-stop finish, with one warning line", async () => {
    // Act: the bad heartbeat stops the worker after its flags are read, before any queue call.
    const ran = await run([...WORKER, "--finish-on-stop", "--heartbeat", "0"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr.split("\n")).toEqual([
      "googlenet-eval worker: --finish-on-stop is deprecated and goes in 0.2.0; use --on-stop finish",
      "googlenet-eval worker: --heartbeat must be from 1 to the visibility timeout minus 1",
      "",
    ]);
  });

  it("worker refuses --finish-on-stop together with --on-stop", async () => {
    // Act
    const ran = await run([...WORKER, "--finish-on-stop", "--on-stop", "abandon"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toBe("googlenet-eval worker: --finish-on-stop and --on-stop are the same setting; give only --on-stop\n");
  });

  it("plan takes --input and --batch-size, warning once for each", async () => {
    // Act
    const ran = await run(["plan", "--input", "images", "--batch-size", "0", "--model", "m.onnx", "--queue", DEAD_QUEUE, "--out", "o"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr.split("\n")).toEqual([
      "googlenet-eval plan: --batch-size is deprecated and goes in 0.2.0; use --images-per-batch",
      "googlenet-eval plan: --input DIR is deprecated and goes in 0.2.0; use the images as the first argument: googlenet-eval plan DIR ...",
      "googlenet-eval plan: --images-per-batch must be a positive integer",
      "",
    ]);
  });

  it("plan refuses the images given both ways", async () => {
    // Act
    const ran = await run([...PLAN, "--input", "images"]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toBe("googlenet-eval plan: give the images once: as the first argument, without --input\n");
  });

  it("report takes the run folder as its argument, with a warning, and --out without", async () => {
    // Prepare: a folder with no run in it, so report stops after reading its flags.
    const empty = join(work, "no-run");
    // Act
    const [old, now, none] = [await run(["report", empty]), await run(["report", "--out", empty]), await run(["report"])];
    // Assess
    expect(old.code).toBe(1);
    expect(old.stderr.split("\n")[0]).toBe("googlenet-eval report: the run folder as an argument is deprecated and goes in 0.2.0; use --out DIR");
    expect(now.code).toBe(1);
    expect(now.stderr).not.toMatch(/deprecated/);
    expect(now.stderr).toMatch(/^error: no summary\.json and results\.jsonl in .*no-run/);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^report takes one run folder, got 0: give --out DIR\|s3:\/\/bucket\/prefix\n/);
  });
});

describe("aggregate's closing line", () => {
  it("counts a bad image's record as an error record, the docs' word for it", async () => {
    // Prepare: a run folder of one batch, two scored records and one error record, as workers write it.
    const dir = join(work, "aggregated");
    const top5: TopEntry[] = [1, 2, 3, 4, 5].map((c, i) => [c, 0.5 / (i + 1), `class ${c}`]);
    const records: ResultRecord[] = [
      { key: "a.jpg", label: 1, width: 500, height: 375, top5: { "1": top5, "10": top5 } },
      { key: "b.jpg", label: 2, width: 500, height: 375, top5: { "1": top5, "10": top5 } },
      { key: "bad.jpg", error: "bad.jpg: not a JPEG, PNG or WebP file" },
    ];
    const manifest = testManifest({ out: dir, batches: [manifestBatch("b00000", records)] });
    const folder = new LocalLocation(dir);
    await folder.write(MANIFEST_KEY, serializeManifest(manifest));
    await folder.write(batchResultKeyFor(digestOfManifest(manifest), "b00000"), records.map((record) => `${JSON.stringify(record)}\n`).join(""));
    // Act
    const ran = await run(["aggregate", "--out", dir]);
    // Assess
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toMatch(/: 3 images, 2 scored, 1 error records, 2 labelled, 1 batches; /);
  });
});

describe("class names", () => {
  it("names the synsets override that does not exist, with the way back to the built-in list", async () => {
    // Act
    const ran = await run([...SCORE, "--synsets", join(work, "nope.txt")]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/--synsets .*nope\.txt: no such file \(leave it out for the built-in ImageNet classes\)\n$/);
  });

  it("names the environment variable when it is what points nowhere", async () => {
    // Prepare
    process.env.GOOGLENET_EVAL_SYNSETS = join(work, "gone.txt");
    // Act
    const ran = await run([...WORKER]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/^googlenet-eval worker: GOOGLENET_EVAL_SYNSETS=.*gone\.txt: no such file/);
  });
});

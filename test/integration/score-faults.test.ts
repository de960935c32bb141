import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord, Summary } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { nanBiasModel } from "../helpers/onnx-rewrite.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");
const SAMPLES = join(SHARED, "imagenet/samples");
const BVLC = join(SHARED, "models/bvlc-googlenet.onnx");
const TORCHVISION = join(SHARED, "models/torchvision-googlenet-untrained.onnx");
const SYNSETS = join(SHARED, "imagenet/synset_words.txt");

/** Real photos, in the order a listing gives them. */
const PHOTOS = [
  "n01440764_tench.JPEG",
  "n01443537_goldfish.JPEG",
  "n01494475_hammerhead.JPEG",
  "n01518878_ostrich.JPEG",
  "n01855672_goose.JPEG",
] as const;

interface Run {
  code: number | string;
  out: string;
}

/** The CLI as its own process, as a user runs it; stdout and stderr together. */
async function runCli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const cli = spawnCli(args, env);
  const code = await cli.exited;
  return { code, out: [...cli.lines, ...cli.stderr].join("\n") };
}

function parseResults(text: string): ResultRecord[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ResultRecord);
}

async function sha256Of(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

let work: string;
let images: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "score-faults-"));
  images = join(work, "images");
  await mkdir(images);
  for (const file of PHOTOS) await copyFile(join(SAMPLES, file), join(images, file));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const localArgs = (out: string, model: string, ...extra: string[]): string[] => [
  "score",
  images,
  "--model",
  model,
  "--engine",
  "onnxruntime",
  "--crops",
  "1",
  "--synsets",
  SYNSETS,
  "--out",
  out,
  ...extra,
];

describe("score: a resume must have the settings of the run it resumes", () => {
  let out: string;
  let partial: string;

  beforeAll(async () => {
    // Prepare: a finished run, cut back to what a run killed after two images leaves behind:
    // two lines of results.jsonl and its run header, no summary.json yet.
    out = join(work, "resume");
    const first = await runCli(localArgs(out, BVLC));
    expect(first.code, first.out).toBe(0);
    const lines = (await readFile(join(out, "results.jsonl"), "utf8")).split("\n");
    partial = `${lines.slice(0, 2).join("\n")}\n`;
    await writeFile(join(out, "results.jsonl"), partial);
    for (const file of ["summary.json", "run.json", "report.html"]) await unlink(join(out, file));
  }, 300_000);

  it("refuses another model before scoring, naming models[0].sha256 before and now, and changes no file", async () => {
    // Prepare
    const [bvlcSha, torchvisionSha] = [await sha256Of(BVLC), await sha256Of(TORCHVISION)];
    const header = await readFile(join(out, "run-header.json"), "utf8");

    // Act
    const run = await runCli(localArgs(out, TORCHVISION));

    // Assess
    expect(run.code).toBe(2);
    expect(run.out).toContain(
      `googlenet-eval score: ${out} already holds a run with models[0].sha256 ${bvlcSha} (bvlc-googlenet.onnx); ` +
        `this run has models[0].sha256 ${torchvisionSha} (torchvision-googlenet-untrained.onnx): ` +
        `use another output folder, or delete ${out} to start again (on the command line: --out)`,
    );
    expect(await readFile(join(out, "results.jsonl"), "utf8")).toBe(partial);
    expect(await readFile(join(out, "run-header.json"), "utf8")).toBe(header);
    expect((await readdir(out)).sort()).toEqual(["results.jsonl", "run-header.json"]);
  });

  it("refuses other --crops, naming crops before and now, and changes no file", async () => {
    // Act
    const run = await runCli(localArgs(out, BVLC, "--crops", "10"));

    // Assess
    expect(run.code).toBe(2);
    expect(run.out).toContain(`${out} already holds a run with crops 1; this run has crops 10:`);
    expect(await readFile(join(out, "results.jsonl"), "utf8")).toBe(partial);
    expect((await readdir(out)).sort()).toEqual(["results.jsonl", "run-header.json"]);
  });

  it("resumes with the same settings, scoring only the images not yet there", async () => {
    // Act
    const run = await runCli(localArgs(out, BVLC));

    // Assess
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/resuming: 2 of 5 images already in/);
    const records = parseResults(await readFile(join(out, "results.jsonl"), "utf8"));
    expect(records.map((record) => record.key)).toEqual([...PHOTOS]);
    expect(records.every((record) => "top5" in record)).toBe(true);
  });

  it("resumes a run from before run headers with a warning, and writes its header", async () => {
    // Prepare: the same partial run without its header.
    const old = join(work, "headerless");
    await mkdir(old);
    await writeFile(join(old, "results.jsonl"), partial);

    // Act
    const run = await runCli(localArgs(old, BVLC));

    // Assess
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain(`warning: ${old} has results but no run-header.json`);
    expect(run.out).toMatch(/resuming: 2 of 5 images already in/);
    const header = JSON.parse(await readFile(join(old, "run-header.json"), "utf8")) as { models: { sha256: string }[]; crops: number };
    expect(header.models.map((model) => model.sha256)).toEqual([await sha256Of(BVLC)]);
    expect(header.crops).toBe(1);
  });
});

describe("score: a model whose outputs are not finite", () => {
  it("exits non-zero naming the model file, and writes no result from it", async () => {
    // Prepare
    const model = join(work, "bvlc-nan-bias.onnx");
    await writeFile(model, nanBiasModel(await readFile(BVLC)));
    const out = join(work, "nan");

    // Act
    const run = await runCli(localArgs(out, model));
    const records = parseResults(await readFile(join(out, "results.jsonl"), "utf8").catch(() => ""));
    const files = (await readdir(out)).sort();
    const again = await runCli(localArgs(out, BVLC));

    // Assess
    expect(run.code).toBe(1);
    expect(run.out).toContain(`googlenet-eval score: ModelOutputError: model ${model} (sha256 ${await sha256Of(model)}) gave NaN`);
    expect(records).toEqual([]);
    expect(files).toEqual(["results.jsonl", "run-header.json"]);
    // No result came from it, so the good model may take the folder over.
    expect(again.code, again.out).toBe(0);
    expect(parseResults(await readFile(join(out, "results.jsonl"), "utf8"))).toHaveLength(PHOTOS.length);
  });
});

describe("score --device cuda on a host without CUDA", () => {
  it("falls back to the CPU saying why, and with --require-gpu exits 1 naming the model", async () => {
    // Act
    const fallback = await runCli([...localArgs(join(work, "cuda-fallback"), BVLC), "--device", "cuda"]);
    const required = await runCli([...localArgs(join(work, "cuda-required"), BVLC), "--device", "cuda", "--require-gpu"]);

    // Assess: this machine has no CUDA add-on for onnxruntime-node (.npmrc skips its download).
    expect(fallback.code, fallback.out).toBe(0);
    expect(fallback.out).toContain(`googlenet-eval: ${BVLC}: onnxruntime's CUDA execution provider could not start`);
    expect(fallback.out).toMatch(/falling back to the CPU/);
    expect(required.code).toBe(1);
    expect(required.out).toMatch(
      new RegExp(`googlenet-eval score: BackendUnavailableError: ${BVLC.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: onnxruntime's CUDA execution provider could not start .*the GPU is required`),
    );
    expect(await readFile(join(work, "cuda-required", "results.jsonl"), "utf8").catch(() => "")).toBe("");
  });
});

describe("score: an input over the byte cap", () => {
  it("is its error record with a fixed reason (--max-input-bytes, or its variable), and a bad cap is refused naming it", async () => {
    // Prepare: a 30 MiB file named .jpg beside a real photo.
    const folder = join(work, "with-huge");
    await mkdir(folder);
    await copyFile(join(SAMPLES, PHOTOS[0]), join(folder, PHOTOS[0]));
    await writeFile(join(folder, "huge.jpg"), Buffer.alloc(30 * 1024 * 1024, 0xff));
    const args = (out: string, ...extra: string[]) => localArgs(join(work, out), BVLC, ...extra).map((arg) => (arg === images ? folder : arg));

    // Act
    const byFlag = await runCli(args("huge-flag", "--max-input-bytes", "1048576"));
    const byEnv = await runCli(args("huge-env"), { GOOGLENET_EVAL_MAX_INPUT_BYTES: "1048576" });
    const bad = await runCli(args("huge-bad"), { GOOGLENET_EVAL_MAX_INPUT_BYTES: "lots" });

    // Assess
    for (const [run, out] of [[byFlag, "huge-flag"], [byEnv, "huge-env"]] as const) {
      expect(run.code, run.out).toBe(0);
      const records = parseResults(await readFile(join(work, out, "results.jsonl"), "utf8"));
      expect(records.find((record) => record.key === "huge.jpg")).toEqual({ key: "huge.jpg", error: "huge.jpg: larger than the input limit of 1048576 bytes" });
      expect(records.some((record) => record.key === PHOTOS[0] && "top5" in record)).toBe(true);
    }
    expect(bad.code).toBe(2);
    expect(bad.out).toContain("GOOGLENET_EVAL_MAX_INPUT_BYTES");
  });
});

describe("score: a local read that fails for another reason than a missing file", () => {
  it("stops naming the key and the cause, with no record for it", async () => {
    // Prepare: a symbolic link to itself is listed like an image, and reading it fails with ELOOP.
    const folder = join(work, "with-loop");
    await mkdir(folder);
    for (const file of PHOTOS.slice(0, 2)) await copyFile(join(SAMPLES, file), join(folder, file));
    await symlink("zz-loop.jpg", join(folder, "zz-loop.jpg"));
    const out = join(work, "loop-out");

    // Act
    const run = await runCli(localArgs(out, BVLC).map((arg) => (arg === images ? folder : arg)));

    // Assess
    expect(run.code).toBe(1);
    expect(run.out).toMatch(/googlenet-eval score: StorageError: scoring stopped: cannot read image zz-loop\.jpg: .*ELOOP/);
    expect(run.out).toContain(`run the same command again to resume`);
    const records = parseResults(await readFile(join(out, "results.jsonl"), "utf8"));
    expect(records.some((record) => record.key === "zz-loop.jpg")).toBe(false);
  });
});

describe("score s3://…: a storage fault stops the run, and the run resumes once it clears", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let env: Record<string, string>;
  const DENIED = "photos/n01855672_goose.JPEG";

  beforeAll(async () => {
    // Prepare: images, model and synsets in the bucket; every request of the CLI goes
    // through the fault proxy.
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    const bucket = new S3Location("s3://data", emulator.s3);
    for (const file of PHOTOS) await bucket.write(`validation/photos/${file}`, await readFile(join(SAMPLES, file)));
    await bucket.write("models/bvlc-googlenet.onnx", await readFile(BVLC));
    await bucket.write("models/synset_words.txt", await readFile(SYNSETS));
    proxy = await startFaultProxy(emulator.endpoint);
    env = { ...emulator.env, AWS_ENDPOINT_URL: proxy.url };
  });

  afterAll(async () => {
    await proxy?.close();
    await emulator?.stop();
  });

  const s3Args = (out: string): string[] => [
    "score",
    "s3://data/validation/",
    "--model",
    "s3://data/models/bvlc-googlenet.onnx",
    "--engine",
    "onnxruntime",
    "--crops",
    "1",
    // One crop per engine call, so a resumed run's calls hold the same crops as a clean run's.
    "--batch",
    "1",
    "--out",
    out,
  ];

  const resultsAt = async (prefix: string): Promise<ResultRecord[]> =>
    parseResults((await new S3Location(`s3://data/${prefix}`, emulator.s3).read("results.jsonl")).toString("utf8"));

  it("exits 1 naming bucket and key when the input bucket is deleted mid-run, with no record for the image", async () => {
    // Prepare: photos in a bucket of their own; the first read of one stalls (2 s request
    // timeout) while the bucket is deleted, so the SDK's retry meets NoSuchBucket.
    const sdk = await import("@aws-sdk/client-s3");
    emulator.server.createBucket("photos19");
    const photos = PHOTOS.slice(0, 2);
    for (const file of photos) await new S3Location("s3://photos19", emulator.s3).write(`in/${file}`, await readFile(join(SAMPLES, file)));
    const stalled = proxy.addRule({ method: "GET", path: `/photos19/in/${photos[0]}`, fault: "stall", times: 1 });
    const out = join(work, "bucket-gone-out");
    const args = s3Args(out).map((arg) => (arg === "s3://data/validation/" ? "s3://photos19/in/" : arg));

    // Act
    const cli = spawnCli(args, { ...env, GOOGLENET_EVAL_REQUEST_TIMEOUT_SECONDS: "2" });
    while (stalled.hits === 0 && cli.child.exitCode === null) await new Promise((done) => setTimeout(done, 50));
    for (const file of photos) await emulator.s3.send(new sdk.DeleteObjectCommand({ Bucket: "photos19", Key: `in/${file}` }));
    await emulator.s3.send(new sdk.DeleteBucketCommand({ Bucket: "photos19" }));
    const code = await cli.exited;
    const text = [...cli.lines, ...cli.stderr].join("\n");
    stalled.remove();
    console.log(`fault: input bucket deleted mid-run -> exit ${code}: ${text.split("\n").filter((l) => /StorageError|error/.test(l)).join(" | ")}`);

    // Assess
    expect(stalled.hits).toBe(1);
    expect(code, text).toBe(1);
    expect(text).toMatch(/StorageError: scoring stopped: cannot read image .*s3:\/\/photos19\/in\/n01440764_tench\.JPEG: .*(NoSuchBucket|bucket)/i);
    const written = await readFile(join(out, "results.jsonl"), "utf8").catch(() => "");
    expect(parseResults(written).some((record) => record.key === photos[0])).toBe(false);
  });

  it("exits non-zero on a 403 naming the key, keeps no record for it, then resumes to the clean run's results", async () => {
    // Prepare
    const rule = proxy.addRule({ method: "GET", path: `/data/validation/${DENIED}`, fault: "403" });

    // Act
    const stopped = await runCli(s3Args("s3://data/runs/faulty"), env);
    const atStop = await resultsAt("runs/faulty");
    rule.remove();
    const resumed = await runCli(s3Args("s3://data/runs/faulty"), env);
    const clean = await runCli(s3Args("s3://data/runs/clean"), env);

    // Assess: the stop
    expect(rule.hits).toBe(1);
    expect(stopped.code).toBe(1);
    expect(stopped.out).toContain(`googlenet-eval score: StorageError: scoring stopped: cannot read image ${DENIED}: `);
    expect(stopped.out).toMatch(/403/);
    expect(stopped.out).toMatch(/AccessDenied/);
    expect(stopped.out).toContain("run the same command again to resume");
    expect(atStop.length).toBeGreaterThan(0);
    expect(atStop.some((record) => record.key === DENIED)).toBe(false);
    expect(atStop.every((record) => "top5" in record)).toBe(true);

    // Assess: the resume
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.out).toContain(`resuming: ${atStop.length} of ${PHOTOS.length} images already in s3://data/runs/faulty`);
    expect(clean.code, clean.out).toBe(0);
    const [done, reference] = [await resultsAt("runs/faulty"), await resultsAt("runs/clean")];
    expect(done.map((record) => record.key)).toEqual(PHOTOS.map((file) => `photos/${file}`));
    expect(done).toEqual(reference);
    const summaryOf = async (prefix: string): Promise<Summary> =>
      JSON.parse((await new S3Location(`s3://data/${prefix}`, emulator.s3).read("summary.json")).toString("utf8")) as Summary;
    expect((await summaryOf("runs/faulty")).failed).toBe(0);
  });
});

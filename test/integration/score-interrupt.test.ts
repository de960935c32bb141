import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import onnxProto from "onnx-proto";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli, type CliProcess } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy } from "../helpers/fault-proxy.js";
import { decodeModel, encodeModel } from "../helpers/onnx-rewrite.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");
const SAMPLES = join(SHARED, "imagenet/samples");
const BVLC = join(SHARED, "models/bvlc-googlenet.onnx");
const SYNSETS = join(SHARED, "imagenet/synset_words.txt");

/**
 * Twelve real photos. At 10 crops an image takes about half a second here, so once two records
 * are written the run still has seconds to go when the signal comes.
 */
const PHOTOS = [
  "n01440764_tench.JPEG",
  "n01443537_goldfish.JPEG",
  "n01484850_great_white_shark.JPEG",
  "n01491361_tiger_shark.JPEG",
  "n01494475_hammerhead.JPEG",
  "n01496331_electric_ray.JPEG",
  "n01498041_stingray.JPEG",
  "n01514668_cock.JPEG",
  "n01514859_hen.JPEG",
  "n01518878_ostrich.JPEG",
  "n01530575_brambling.JPEG",
  "n01531178_goldfinch.JPEG",
] as const;

/** The shell's codes for a process ended by SIGTERM and SIGINT (128 + 15, 128 + 2). */
const EXIT_SIGTERM = 143;
const EXIT_SIGINT = 130;

interface Run {
  code: number | string;
  out: string;
}

async function finished(cli: CliProcess): Promise<Run> {
  const code = await cli.exited;
  return { code, out: [...cli.lines, ...cli.stderr].join("\n") };
}

/**
 * Every line of a results.jsonl, parsed; a line that is not a whole record, or text after the
 * last newline, fails the test.
 */
function wholeRecords(text: string): ResultRecord[] {
  expect(text === "" || text.endsWith("\n"), `results.jsonl ends mid-line: ${JSON.stringify(text.slice(-80))}`).toBe(true);
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ResultRecord);
}

/** Waits until `read` gives a text of at least `count` lines while `cli` still runs; returns that count. */
async function waitForLines(cli: CliProcess, read: () => Promise<string>, count: number): Promise<number> {
  let running = true;
  void cli.exited.then(() => {
    running = false;
  });
  const deadline = Date.now() + 180_000;
  for (;;) {
    const lines = (await read().catch(() => "")).split("\n").filter((line) => line !== "").length;
    if (lines >= count) return lines;
    if (!running) throw new Error(`the run ended before ${count} records were written:\n${cli.stderr.join("")}`);
    if (Date.now() > deadline) throw new Error(`no ${count} records within 180 s:\n${cli.stderr.join("")}`);
    await new Promise((wake) => setTimeout(wake, 25));
  }
}

/**
 * The real BVLC file with `+ 0 * sqrt(mean(input) + 80)` added to its probabilities: the same
 * outputs for a photo, NaN for a crop whose mean after BVLC's mean subtraction is below -80
 * (a black image: about -115). A model that breaks on one image, after good results for others.
 */
function nanOnDarkModel(bytes: Uint8Array): Uint8Array {
  const { onnx } = onnxProto;
  const model = decodeModel(bytes);
  const graph = model.graph;
  const softmax = graph?.node?.find((node) => node.opType === "Softmax");
  if (!graph?.node || !graph.initializer || !softmax?.output?.[0] || !graph.input?.[0]?.name) throw new Error("not the BVLC graph");
  const [output, input] = [softmax.output[0], graph.input[0].name];
  softmax.output = ["probabilities_before"];
  const scalar = (name: string, value: number): onnxProto.onnx.ITensorProto =>
    onnx.TensorProto.create({ name, dataType: 1, dims: [1], rawData: new Uint8Array(new Float32Array([value]).buffer) });
  graph.initializer.push(scalar("dark_offset", 80), scalar("dark_zero", 0));
  const node = (opType: string, inputs: string[], out: string, attribute: onnxProto.onnx.IAttributeProto[] = []): onnxProto.onnx.INodeProto =>
    onnx.NodeProto.create({ opType, input: inputs, output: [out], attribute });
  const { INTS, INT } = onnx.AttributeProto.AttributeType;
  graph.node.push(
    node("ReduceMean", [input], "dark_mean", [
      onnx.AttributeProto.create({ name: "axes", type: INTS, ints: [1, 2, 3] }),
      onnx.AttributeProto.create({ name: "keepdims", type: INT, i: 1 }),
    ]),
    node("Flatten", ["dark_mean"], "dark_column"),
    node("Add", ["dark_column", "dark_offset"], "dark_shifted"),
    node("Sqrt", ["dark_shifted"], "dark_root"),
    node("Mul", ["dark_root", "dark_zero"], "dark_nan"),
    node("Add", ["probabilities_before", "dark_nan"], output),
  );
  return encodeModel(model);
}

let work: string;
let images: string;
/** results.jsonl of a run never stopped: what a stopped and resumed run must end with. */
let reference: ResultRecord[];

const scoreArgs = (input: string, out: string, ...extra: string[]): string[] => [
  "score",
  input,
  "--model",
  BVLC,
  "--engine",
  "onnxruntime",
  "--crops",
  "10",
  // One image per engine call, so a resumed run's calls hold the same crops as a clean run's.
  "--crops-per-call",
  "10",
  "--synsets",
  SYNSETS,
  "--out",
  out,
  ...extra,
];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "score-interrupt-"));
  images = join(work, "images");
  await mkdir(images);
  for (const file of PHOTOS) await copyFile(join(SAMPLES, file), join(images, file));
  const clean = await finished(spawnCli(scoreArgs(images, join(work, "clean")), {}));
  expect(clean.code, clean.out).toBe(0);
  reference = wholeRecords(await readFile(join(work, "clean", "results.jsonl"), "utf8"));
  expect(reference.map((record) => record.key)).toEqual([...PHOTOS]);
}, 300_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("score --out DIR stopped by a signal", () => {
  it("exits 143 on SIGTERM and 130 on SIGINT with whole lines in results.jsonl, and resumes each time", async () => {
    // Prepare
    const out = join(work, "local");
    const results = (): Promise<string> => readFile(join(out, "results.jsonl"), "utf8");

    // Act: SIGTERM once two records are written, SIGINT into the resume once two more are,
    // then a resume to the end.
    const first = spawnCli(scoreArgs(images, out), {});
    await waitForLines(first, results, 2);
    process.kill(first.pid, "SIGTERM");
    const termAt = Date.now();
    const stopped = await finished(first);
    const termSeconds = (Date.now() - termAt) / 1000;
    const afterTerm = wholeRecords(await results());
    const filesAfterTerm = (await readdir(out)).sort();
    const second = spawnCli(scoreArgs(images, out), {});
    await waitForLines(second, results, afterTerm.length + 2);
    process.kill(second.pid, "SIGINT");
    const interrupted = await finished(second);
    const afterInt = wholeRecords(await results());
    const last = await finished(spawnCli(scoreArgs(images, out), {}));
    console.log(
      `local: SIGTERM -> exit ${stopped.code} in ${termSeconds.toFixed(1)} s with ${afterTerm.length} records; ` +
        `SIGINT -> exit ${interrupted.code} with ${afterInt.length}; last run exit ${last.code}`,
    );

    // Assess: each stop keeps whole records only, and says how to resume.
    expect(stopped.code, stopped.out).toBe(EXIT_SIGTERM);
    expect(stopped.out).toContain(
      `googlenet-eval score: scoring stopped by SIGTERM: the image(s) in flight were dropped; the ${afterTerm.length} image(s) done ` +
        `are kept in ${out}: run the same command again to resume`,
    );
    expect(afterTerm.length).toBeGreaterThanOrEqual(2);
    expect(afterTerm.length).toBeLessThan(PHOTOS.length);
    expect(afterTerm).toEqual(reference.slice(0, afterTerm.length));
    expect(filesAfterTerm).toEqual(["results.jsonl", "run-header.json"]);
    expect(interrupted.code, interrupted.out).toBe(EXIT_SIGINT);
    expect(interrupted.out).toContain(`resuming: ${afterTerm.length} of ${PHOTOS.length} images already in ${out}`);
    expect(interrupted.out).toContain(`scoring stopped by SIGINT: the image(s) in flight were dropped; the ${afterInt.length} image(s) done`);
    expect(afterInt.length).toBeLessThan(PHOTOS.length);
    expect(afterInt).toEqual(reference.slice(0, afterInt.length));

    // Assess: the last run scores only the rest, to the clean run's results.
    expect(last.code, last.out).toBe(0);
    expect(last.out).toContain(`resuming: ${afterInt.length} of ${PHOTOS.length} images already in ${out}`);
    expect(wholeRecords(await results())).toEqual(reference);
  }, 300_000);
});

describe("score --out s3://… stopped by SIGTERM or a broken model", () => {
  let emulator: Emulator;
  let env: Record<string, string>;
  let staging: string;

  beforeAll(async () => {
    // Prepare: the photos in the bucket; the CLI's temp dir (its staging folders) is the test's.
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    const bucket = new S3Location("s3://data", emulator.s3);
    for (const file of PHOTOS) await bucket.write(`validation/${file}`, await readFile(join(SAMPLES, file)));
    const temp = join(work, "tmp");
    await mkdir(temp);
    staging = join(temp, "googlenet-eval-staging");
    env = { ...emulator.env, TMPDIR: temp };
  });

  afterAll(async () => {
    await emulator?.stop();
  });

  const bucketText = async (prefix: string): Promise<string | undefined> =>
    (await new S3Location(`s3://data/${prefix}`, emulator.s3).readIfExists("results.jsonl"))?.toString("utf8");

  /** The staged results.jsonl of the one run staging now. */
  const stagedText = async (): Promise<string> => {
    const [folder] = await readdir(staging);
    if (folder === undefined) return "";
    return readFile(join(staging, folder, "results.jsonl"), "utf8");
  };

  it("uploads the staged results on SIGTERM, exits 143, and the same command resumes from them", async () => {
    // Prepare
    const out = "s3://data/runs/stopped";

    // Act
    const first = spawnCli(scoreArgs("s3://data/validation/", out), env);
    const stagedAtSignal = await waitForLines(first, stagedText, 2);
    process.kill(first.pid, "SIGTERM");
    const termAt = Date.now();
    const stopped = await finished(first);
    const termSeconds = (Date.now() - termAt) / 1000;
    const uploaded = await bucketText("runs/stopped");
    const stagingLeft = await readdir(staging);
    const resumed = await finished(spawnCli(scoreArgs("s3://data/validation/", out), env));
    console.log(
      `s3: ${stagedAtSignal} records staged at SIGTERM -> exit ${stopped.code} in ${termSeconds.toFixed(1)} s, ` +
        `${uploaded === undefined ? "no results.jsonl" : `${wholeRecords(uploaded).length} records`} in the bucket; resume exit ${resumed.code}`,
    );

    // Assess: the stop
    expect(stopped.code, stopped.out).toBe(EXIT_SIGTERM);
    expect(uploaded, "no results.jsonl in the bucket after SIGTERM").toBeDefined();
    const kept = wholeRecords(uploaded ?? "");
    expect(kept.length).toBeGreaterThanOrEqual(stagedAtSignal);
    expect(kept.length).toBeLessThan(PHOTOS.length);
    expect(kept).toEqual(reference.slice(0, kept.length));
    expect(stopped.out).toContain(
      `scoring stopped by SIGTERM: the image(s) in flight were dropped; the ${kept.length} image(s) done are kept in ${out}: ` +
        `run the same command again to resume`,
    );
    expect(stagingLeft).toEqual([]);

    // Assess: the resume re-scores only the rest
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.out).toContain(`resuming: ${kept.length} of ${PHOTOS.length} images already in ${out}`);
    expect(resumed.out).toContain(`scoring ${PHOTOS.length - kept.length} images`);
    expect(wholeRecords((await bucketText("runs/stopped")) ?? "")).toEqual(reference);
  }, 300_000);

  it("on SIGTERM during a stalled read drops the images in flight, uploads the results before them and exits 143 at once", async () => {
    // Prepare: the fourth photo's GET never answers (the SDK would wait 60 s, then retry).
    const proxy = await startFaultProxy(emulator.endpoint);
    const stalled = proxy.addRule({ method: "GET", path: `/data/validation/${PHOTOS[3]}`, fault: "stall" });
    const out = "s3://data/runs/stalled";

    // Act: records come in listing order, so the fourth photo's and the ones after never are.
    let stopped: Run;
    let termSeconds: number;
    try {
      const first = spawnCli(scoreArgs("s3://data/validation/", out), { ...env, AWS_ENDPOINT_URL: proxy.url });
      await waitForLines(first, stagedText, 2);
      process.kill(first.pid, "SIGTERM");
      const termAt = Date.now();
      stopped = await finished(first);
      termSeconds = (Date.now() - termAt) / 1000;
    } finally {
      await proxy.close();
    }
    const kept = wholeRecords((await bucketText("runs/stalled")) ?? "");
    console.log(`stalled read: SIGTERM -> exit ${stopped.code} in ${termSeconds.toFixed(1)} s, ${kept.length} records in the bucket`);

    // Assess
    expect(stalled.hits).toBeGreaterThanOrEqual(1);
    expect(stopped.code, stopped.out).toBe(EXIT_SIGTERM);
    expect(termSeconds).toBeLessThan(15);
    expect(kept.length).toBeGreaterThanOrEqual(2);
    expect(kept.length).toBeLessThanOrEqual(3);
    expect(kept).toEqual(reference.slice(0, kept.length));
    expect(stopped.out).toContain(`the ${kept.length} image(s) done are kept in ${out}: run the same command again to resume`);
  }, 300_000);

  it("uploads the results made before a model's first non-finite output, and exits 1 naming the model", async () => {
    // Prepare: three photos, then a black image the model answers with NaN.
    const bucket = new S3Location("s3://data", emulator.s3);
    const names = PHOTOS.slice(0, 3);
    for (const file of names) await bucket.write(`dark/${file}`, await readFile(join(SAMPLES, file)));
    const black = await sharp({ create: { width: 300, height: 200, channels: 3, background: { r: 0, g: 0, b: 0 } } }).jpeg().toBuffer();
    await bucket.write("dark/zz_black.jpg", black);
    const model = join(work, "bvlc-nan-on-dark.onnx");
    await writeFile(model, nanOnDarkModel(await readFile(BVLC)));
    const args = scoreArgs("s3://data/dark/", "s3://data/runs/broken", "--preprocess", "bvlc").map((arg) => (arg === BVLC ? model : arg));

    // Act
    const run = await finished(spawnCli(args, env));
    const uploaded = await bucketText("runs/broken");
    console.log(`broken model: exit ${run.code}, ${uploaded === undefined ? "no results.jsonl" : `${wholeRecords(uploaded).length} records`} in the bucket`);

    // Assess
    expect(run.code, run.out).toBe(1);
    expect(run.out).toMatch(/googlenet-eval score: ModelOutputError: model .*bvlc-nan-on-dark\.onnx .* gave NaN .* on a crop of zz_black\.jpg/);
    expect(run.out).toContain("scoring stopped by the error below; the 3 image(s) done before it are kept in s3://data/runs/broken");
    expect(uploaded, "no results.jsonl in the bucket after the model failed").toBeDefined();
    const kept = wholeRecords(uploaded ?? "");
    expect(kept.map((record) => record.key)).toEqual([...names]);
    expect(kept.every((record) => "top5" in record)).toBe(true);
  }, 300_000);
});

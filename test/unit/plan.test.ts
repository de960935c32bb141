import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigurationError, ModelFormatError } from "../../model/errors.js";
import { readSynsets, type Synsets } from "../../model/synsets.js";
import { planCommand } from "../../handlers/plan-command.js";
import { describeModelFlavour, planRun, type PlanOptions } from "../../queue/plan.js";
import { tinyClassifierModel } from "../helpers/onnx-rewrite.js";

const BVLC = "../shared/models/bvlc-googlenet.onnx";
const SYNSETS = "../shared/imagenet/synset_words.txt";
/** Nothing listens here: a plan that got as far as sending would fail with "cannot send". */
const DEAD_QUEUE = "http://127.0.0.1:9/000000000000/work";

describe("describeModelFlavour", () => {
  const bvlc = new Uint8Array(readFileSync(BVLC));
  const tiny = tinyClassifierModel();

  it.each([
    ["a recognised graph", bvlc, "auto", undefined, "bvlc"],
    ["a recognised graph with the matching --preprocess", bvlc, "tfjs", "bvlc", "bvlc"],
    ["an unrecognised graph with --preprocess, engine auto", tiny, "auto", "torchvision", "torchvision"],
    ["an unrecognised graph with --preprocess, engine onnxruntime", tiny, "onnxruntime", "bvlc", "bvlc"],
  ] as const)("takes the flavour of %s", async (_name, bytes, engine, preprocess, expected) => {
    // Act
    const described = await describeModelFlavour(bytes, "m.onnx", engine, preprocess);
    // Assess
    expect(described).toEqual({ flavour: expected });
  });

  it("refuses an unrecognised graph without --preprocess, naming the flag", async () => {
    // Act / Assess
    await expect(describeModelFlavour(tiny, "/m/tiny.onnx", "auto")).rejects.toThrow(ModelFormatError);
    await expect(describeModelFlavour(tiny, "/m/tiny.onnx", "auto")).rejects.toThrow(
      /^\/m\/tiny\.onnx: not a GoogLeNet this tool recognises, .*; name it with preprocess bvlc or preprocess torchvision \(engine onnxruntime or auto\)/,
    );
  });

  it("refuses --preprocess that contradicts the recognised flavour", async () => {
    // Act / Assess
    await expect(describeModelFlavour(bvlc, "/m/bvlc.onnx", "auto", "torchvision")).rejects.toThrow(
      new ConfigurationError(
        "/m/bvlc.onnx is recognised as a bvlc GoogLeNet, but preprocess torchvision was asked for; leave preprocess unset, or set it to bvlc",
      ),
    );
  });

  it("refuses the tfjs engine for an unrecognised graph, which tfjs cannot build", async () => {
    // Act / Assess
    await expect(describeModelFlavour(tiny, "/m/tiny.onnx", "tfjs", "bvlc")).rejects.toThrow(
      /the tfjs engine builds GoogLeNet from the graph and does not recognise this one; plan with the onnxruntime engine \(or auto\)/,
    );
  });
});

describe("planRun before anything is sent", () => {
  let dir: string;
  let synsets: Synsets;
  let options: PlanOptions;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "plan-"));
    synsets = await readSynsets(SYNSETS);
    await mkdir(join(dir, "images"));
    await writeFile(join(dir, "images", "n01440764_a.jpg"), "not decoded at plan time");
    await writeFile(join(dir, "model.onnx"), tinyClassifierModel());
    options = {
      input: join(dir, "images"),
      out: join(dir, "run"),
      queueUrl: DEAD_QUEUE,
      models: [join(dir, "model.onnx")],
      synsets,
      preprocess: "torchvision",
    };
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses an --out holding old batch files and no manifest, naming them, and writes nothing", async () => {
    // Prepare
    await mkdir(join(dir, "run", "batches"), { recursive: true });
    for (const name of ["b00000.jsonl", "b00001.jsonl", "b00002.jsonl", "b00003.jsonl", "b00004.jsonl", "b00005.jsonl"]) {
      await writeFile(join(dir, "run", "batches", name), "{}\n");
    }
    // Act / Assess
    await expect(planRun(options)).rejects.toThrow(
      new ConfigurationError(
        `${join(dir, "run")} is not empty: it holds 6 objects ` +
          "(batches/b00000.jsonl, batches/b00001.jsonl, batches/b00002.jsonl, batches/b00003.jsonl, batches/b00004.jsonl, ...), " +
          "and files of another run there could be taken for this one's. Give the run its own empty output prefix, " +
          `or replace it to delete everything under ${join(dir, "run")} first. Nothing was sent`,
      ),
    );
    expect((await readdir(join(dir, "run", "batches"))).length).toBe(6);
    expect(await readdir(join(dir, "run"))).toEqual(["batches"]);
  });

  it("with --replace, refuses to delete what the plan reads", async () => {
    // Prepare: the input lies inside --out.
    const inside = { ...options, out: dir, replace: true };
    // Act / Assess
    await expect(planRun(inside)).rejects.toThrow(
      `replacing would delete ${join(dir, "images")}, ${join(dir, "model.onnx")}, which this plan reads from ${dir}; ` +
        "give the run an output folder of its own",
    );
    expect((await readdir(dir)).sort()).toEqual(["images", "model.onnx"]);
  });

  it("with --replace, refuses to empty the folder it runs in", async () => {
    // Act / Assess
    await expect(planRun({ ...options, out: process.cwd(), replace: true })).rejects.toThrow(
      /^replacing would empty .*, which holds the current directory; give the run an output folder of its own$/,
    );
  });

  it.each([
    [{ maxPixels: 0 }, "max pixels must be a positive integer (default 100000000), got 0"],
    [{ batchSize: 1.5 }, "batch size must be a positive integer, got 1.5"],
    [{ preprocess: "caffe" as never }, 'unknown preprocess "caffe"; use one of: bvlc, torchvision'],
  ])("refuses bad settings %o before touching --out", async (bad, message) => {
    // Act / Assess
    await expect(planRun({ ...options, ...bad })).rejects.toThrow(new ConfigurationError(message));
  });
});

describe("plan command flags", () => {
  it.each([
    [["--preprocess", "caffe"], "--preprocess must be one of: bvlc, torchvision"],
    [["--max-pixels", "0"], "--max-pixels must be a positive integer"],
  ])("refuses %o with the valid choices", async (flags, message) => {
    // Prepare
    const argv = ["--input", "i", "--model", "m.onnx", "--queue", DEAD_QUEUE, "--out", "o", "--synsets", SYNSETS, ...flags];
    // Act / Assess
    await expect(planCommand(argv, {})).rejects.toThrow(new ConfigurationError(message));
  });
});

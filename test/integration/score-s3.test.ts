import { mkdtemp, readFile, rm, writeFile, mkdir, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ResultRecord, Summary } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

const SHARED = resolve(import.meta.dirname, "../../../shared");
const SAMPLES = join(SHARED, "imagenet/samples");

/** A landscape, a portrait and a grayscale photo, with their class indices. */
const PHOTOS: [file: string, label: number][] = [
  ["n01440764_tench.JPEG", 0],
  ["n01518878_ostrich.JPEG", 9],
  ["n02096051_Airedale.JPEG", 191],
];

function parseResults(text: string): ResultRecord[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ResultRecord);
}

/** Runs the CLI as its own process against the emulator and returns its exit code and output. */
async function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | string; out: string }> {
  const cli = spawnCli(args, env);
  const code = await cli.exited;
  return { code, out: [...cli.lines, ...cli.stderr].join("\n") };
}

describe("score with S3 in and out", () => {
  let emulator: Emulator;
  let work: string;
  const bucket = new Map<string, S3Location>();

  beforeAll(async () => {
    // Prepare: images, model, labels and synsets all in the bucket, plus a local copy of the
    // same images to score the ordinary way for reference.
    emulator = await startEmulator();
    emulator.server.createBucket("data");
    const at = (prefix: string): S3Location => {
      const location = bucket.get(prefix) ?? new S3Location(`s3://data/${prefix}`, emulator.s3);
      bucket.set(prefix, location);
      return location;
    };
    work = await mkdtemp(join(tmpdir(), "score-s3-"));
    await mkdir(join(work, "images"));
    for (const [file] of PHOTOS) {
      await at("validation").write(`photos/${file}`, await readFile(join(SAMPLES, file)));
      await copyFile(join(SAMPLES, file), join(work, "images", file));
    }
    const tench = await readFile(join(SAMPLES, "n01440764_tench.JPEG"));
    await at("validation").write("photos/broken.jpg", tench.subarray(0, 4000));
    await writeFile(join(work, "images", "broken.jpg"), tench.subarray(0, 4000));
    await at("models").write("bvlc-googlenet.onnx", await readFile(join(SHARED, "models/bvlc-googlenet.onnx")));
    await at("models").write("synset_words.txt", await readFile(join(SHARED, "imagenet/synset_words.txt")));
    const valTxt = PHOTOS.map(([file, label]) => `${file} ${label}`).join("\n") + "\n";
    await at("labels").write("val.txt", valTxt);
    await writeFile(join(work, "val.txt"), valTxt);
  });

  afterAll(async () => {
    await emulator?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("reads images, model, labels and synsets from S3, writes every result file there, and resumes from it", async () => {
    // Act: an S3 run (synsets found beside the model), then the same images from a local folder.
    const remoteArgs = [
      "score",
      "s3://data/validation/",
      "--model",
      "s3://data/models/bvlc-googlenet.onnx",
      "--labels",
      "s3://data/labels/val.txt",
      "--engine",
      "onnxruntime",
      "--crops",
      "10",
      "--out",
      "s3://data/runs/first",
    ];
    const remote = await runCli(remoteArgs, emulator.env);
    const local = await runCli(
      [
        "score",
        join(work, "images"),
        "--model",
        join(SHARED, "models/bvlc-googlenet.onnx"),
        "--labels",
        join(work, "val.txt"),
        "--synsets",
        join(SHARED, "imagenet/synset_words.txt"),
        "--engine",
        "onnxruntime",
        "--crops",
        "10",
        "--out",
        join(work, "local-out"),
      ],
      emulator.env,
    );
    const again = await runCli(remoteArgs, emulator.env);

    // Assess
    expect(remote.code, remote.out).toBe(0);
    expect(local.code, local.out).toBe(0);
    expect(again.code, again.out).toBe(0);
    const run = new S3Location("s3://data/runs/first", emulator.s3);
    const listed: string[] = [];
    for await (const key of run.list()) listed.push(key);
    expect(listed).toEqual(["report.html", "results.jsonl", "run-header.json", "run.json", "summary.json"]);

    const records = parseResults((await run.read("results.jsonl")).toString("utf8"));
    expect(records.map((record) => record.key)).toEqual(["photos/broken.jpg", ...PHOTOS.map(([file]) => `photos/${file}`)]);
    expect(records[0]).toMatchObject({ key: "photos/broken.jpg", error: expect.stringMatching(/broken\.jpg/) });
    const localRecords = parseResults(await readFile(join(work, "local-out", "results.jsonl"), "utf8"));
    // Same pixels, same engine: the S3 run's predictions equal the local run's exactly (keys
    // differ by the sub-folder, and error messages name the key).
    const withoutKey = (list: ResultRecord[]) => list.map(({ key, ...rest }) => ("error" in rest ? { failed: key.endsWith("broken.jpg") } : rest));
    expect(withoutKey(records)).toEqual(withoutKey(localRecords));

    const summary = JSON.parse((await run.read("summary.json")).toString("utf8")) as Summary;
    const localSummary = JSON.parse(await readFile(join(work, "local-out", "summary.json"), "utf8")) as Summary;
    expect(summary.schemes).toEqual(localSummary.schemes);
    expect(summary).toMatchObject({ images: 4, scored: 3, failed: 1, labelled: 3, failedKeys: ["photos/broken.jpg"] });
    expect(summary.models[0]?.file).toBe("s3://data/models/bvlc-googlenet.onnx");
    expect((await run.read("report.html")).toString("utf8")).toContain("<svg");

    // The second run found everything done in the bucket and changed no result.
    expect(again.out).toMatch(/resuming: 4 of 4 images/);
    expect(parseResults((await run.read("results.jsonl")).toString("utf8"))).toEqual(records);
  });
});

import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { StorageError } from "../../storage/errors.js";
import type { RunHeader } from "../../scoring/run-header.js";
import { RUN_HEADER_FILE, assertSameRun, formatRunHeader, headerDifferences, inputOfRun, readRunHeader } from "../../scoring/run-header.js";
import { LocalLocation } from "../../storage/location.js";
import { S3Location } from "../../storage/s3-location.js";

const BVLC = "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4";
const TORCHVISION = "1843af8e0dc3c89ab917b54e5fca51e7821f9bb70ca677583d43a7bdfa9b46aa";
const LABELS = "a".repeat(64);
const SYNSETS = "b".repeat(64);

function header(overrides: Partial<RunHeader> = {}): RunHeader {
  return {
    version: 1,
    input: "/data/val",
    models: [{ file: "../shared/models/bvlc-googlenet.onnx", sha256: BVLC }],
    crops: 10,
    exifOrientation: false,
    maxPixels: 100_000_000,
    preprocess: null,
    labels: { file: "val.txt", sha256: LABELS },
    synsetsSha256: SYNSETS,
    ...overrides,
  };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "run-header-test-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("headerDifferences", () => {
  it("finds none for the same settings, whatever the files' paths", () => {
    // Prepare: the same model and labels, moved to S3.
    const moved = header({
      models: [{ file: "s3://b/models/bvlc-googlenet.onnx", sha256: BVLC }],
      labels: { file: "s3://b/val.txt", sha256: LABELS },
    });

    // Act, Assess
    expect(headerDifferences(header(), moved)).toEqual([]);
  });

  it("finds none against a header from before inputs were recorded", () => {
    // Prepare
    const { input: _input, ...before } = header();

    // Act, Assess
    expect(headerDifferences(before, header())).toEqual([]);
  });

  it.each<[string, Partial<RunHeader>, string, string]>([
    ["input", { input: "s3://b/val" }, "/data/val", "s3://b/val"],
    ["crops", { crops: 144 }, "10", "144"],
    ["exifOrientation", { exifOrientation: true }, "false", "true"],
    ["maxPixels", { maxPixels: 5000 }, "100000000", "5000"],
    ["preprocess", { preprocess: "torchvision" }, "none", "torchvision"],
    ["labels.sha256", { labels: null }, `${LABELS} (val.txt)`, "none (labels from file names)"],
    ["synsetsSha256", { synsetsSha256: "c".repeat(64) }, SYNSETS, "c".repeat(64)],
    [
      "models[0].sha256",
      { models: [{ file: "/m/torchvision-googlenet-untrained.onnx", sha256: TORCHVISION }] },
      `${BVLC} (bvlc-googlenet.onnx)`,
      `${TORCHVISION} (torchvision-googlenet-untrained.onnx)`,
    ],
    [
      "models",
      { models: [{ file: "a/bvlc-googlenet.onnx", sha256: BVLC }, { file: "b/tv.onnx", sha256: TORCHVISION }] },
      "1 (bvlc-googlenet.onnx)",
      "2 (bvlc-googlenet.onnx, tv.onnx)",
    ],
  ])("names %s with its value before and now", (field, change, before, now) => {
    // Act
    const differences = headerDifferences(header(), header(change));

    // Assess
    expect(differences).toEqual([{ field, before, now }]);
  });
});

describe("assertSameRun", () => {
  it("passes the same settings", () => {
    expect(() => assertSameRun(header(), header(), "./r")).not.toThrow();
  });

  it("refuses other settings with one sentence naming each field, both values and what to do", () => {
    // Act
    let error: unknown;
    try {
      assertSameRun(header(), header({ crops: 144, exifOrientation: true }), "./r");
    } catch (caught) {
      error = caught;
    }

    // Assess
    expect(error).toBeInstanceOf(ConfigurationError);
    expect((error as Error).message).toBe(
      "./r already holds a run with crops 10, exifOrientation false; " +
        "this run has crops 144, exifOrientation true: use another output folder, or delete ./r to start again",
    );
  });
});

describe("inputOfRun", () => {
  it("gives a local folder's real path, however it was reached", async () => {
    // Prepare: a folder, a symbolic link to it, and a relative path to it.
    const folder = join(dir, "images");
    await mkdir(folder);
    await symlink(folder, join(dir, "link"));
    const real = await realpath(folder);

    // Act, Assess
    expect(await inputOfRun(new LocalLocation(folder))).toBe(real);
    expect(await inputOfRun(new LocalLocation(join(dir, "link")))).toBe(real);
    expect(await inputOfRun(new LocalLocation(relative(process.cwd(), folder)))).toBe(real);
  });

  it("gives an S3 prefix's URL without its trailing slash", async () => {
    expect(await inputOfRun(new S3Location("s3://data/validation/"))).toBe("s3://data/validation");
  });

  it("refuses a local folder that is not there, naming it", async () => {
    await expect(inputOfRun(new LocalLocation(join(dir, "gone")))).rejects.toThrow(
      new StorageError(`cannot resolve image folder ${join(dir, "gone")}: ENOENT: no such file or directory, realpath '${join(dir, "gone")}'`),
    );
  });
});

describe("readRunHeader", () => {
  it("reads back what formatRunHeader wrote", async () => {
    // Prepare
    await writeFile(join(dir, RUN_HEADER_FILE), formatRunHeader(header()));

    // Act, Assess
    expect(await readRunHeader(new LocalLocation(dir), dir)).toEqual(header());
  });

  it("returns undefined when there is no header", async () => {
    expect(await readRunHeader(new LocalLocation(dir), dir)).toBeUndefined();
  });

  it.each([
    ["not JSON", "{ half", /run-header\.json is not valid JSON; delete .* to start again/],
    ["a header without crops", JSON.stringify({ ...header(), crops: undefined }), /run-header\.json is not a run header \(crops: /],
  ])("refuses a file that is %s", async (_, text, message) => {
    // Prepare
    await writeFile(join(dir, RUN_HEADER_FILE), text);

    // Act
    const read = readRunHeader(new LocalLocation(dir), dir);

    // Assess
    await expect(read).rejects.toThrow(StorageError);
    await expect(read).rejects.toThrow(message);
  });
});

import { readFile } from "node:fs/promises";
import { beforeAll, describe, expect, it } from "vitest";
import { LabelFileError } from "../../model/errors.js";
import { parseSynsets } from "../../model/synsets.js";
import type { Synsets } from "../../model/synsets.js";
import { describeProblems, labelFromPath, parseLabels } from "../../scoring/labels.js";

const SYNSETS_PATH = "../shared/imagenet/synset_words.txt";
let synsets: Synsets;

beforeAll(async () => {
  synsets = parseSynsets(await readFile(SYNSETS_PATH, "utf8"), SYNSETS_PATH);
});

describe("parseSynsets", () => {
  it("reads the 1000 classes in line order with their first names", () => {
    // Assess (the real file, parsed in beforeAll)
    expect(synsets.wnids).toHaveLength(1000);
    expect(synsets.wnids[0]).toBe("n01440764");
    expect(synsets.names[0]).toBe("tench");
    expect(synsets.names[2]).toBe("great white shark");
    expect(synsets.indexOf("n01443537")).toBe(1);
    expect(synsets.indexOf("n99999999")).toBeUndefined();
  });

  it.each([
    ["a short file", (lines: string[]) => lines.slice(0, 999), /my-synsets\.txt: expected 1000 lines.*found 999/],
    ["a bad line", (lines: string[]) => lines.map((l, i) => (i === 41 ? "tench without id" : l)), /:42: expected "WNID name/],
    ["unsorted WNIDs", (lines: string[]) => [lines[1], lines[0], ...lines.slice(2)] as string[], /:2: n01440764 is not after n01443537/],
  ])("names the file and line for %s", async (_name, edit, message) => {
    // Prepare
    const lines = (await readFile(SYNSETS_PATH, "utf8")).trimEnd().split("\n");

    // Act / Assess
    expect(() => parseSynsets(edit(lines).join("\n"), "my-synsets.txt")).toThrow(LabelFileError);
    expect(() => parseSynsets(edit(lines).join("\n"), "my-synsets.txt")).toThrow(message);
  });
});

describe("parseLabels: format detection and lookup", () => {
  it.each([
    {
      format: "caffe-val",
      text: "ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n",
      hits: [
        ["ILSVRC2012_val_00000001.JPEG", 65],
        ["val/ILSVRC2012_val_00000002.JPEG", 970], // base-name fallback
      ],
    },
    {
      format: "caffe-val",
      text: "train/n01440764/a b.JPEG 0\r\n./train/n01443537/c.JPEG 1\r\n",
      hits: [
        ["train/n01440764/a b.JPEG", 0], // spaces in a path; CRLF
        ["train/n01443537/c.JPEG", 1], // leading ./ dropped
      ],
    },
    {
      format: "loc-csv",
      text: "ImageId,PredictionString\nILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295\nILSVRC2012_val_00000001,n01751748 111 108 441 193\n",
      hits: [
        ["ILSVRC2012_val_00008726.JPEG", synsetIndex("n02119789")],
        ["deep/ILSVRC2012_val_00000001.JPEG", synsetIndex("n01751748")],
      ],
    },
    {
      format: "synset-labels",
      text: "n01751748\nn09193705\nn02105855\n",
      hits: [
        ["ILSVRC2012_val_00000001.JPEG", synsetIndex("n01751748")],
        ["x/ILSVRC2012_val_00000003.JPEG", synsetIndex("n02105855")],
      ],
    },
  ])("detects $format and looks keys up", ({ format, text, hits }) => {
    // Act
    const table = parseLabels(text, { source: "labels.txt", synsets });

    // Assess
    expect(table.format).toBe(format);
    expect(table.problemCount).toBe(0);
    for (const [key, index] of hits) {
      expect(table.lookup(key as string)).toBe(typeof index === "function" ? index() : index);
    }
    expect(table.lookup("not-listed.JPEG")).toBeNull();
  });

  it("reads the samples' real val.txt", async () => {
    // Prepare
    const path = "../shared/imagenet/samples-val.txt";

    // Act
    const table = parseLabels(await readFile(path, "utf8"), { source: path, synsets });

    // Assess
    expect(table.format).toBe("caffe-val");
    expect(table.size).toBe(1000);
    expect(table.lookup("n01443537_goldfish.JPEG")).toBe(1);
  });
});

function synsetIndex(wnid: string): () => number {
  // Resolved lazily: the table is read in beforeAll, after describe.each has built its cases.
  return () => synsets.indexOf(wnid) as number;
}

describe("parseLabels: problems", () => {
  it("refuses the devkit ground truth, saying why and what to use", () => {
    // Prepare: 50,000 devkit ids, one per line
    const text = Array.from({ length: 50_000 }, (_, i) => String((i % 1000) + 1)).join("\n") + "\n";

    // Act / Assess
    expect(() => parseLabels(text, { source: "ILSVRC2012_validation_ground_truth.txt", synsets })).toThrow(LabelFileError);
    expect(() => parseLabels(text, { source: "ILSVRC2012_validation_ground_truth.txt", synsets })).toThrow(
      /ILSVRC2012_validation_ground_truth\.txt.*devkit ids.*not class indices in sorted-WNID order.*val\.txt.*LOC_val_solution\.csv/s,
    );
  });

  it("keeps the good lines and reports bad ones with their line numbers", () => {
    // Prepare
    const text = ["a.JPEG 1", "b.JPEG 1000", "c.JPEG -3", "no index here", "d.JPEG 7", "a.JPEG 2"].join("\n");

    // Act
    const table = parseLabels(text, { source: "val.txt", synsets });

    // Assess
    expect(table.size).toBe(2);
    expect(table.lookup("d.JPEG")).toBe(7);
    expect(table.lookup("a.JPEG")).toBe(1);
    expect(table.problems.map((p) => p.line)).toEqual([2, 3, 4, 6]);
    expect(table.problems[0]?.message).toMatch(/class index 1000 is outside 0\.\.999/);
    expect(describeProblems(table)).toMatch(/4 line\(s\) of val\.txt skipped.*val\.txt:2:/s);
  });

  it("reports unknown and malformed WNIDs in a LOC csv", () => {
    // Prepare
    const text = "ImageId,PredictionString\nv1,n01440764 1 2 3 4\nv2,n99999999 1 2 3 4\nv3,banana\nv4\n";

    // Act
    const table = parseLabels(text, { source: "LOC_val_solution.csv", synsets });

    // Assess
    expect(table.lookup("v1.JPEG")).toBe(0);
    expect(table.problems).toEqual([
      { line: 3, message: expect.stringMatching(/unknown WNID n99999999/) },
      { line: 4, message: expect.stringMatching(/expected a WNID/) },
      { line: 5, message: expect.stringMatching(/expected "ImageId,PredictionString"/) },
    ]);
  });

  it("keeps at most maxProblems but counts them all", () => {
    // Prepare
    const text = ["good.JPEG 3", ...Array.from({ length: 25 }, (_, i) => `bad${i}.JPEG x`)].join("\n");

    // Act
    const table = parseLabels(text, { source: "val.txt", synsets, maxProblems: 5 });

    // Assess
    expect(table.problems).toHaveLength(5);
    expect(table.problemCount).toBe(25);
    expect(describeProblems(table)).toMatch(/\.\.\. and 20 more/);
  });

  it.each([
    ["an unknown format", "hello world, this is prose\n", /unknown label file format.*use one of/s],
    ["an empty file", "\n\n", /empty/],
    ["no usable line", "a.JPEG 5000\n", /no usable label.*line 1: class index 5000/s],
  ])("refuses %s naming the file", (_name, text, message) => {
    expect(() => parseLabels(text, { source: "mine.txt", synsets })).toThrow(LabelFileError);
    expect(() => parseLabels(text, { source: "mine.txt", synsets })).toThrow(new RegExp(`mine\\.txt.*${message.source}`, "s"));
  });

  it("needs synsets for a WNID format", () => {
    expect(() => parseLabels("n01440764\n", { source: "synset_labels.txt" })).toThrow(/needs synset_words\.txt/);
  });
});

describe("labelFromPath", () => {
  it.each([
    ["n01443537_goldfish.JPEG", 1],
    ["train/n01440764/n01440764_10026.JPEG", 0],
    ["train/n01440764/IMG_0001.jpg", 0],
    ["n01443537/n01440764_x.jpg", 0], // the file name wins over the folder
    ["photos/IMG_0001.jpg", null],
    ["xn01443537_goldfish.jpg", null], // not a WNID: glued to a letter
    ["n99999999_unknown.jpg", null],
  ])("%s -> %s", (key, expected) => {
    expect(labelFromPath(key, synsets)).toBe(expected);
  });
});

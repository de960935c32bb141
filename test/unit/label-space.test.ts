import { describe, expect, it } from "vitest";
import { readSynsets } from "../../model/synsets.js";
import { binomialUpperTail, diagnoseLabels, knownRemappings } from "../../scoring/label-check.js";
import { describeLabelSpace, folderIndexLabel, labelsFromLayout } from "../../scoring/label-space.js";
import { headerDifferences, type RunHeader } from "../../scoring/run-header.js";

const SYNSETS = "../shared/imagenet/synset_words.txt";
const DIGEST = (c: string): string => c.repeat(64);

function header(overrides: Partial<RunHeader> = {}): RunHeader {
  return {
    version: 1,
    models: [{ file: "m.onnx", sha256: DIGEST("a") }],
    crops: 1,
    exifOrientation: false,
    maxPixels: 100_000_000,
    preprocess: null,
    labels: null,
    synsetsSha256: DIGEST("b"),
    ...overrides,
  };
}

describe("ImageNet-V2's layout: folders named by class index", () => {
  it("reads the folder name as a number, never by its place in a string sort", () => {
    expect(folderIndexLabel("imagenetv2/10/3f2a.jpeg")).toBe(10);
    expect(folderIndexLabel("imagenetv2/100/3f2a.jpeg")).toBe(100);
    expect(folderIndexLabel("999/x.jpeg")).toBe(999);
    expect(folderIndexLabel("1000/x.jpeg")).toBeNull();
    expect(folderIndexLabel("x.jpeg")).toBeNull();
  });

  it("is chosen when no key names a WNID; WNIDs win when any does", async () => {
    const synsets = await readSynsets(SYNSETS);
    const v2 = labelsFromLayout(["0/a.jpeg", "10/b.jpeg", "2/c.jpeg"], synsets);
    expect(v2.layout).toBe("folder-index");
    expect(["0/a.jpeg", "10/b.jpeg", "2/c.jpeg"].map(v2.labelOf)).toEqual([0, 10, 2]);
    expect(labelsFromLayout(["7/n01440764_tench.JPEG"], synsets).layout).toBe("wnid-in-path");
  });
});

describe("run header: the class subset is a run setting", () => {
  it("names a different subset (and a subset against none) as a difference, so a resume is refused", () => {
    const space = (sha: string) => ({ layout: "wnid-in-path" as const, classes: { file: "a.txt", sha256: DIGEST(sha), count: 200 } });
    expect(headerDifferences(header({ labelSpace: space("c") }), header({ labelSpace: space("d") }))).toEqual([
      { field: "labelSpace.classes", before: `200 classes, sha256 ${DIGEST("c")} (a.txt)`, now: `200 classes, sha256 ${DIGEST("d")} (a.txt)` },
    ]);
    expect(headerDifferences(header(), header({ labelSpace: space("c") }))[0]?.field).toBe("labelSpace.classes");
    expect(headerDifferences(header(), header({ labelSpace: { layout: "wnid-in-path", classes: null } }))).toEqual([]);
  });
});

describe("label check arithmetic", () => {
  it("binomial upper tail matches values computed by hand", () => {
    // P(X >= 3 | n = 4, 1/2) = (4 + 1) / 16; P(X >= 20 | n = 20) = 2^-20.
    expect(binomialUpperTail(3, 4)).toBeCloseTo(5 / 16, 12);
    expect(binomialUpperTail(20, 20)).toBeCloseTo(2 ** -20, 18);
    expect(binomialUpperTail(0, 5)).toBe(1);
  });

  it("20 images one class too high across 20 classes trip it (p = 2^-20 < 1e-6); 19 do not", () => {
    const shifted = (n: number) => Array.from({ length: n }, (_, i) => ({ label: i * 3 + 1, top1: i * 3 }));
    expect(diagnoseLabels(shifted(20)).winner?.id).toBe("minus-one");
    expect(diagnoseLabels(shifted(19)).winner).toBeNull();
  });

  it("a model that answers one class for a folder of one class does not trip it (fewer than 5 classes)", () => {
    const images = Array.from({ length: 50 }, () => ({ label: 8, top1: 7 }));
    expect(diagnoseLabels(images).winner).toBeNull();
  });

  it('"folders sorted as strings": place 2 of "0", "1", "10", "100", "101".."109", "11" is folder 10, place 13 folder 11', () => {
    const remapping = knownRemappings().find((r) => r.id === "folders-as-strings");
    expect([0, 1, 2, 3, 12, 13].map((n) => remapping?.map(n))).toEqual([0, 1, 10, 100, 109, 11]);
  });
});

describe("the label-space line", () => {
  it("names the built-in validation labels when they label images, and the layout for the rest", () => {
    const space = { layout: "wnid-in-path" as const, classes: null };
    expect(describeLabelSpace(space, { images: 5, keys: 5 })).toBe(
      "label space: labels from the built-in ILSVRC 2012 validation labels (names ILSVRC2012_val_NNNNNNNN); all 1000 classes",
    );
    expect(describeLabelSpace(space, { images: 3, keys: 5 })).toBe(
      "label space: labels from the built-in ILSVRC 2012 validation labels (names ILSVRC2012_val_NNNNNNNN) for 3 of 5 images, " +
        "the rest from a WNID in each file or folder name; all 1000 classes",
    );
    expect(describeLabelSpace(space)).toBe("label space: labels from a WNID in each file or folder name; all 1000 classes");
  });
});

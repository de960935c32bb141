import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { StorageError } from "../../storage/errors.js";
import {
  ARCHIVES_MANIFEST_FORMAT,
  BATCH_MESSAGE_TYPE,
  MANIFEST_FORMAT,
  MANIFEST_KEY,
  batchId,
  batchMessage,
  batchResultKeyFor,
  codeVersion,
  digestOfManifest,
  parseBatchMessage,
  parseManifest,
  readManifestWithDigest,
  serializeManifest,
  type Manifest,
} from "../../queue/manifest.js";
import { LocalLocation } from "../../storage/location.js";
import { testManifest } from "../helpers/manifests.js";

function manifest(overrides: Partial<Manifest> = {}): Manifest {
  return testManifest({
    out: "s3://b/runs/run-1",
    images: 3,
    batches: [
      { id: "b00000", keys: ["x.jpg", "y.jpg"], labels: [1, null] },
      { id: "b00001", keys: ["z.jpg"], labels: [999] },
    ],
    ...overrides,
  });
}

const DIGEST = "0123456789abcdef".repeat(4);

describe("manifest", () => {
  it("round-trips through its serialized form, decoding settings included", () => {
    // Prepare
    const original = manifest({
      applyExifOrientation: true,
      maxPixels: 187_500,
      models: [{ url: "/m/tiny.onnx", sha256: "b".repeat(64), flavour: "torchvision", preprocess: "torchvision" }],
    });
    // Act
    const parsed = parseManifest(serializeManifest(original), "s3://b/runs/run-1/manifest.json");
    // Assess
    expect(parsed).toEqual(original);
    expect(parsed.applyExifOrientation).toBe(true);
    expect(parsed.maxPixels).toBe(187_500);
    expect(parsed.models[0]?.preprocess).toBe("torchvision");
  });

  it.each([
    ["not JSON", "{", /is not JSON/],
    ["another format", JSON.stringify({ ...manifest(), format: "other" }), /format/],
    ["a bad crop count", JSON.stringify({ ...manifest(), crops: 12 }), /crops/],
    ["no EXIF setting", JSON.stringify({ ...manifest(), applyExifOrientation: undefined }), /applyExifOrientation/],
    ["a pixel limit of 0", JSON.stringify({ ...manifest(), maxPixels: 0 }), /maxPixels/],
    ["a model without preprocess", JSON.stringify({ ...manifest(), models: [{ url: "m", sha256: "a".repeat(64), flavour: "bvlc" }] }), /models\.0\.preprocess/],
    ["labels that do not match keys", JSON.stringify(manifest({ batches: [{ id: "b0", keys: ["a"], labels: [] }] })), /one label per key/],
    ["a repeated batch id", JSON.stringify(manifest({ batches: [{ id: "b0", keys: [], labels: [] }, { id: "b0", keys: [], labels: [] }] })), /appears twice/],
  ])("rejects %s, naming the file", (_name, text, pattern) => {
    // Act / Assess
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(StorageError);
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(pattern);
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(/where\/manifest\.json/);
  });

  /** A run over one archive of three images: two batches of its members (@3). */
  function archiveManifest(overrides: Partial<Manifest> = {}): Manifest {
    return manifest({
      format: ARCHIVES_MANIFEST_FORMAT,
      input: "s3://b/val.tar",
      archives: [{ key: "val.tar", url: "s3://b/val.tar", version: '"0123abcd"', size: 10240, images: 3, index: "archives/0.json" }],
      batches: [
        { id: "b00000", keys: ["val.tar/x.jpg", "val.tar/y.jpg"], labels: [1, null], members: { archive: 0, first: 0, last: 1 } },
        { id: "b00001", keys: ["val.tar/z.jpg"], labels: [999], members: { archive: 0, first: 2, last: 2 } },
      ],
      ...overrides,
    });
  }

  it("round-trips a manifest@3 with its archives and batches of members", () => {
    // Act
    const parsed = parseManifest(serializeManifest(archiveManifest()), "s3://b/runs/run-1/manifest.json");
    // Assess
    expect(parsed).toEqual(archiveManifest());
  });

  it.each([
    ["a manifest@3 without archives", { archives: undefined }, /a googlenet-eval\/manifest@3 manifest needs "archives"/],
    ["a manifest@2 with archives", { format: MANIFEST_FORMAT }, /a googlenet-eval\/manifest@2 manifest cannot have "archives"/],
    ["a batch naming an archive not listed", { batches: [{ id: "b0", keys: ["val.tar/x.jpg"], labels: [1], members: { archive: 1, first: 0, last: 0 } }] }, /batch b0 names archive 1/],
    ["members past the archive's images", { batches: [{ id: "b0", keys: ["val.tar/x.jpg"], labels: [1], members: { archive: 0, first: 3, last: 3 } }] }, /members 3-3 of val\.tar \(3 images\)/],
    ["members that do not match the keys", { batches: [{ id: "b0", keys: ["val.tar/x.jpg"], labels: [1], members: { archive: 0, first: 0, last: 1 } }] }, /do not match its 1 keys/],
  ] as const)("rejects %s, naming the file", (_name, overrides, pattern) => {
    // Prepare
    const text = JSON.stringify(archiveManifest(overrides as Partial<Manifest>));
    // Act / Assess
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(StorageError);
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(pattern);
  });

  it("refuses a manifest@1, saying why and how to plan again", () => {
    // Prepare: an @1 manifest as the previous version wrote it (no decoding settings).
    const { applyExifOrientation: _exif, maxPixels: _pixels, ...rest } = manifest();
    const v1 = JSON.stringify({ ...rest, format: "googlenet-eval/manifest@1", models: [{ url: "m", sha256: "a".repeat(64), flavour: "bvlc" }] });
    // Act / Assess
    expect(() => parseManifest(v1, "s3://b/runs/old/manifest.json")).toThrow(
      "s3://b/runs/old/manifest.json is a googlenet-eval/manifest@1 manifest, planned by an older googlenet-eval; " +
        "this version reads only googlenet-eval/manifest@2 (googlenet-eval/manifest@3 for archives), which also records the decoding settings " +
        "(EXIF orientation, pixel limit, preprocess). Plan the run again with this version (replacing the same output prefix, or into a new one)",
    );
  });

  it("digests the manifest's content: sha256 of its canonical JSON, whatever the file's layout", async () => {
    // Prepare: the same manifest stored compactly, with keys in reverse order.
    const m = manifest();
    const reversed = Object.fromEntries(Object.entries(m).reverse());
    const dir = await mkdtemp(join(tmpdir(), "manifest-"));
    try {
      const out = new LocalLocation(dir);
      await out.write(MANIFEST_KEY, JSON.stringify(reversed));
      // Independently: keys sorted at every level, no whitespace.
      const expectedText =
        '{"applyExifOrientation":false,' +
        '"batches":[{"id":"b00000","keys":["x.jpg","y.jpg"],"labels":[1,null]},{"id":"b00001","keys":["z.jpg"],"labels":[999]}],' +
        '"codeVersion":"0.1.0","createdAt":"2026-01-01T00:00:00.000Z","crops":10,"engine":"onnxruntime",' +
        '"format":"googlenet-eval/manifest@2","images":3,"input":"s3://b/images","labels":"s3://b/val.txt","maxPixels":100000000,' +
        `"models":[{"flavour":"bvlc","preprocess":null,"sha256":"${"a".repeat(64)}","url":"s3://b/m.onnx"}],` +
        '"out":"s3://b/runs/run-1","runId":"run-1"}';
      const expected = createHash("sha256").update(expectedText).digest("hex");
      // Act
      const read = await readManifestWithDigest(out);
      // Assess
      expect(read.manifest).toEqual(m);
      expect(read.manifestDigest).toBe(expected);
      expect(digestOfManifest(m)).toBe(expected);
      expect(digestOfManifest({ ...m, maxPixels: 1 })).not.toBe(expected);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("gives batch ids that sort in run order and result keys tied to the manifest digest", () => {
    // Act
    const ids = Array.from({ length: 12 }, (_, i) => batchId(i, 12));
    // Assess
    expect(ids.slice(0, 3)).toEqual(["b00000", "b00001", "b00002"]);
    expect([...ids].sort()).toEqual(ids);
    expect(batchId(5, 200_000)).toBe("b000005");
    expect(batchResultKeyFor(DIGEST, "b00003")).toBe("batches/b00003.0123456789abcdef.jsonl");
    expect(() => batchResultKeyFor("abc", "b00003")).toThrow(/not a sha256/);
  });

  it("builds small batch messages that carry the digest and parse back", () => {
    // Prepare
    const m = manifest();
    // Act
    const body = JSON.stringify(batchMessage(m, m.batches[1] as Manifest["batches"][number], DIGEST));
    // Assess
    expect(parseBatchMessage(JSON.parse(body))).toEqual({
      type: BATCH_MESSAGE_TYPE,
      out: m.out,
      runId: "run-1",
      batchId: "b00001",
      manifestDigest: DIGEST,
    });
    expect(body.length).toBeLessThan(300);
    expect(parseBatchMessage({ Records: [] })).toBeUndefined();
    expect(() => parseBatchMessage({ type: BATCH_MESSAGE_TYPE, out: "s3://b/r" })).toThrow(/malformed batch message/);
  });

  it("treats a batch message without the manifest digest as malformed", () => {
    // Act / Assess
    const old = { type: BATCH_MESSAGE_TYPE, out: "s3://b/r", runId: "r", batchId: "b00000" };
    expect(() => parseBatchMessage(old)).toThrow(/malformed batch message: manifestDigest: Required/);
    expect(() => parseBatchMessage({ ...old, manifestDigest: "xyz" })).toThrow(/manifestDigest: must be 64 lowercase hex digits/);
  });

  it("reads the code version from package.json", () => {
    // Act / Assess
    expect(codeVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

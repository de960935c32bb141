import { describe, expect, it } from "vitest";
import { StorageError } from "../../model/errors.js";
import {
  BATCH_MESSAGE_TYPE,
  MANIFEST_FORMAT,
  batchId,
  batchMessage,
  batchResultKey,
  codeVersion,
  parseBatchMessage,
  parseManifest,
  serializeManifest,
  type Manifest,
} from "../../pipeline/manifest.js";

function manifest(overrides: Partial<Manifest> = {}): Manifest {
  return {
    format: MANIFEST_FORMAT,
    runId: "run-1",
    createdAt: "2026-01-01T00:00:00.000Z",
    codeVersion: "0.1.0",
    input: "s3://b/images",
    out: "s3://b/runs/run-1",
    models: [{ url: "s3://b/m.onnx", sha256: "a".repeat(64), flavour: "bvlc" }],
    crops: 10,
    engine: "onnxruntime",
    labels: "s3://b/val.txt",
    images: 3,
    batches: [
      { id: "b00000", keys: ["x.jpg", "y.jpg"], labels: [1, null] },
      { id: "b00001", keys: ["z.jpg"], labels: [999] },
    ],
    ...overrides,
  };
}

describe("manifest", () => {
  it("round-trips through its serialized form", () => {
    // Prepare
    const original = manifest();
    // Act
    const parsed = parseManifest(serializeManifest(original), "s3://b/runs/run-1/manifest.json");
    // Assess
    expect(parsed).toEqual(original);
  });

  it.each([
    ["not JSON", "{", /is not JSON/],
    ["another format", JSON.stringify({ ...manifest(), format: "other" }), /format/],
    ["a bad crop count", JSON.stringify({ ...manifest(), crops: 12 }), /crops/],
    ["labels that do not match keys", JSON.stringify(manifest({ batches: [{ id: "b0", keys: ["a"], labels: [] }] })), /one label per key/],
    ["a repeated batch id", JSON.stringify(manifest({ batches: [{ id: "b0", keys: [], labels: [] }, { id: "b0", keys: [], labels: [] }] })), /appears twice/],
  ])("rejects %s, naming the file", (_name, text, pattern) => {
    // Act / Assess
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(StorageError);
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(pattern);
    expect(() => parseManifest(text, "where/manifest.json")).toThrow(/where\/manifest\.json/);
  });

  it("gives batch ids that sort in run order and a result key from the id alone", () => {
    // Act
    const ids = Array.from({ length: 12 }, (_, i) => batchId(i, 12));
    // Assess
    expect(ids.slice(0, 3)).toEqual(["b00000", "b00001", "b00002"]);
    expect([...ids].sort()).toEqual(ids);
    expect(batchId(5, 200_000)).toBe("b000005");
    expect(batchResultKey("b00003")).toBe("batches/b00003.jsonl");
  });

  it("builds small batch messages that parse back", () => {
    // Prepare
    const m = manifest();
    // Act
    const body = JSON.stringify(batchMessage(m, m.batches[1] as Manifest["batches"][number]));
    // Assess
    expect(parseBatchMessage(JSON.parse(body))).toEqual({ type: BATCH_MESSAGE_TYPE, out: m.out, runId: "run-1", batchId: "b00001" });
    expect(body.length).toBeLessThan(200);
    expect(parseBatchMessage({ Records: [] })).toBeUndefined();
    expect(() => parseBatchMessage({ type: BATCH_MESSAGE_TYPE, out: "s3://b/r" })).toThrow(/malformed batch message/);
  });

  it("reads the code version from package.json", () => {
    // Act / Assess
    expect(codeVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

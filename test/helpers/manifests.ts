import { MANIFEST_FORMAT, type Manifest, type ManifestBatch, type ManifestModel } from "../../queue/manifest.js";
import type { ResultRecord } from "../../scoring/records.js";

/** A manifest's entry for a BVLC GoogLeNet at `url`, its recognised flavour used (no preprocess). */
export function bvlcModel(url: string, sha256: string): ManifestModel {
  return { url, sha256, flavour: "bvlc", preprocess: null };
}

/** The manifest batch that these records answer: their keys, and their labels (null for an error record's). */
export function manifestBatch(id: string, records: readonly ResultRecord[]): ManifestBatch {
  return { id, keys: records.map((record) => record.key), labels: records.map((record) => ("label" in record ? record.label : null)) };
}

/**
 * A manifest as plan writes it, for tests that stage a run by hand: one BVLC model, 10 crops on
 * onnxruntime, no EXIF rotation, the 100-million-pixel limit, labels from a file, and as many
 * images as `batches` holds keys. `fields` gives the run's folder and batches and replaces any
 * of the rest; the keys keep plan's order, so a test's serialized manifest reads as plan's would.
 */
export function testManifest(fields: Pick<Manifest, "out" | "batches"> & Partial<Manifest>): Manifest {
  const defaults: Manifest = {
    format: MANIFEST_FORMAT,
    runId: "run-1",
    createdAt: "2026-01-01T00:00:00.000Z",
    codeVersion: "0.1.0",
    input: "s3://b/images",
    out: fields.out,
    models: [bvlcModel("s3://b/m.onnx", "a".repeat(64))],
    crops: 10,
    engine: "onnxruntime",
    applyExifOrientation: false,
    maxPixels: 100_000_000,
    labels: "s3://b/val.txt",
    images: fields.batches.reduce((sum, batch) => sum + batch.keys.length, 0),
    batches: fields.batches,
  };
  return { ...defaults, ...fields };
}

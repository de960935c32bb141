import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App, Stack } from "aws-cdk-lib";
import * as s3 from "aws-cdk-lib/aws-s3";
import { afterAll, describe, expect, it } from "vitest";
import { Aggregator } from "../../infra/aggregator.js";
import { projectRoot } from "../../infra/project-root.js";
import { MANIFEST_KEY, batchResultKeyFor, digestOfManifest, serializeManifest } from "../../queue/manifest.js";
import type { Summary, TopEntry } from "../../scoring/records.js";
import { S3Location } from "../../storage/s3-location.js";
import { s3EventBody, startEmulator } from "../helpers/emulator.js";
import { bvlcModel, testManifest } from "../helpers/manifests.js";

/**
 * The aggregator Lambda bundled for real (local esbuild, as `cdk synth` does when esbuild is
 * installed), to see that its bundle carries the ReaL labels where the code looks for them:
 * data/real.json beside index.mjs (scoring/imagenet-validation.ts builtInDataPath).
 */
describe("the aggregator Lambda's bundle", () => {
  const outdir = mkdtempSync(join(tmpdir(), "cdk-bundle-"));
  let bundle = "";

  afterAll(() => {
    rmSync(outdir, { recursive: true, force: true });
  });

  it("holds data/real.json, byte for byte the package's, beside index.mjs", () => {
    // Prepare
    const app = new App({ outdir, builtinCloudFormationValidation: false });
    const stack = new Stack(app, "Bundle");
    const bucket = new s3.Bucket(stack, "Bucket");

    // Act
    new Aggregator(stack, "Aggregator", { bucket, projectRoot: projectRoot() });
    app.synth();

    // Assess
    const assets = readdirSync(outdir).filter((name) => name.startsWith("asset.") && existsSync(join(outdir, name, "index.mjs")));
    expect(assets).toHaveLength(1);
    const bundled = join(outdir, assets[0] as string, "data", "real.json");
    expect(readFileSync(bundled).equals(readFileSync(join(projectRoot(), "data", "real.json")))).toBe(true);
    bundle = join(outdir, assets[0] as string, "index.mjs");
  }, 300_000);

  it("finds it when run: the bundled handler's summary.json judges a validation-named key by ReaL", async () => {
    // Prepare: a run of one batch on the emulator, one image val 2 (ReaL [970, 795]) predicted 795.
    const emulator = await startEmulator();
    try {
      emulator.server.createBucket("b");
      const top5: TopEntry[] = [[795, 0.6, "x"], [970, 0.2, "y"], [1, 0.1, "z"], [2, 0.05, "w"], [3, 0.01, "v"]];
      const record = { key: "ILSVRC2012_val_00000002.JPEG", label: 970, width: 5, height: 5, top5: { "1": top5 }, labelProbability: { "1": 0.2 } };
      const manifest = testManifest({
        runId: "r",
        input: "s3://b/val",
        out: "s3://b/runs/r",
        models: [bvlcModel("s3://b/m.onnx", "f".repeat(64))],
        crops: 1,
        labels: "built-in ilsvrc2012_validation_synset_labels.txt",
        images: 1,
        batches: [{ id: "b00000", keys: [record.key], labels: [970] }],
      });
      const run = new S3Location("s3://b/runs/r", emulator.s3);
      await run.write(MANIFEST_KEY, serializeManifest(manifest));
      const batchKey = batchResultKeyFor(digestOfManifest(manifest), "b00000");
      await run.write(batchKey, `${JSON.stringify(record)}\n`);
      const event = s3EventBody("b", [{ key: `runs/r/${batchKey}`, size: 1 }]);

      // Act: the bundle alone, in its own process, as Lambda runs it.
      const script = `import(${JSON.stringify(bundle)}).then((m) => m.handler(JSON.parse(process.argv[1]))).then((o) => console.log(JSON.stringify(o)))`;
      // Asynchronously: the emulator answers from this process's event loop.
      const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script, event], {
        env: { ...process.env, ...emulator.env },
        encoding: "utf8",
      });

      // Assess: top-1 795 is in [970, 795]: ReaL top-1 error 0, original top-1 error 1.
      expect(stdout).toMatch(/"complete":true/);
      const summary = JSON.parse((await run.read("summary.json")).toString("utf8")) as Summary;
      expect(summary.schemes["1"]).toMatchObject({ top1Error: 1, real: { top1Error: 0, top5Error: 0, leftOut: 0 } });
      expect(summary.realLabels).toEqual({ source: "built-in real.json", images: 1 });
    } finally {
      await emulator.stop();
    }
  }, 120_000);
});

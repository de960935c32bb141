import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BackendUnavailableError, ConfigurationError } from "../../model/errors.js";
import { createOrtEngine, executionProvidersFor, type OrtDevice } from "../../model/ort/engine.js";
import { CROP_VALUES } from "../../model/image/sampling.js";
import { projectRoot } from "../../infra/project-root.js";

/** The real BVLC GoogLeNet from ../shared; this machine has onnxruntime's CPU provider only. */
const MODEL = join(projectRoot(), "..", "shared", "models", "bvlc-googlenet.onnx");
const bytes = readFileSync(MODEL);

describe("executionProvidersFor", () => {
  it.each([
    { device: "cpu" as OrtDevice, providers: ["cpu"] },
    { device: "cuda" as OrtDevice, providers: ["cuda", "cpu"] },
  ])("$device -> $providers", ({ device, providers }) => {
    expect(executionProvidersFor(device)).toEqual(providers);
  });
});

describe("createOrtEngine on a host without the CUDA add-on", () => {
  it("runs on the CPU by default and logs one line, of the graph edits", async () => {
    // Prepare
    const lines: string[] = [];

    // Act
    const engine = await createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", threads: 1, log: (l) => lines.push(l) });
    const scores = await engine.classify(new Float32Array(CROP_VALUES), 1);
    await engine.dispose();

    // Assess
    expect(engine.backend).toBe("cpu");
    expect(scores).toHaveLength(1000);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^googlenet-eval: onnxruntime graph edits for .*bvlc-googlenet\.onnx: on: LRN rewrite/);
  });

  it("refuses device cuda when the GPU is required, naming the model and what is missing", async () => {
    // Act
    const act = createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", threads: 1, device: "cuda", requireGpu: true, log: () => undefined });

    // Assess
    await expect(act).rejects.toThrow(BackendUnavailableError);
    await expect(act).rejects.toThrow(
      new RegExp(`^${MODEL.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: onnxruntime's CUDA execution provider could not start .*libonnxruntime_providers_cuda\\.so.*the GPU is required`),
    );
  });

  it("falls back to the CPU with a logged line when the GPU is not required", async () => {
    // Prepare
    const lines: string[] = [];

    // Act
    const engine = await createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", threads: 1, device: "cuda", log: (l) => lines.push(l) });
    await engine.dispose();

    // Assess
    expect(engine.backend).toBe("cpu");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/CUDA execution provider could not start .*; falling back to the CPU$/);
    // On the CPU it falls back to, the CPU's edits, checked as ever.
    expect(lines[1]).toMatch(/^googlenet-eval: onnxruntime graph edits for .*: on: LRN rewrite .*within 1e-5\)$/);
    expect(lines[2]).toBe(`googlenet-eval: onnxruntime execution providers cpu for ${MODEL}`);
  });

  it("rejects an unknown device with the valid choices", async () => {
    const act = createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", device: "gpu" as OrtDevice });
    await expect(act).rejects.toThrow(ConfigurationError);
    await expect(act).rejects.toThrow('unknown onnxruntime device "gpu"; use one of: cpu, cuda');
  });

  it.each([-1, 2.5])("rejects %s crops per stem part, naming the option", async (stemCropsPerPart) => {
    const act = createOrtEngine(bytes, { source: MODEL, flavour: "bvlc", stemCropsPerPart });
    await expect(act).rejects.toThrow(ConfigurationError);
    await expect(act).rejects.toThrow(`stemCropsPerPart must be a whole number of crops (0 runs the batch whole), got ${stemCropsPerPart}`);
  });
});

import { describe, expect, it } from "vitest";
import type { Engine } from "../../model/engine.js";
import { NUM_CLASSES } from "../../model/engine.js";
import { deviceOf, measureEngines } from "../../model/engine-meter.js";
import { preprocessFor } from "../../model/preprocess.js";

/** An engine whose calls take `ms` milliseconds each. */
function slowEngine(ms: number): Engine {
  return {
    engine: "onnxruntime",
    backend: "cpu",
    flavour: "bvlc",
    inputLayout: "nchw",
    preprocess: preprocessFor("bvlc"),
    async classify(_input: Float32Array, count: number): Promise<Float32Array> {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return new Float32Array(count * NUM_CLASSES);
    },
    async dispose(): Promise<void> {},
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("measureEngines", () => {
  it("counts crops and busy time, and the idle share of the stretch", async () => {
    // Prepare
    const engine = slowEngine(40);
    const usage = measureEngines([engine]);

    // Act: 80 ms busy in two calls, then 80 ms with nothing to do.
    await engine.classify(new Float32Array(0), 3);
    await engine.classify(new Float32Array(0), 5);
    await sleep(80);
    const result = usage.finish();

    // Assess
    expect(result.crops).toBe(8);
    expect(result.device).toBe("onnxruntime/cpu");
    expect(result.engineSeconds).toBeGreaterThanOrEqual(0.075);
    expect(result.wallSeconds).toBeGreaterThanOrEqual(result.engineSeconds + 0.075);
    expect(result.idleShare).toBeGreaterThan(0.3);
    expect(result.idleShare).toBeLessThan(0.7);
    expect(result.cropsPerSecond).toBeCloseTo(8 / result.wallSeconds, 0);
  });

  it("counts overlapping calls of one engine once, and keeps one counter per engine across stretches", async () => {
    // Prepare
    const engine = slowEngine(50);
    await measureEngines([engine]).finish();
    const usage = measureEngines([engine]);

    // Act: two calls at once, then nothing.
    await Promise.all([engine.classify(new Float32Array(0), 1), engine.classify(new Float32Array(0), 1)]);
    const result = usage.finish();

    // Assess: busy about 50 ms of about 50 ms, not 100.
    expect(result.crops).toBe(2);
    expect(result.engineSeconds).toBeLessThanOrEqual(result.wallSeconds);
    expect(result.idleShare).toBeLessThan(0.3);
  });

  it("counts the calls of an engine that cuts its own crops", async () => {
    // Prepare
    const engine = {
      ...slowEngine(10),
      classifyWindows: async (batch: readonly { crops: readonly unknown[] }[]) =>
        new Float32Array(batch.reduce((sum, { crops }) => sum + crops.length, 0) * NUM_CLASSES),
    };
    const usage = measureEngines([engine]);

    // Act
    await engine.classifyWindows([{ crops: [1, 2, 3] }, { crops: [4] }]);

    // Assess
    expect(usage.finish().crops).toBe(4);
  });

  it("names a GPU only where the engine runs on one", () => {
    // Act / Assess: no NVIDIA driver on the test machines.
    expect(deviceOf({ engine: "tfjs", backend: "wasm" })).toBe("tfjs/wasm");
    expect(deviceOf({ engine: "onnxruntime", backend: "cuda" })).toMatch(/^onnxruntime\/cuda on /);
  });
});

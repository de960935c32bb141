import { describe, expect, it } from "vitest";
import type { Engine } from "../../model/engine.js";
import { NUM_CLASSES } from "../../model/engine.js";
import { deviceOf, measureEngines } from "../../model/engine-meter.js";
import { preprocessFor } from "../../model/preprocess.js";

/** A clock the test moves by hand, so the figures are exact whatever the machine's load. */
function manualClock(): { readonly now: () => number; advance(ms: number): void } {
  let ms = 1_000;
  return { now: () => ms, advance: (by) => void (ms += by) };
}

/** An engine whose calls take `ms` milliseconds each of `clock`'s time. */
function slowEngine(ms: number, clock: ReturnType<typeof manualClock>): Engine {
  return {
    engine: "onnxruntime",
    backend: "cpu",
    flavour: "bvlc",
    inputLayout: "nchw",
    preprocess: preprocessFor("bvlc"),
    async classify(_input: Float32Array, count: number): Promise<Float32Array> {
      await Promise.resolve();
      clock.advance(ms);
      return new Float32Array(count * NUM_CLASSES);
    },
    async dispose(): Promise<void> {},
  };
}

describe("measureEngines", () => {
  it("counts crops and busy time, and the idle share of the stretch", async () => {
    // Prepare
    const clock = manualClock();
    const engine = slowEngine(40, clock);
    const usage = measureEngines([engine], clock.now);

    // Act: 80 ms busy in two calls, then 80 ms with nothing to do.
    await engine.classify(new Float32Array(0), 3);
    await engine.classify(new Float32Array(0), 5);
    clock.advance(80);
    const result = usage.finish();

    // Assess: 8 crops in 0.16 s is 50 crops/s; busy 0.08 s of 0.16 s leaves half idle.
    expect(result).toEqual({ device: "onnxruntime/cpu", crops: 8, wallSeconds: 0.16, engineSeconds: 0.08, cropsPerSecond: 50, idleShare: 0.5 });
  });

  it("counts overlapping calls of one engine once, and keeps one counter per engine across stretches", async () => {
    // Prepare: an engine whose calls wait for the test; a first stretch wraps it, so the
    // second stretch reads the same counter.
    const clock = manualClock();
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const engine: Engine = {
      ...slowEngine(0, clock),
      classify: async (_input: Float32Array, count: number) => {
        await gate;
        return new Float32Array(count * NUM_CLASSES);
      },
    };
    await measureEngines([engine], clock.now).finish();
    const usage = measureEngines([engine], clock.now);

    // Act: two calls in flight together for 50 ms, then 50 ms with nothing running.
    const calls = Promise.all([engine.classify(new Float32Array(0), 1), engine.classify(new Float32Array(0), 1)]);
    clock.advance(50);
    open();
    await calls;
    clock.advance(50);
    const result = usage.finish();

    // Assess: busy 50 ms of 100 (the overlap counted once), 2 crops.
    expect(result.crops).toBe(2);
    expect(result.engineSeconds).toBe(0.05);
    expect(result.wallSeconds).toBe(0.1);
    expect(result.idleShare).toBe(0.5);
  });

  it("counts the calls of an engine that cuts its own crops", async () => {
    // Prepare
    const engine = {
      ...slowEngine(10, manualClock()),
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

import { describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { loadEngine } from "../../model/load.js";

/** No model is read: the settings are refused before the bytes are looked at. */
const NO_BYTES = new Uint8Array(0);

describe("loadEngine's engine and backend", () => {
  it.each(["tensorflow", "wasm", "cpu"] as const)("refuses engine auto with backend %s, saying which settings to give", async (backend) => {
    // Act
    const load = loadEngine(NO_BYTES, { source: "m.onnx", engine: "auto", backend });
    // Assess
    await expect(load).rejects.toThrow(ConfigurationError);
    await expect(loadEngine(NO_BYTES, { source: "m.onnx", engine: "auto", backend })).rejects.toThrow(
      `backend ${backend} is a tfjs backend, but engine auto picks the engine itself (and may pick onnxruntime); ` +
        `set engine tfjs to run tfjs on ${backend}, or leave backend at auto`,
    );
  });
});

/**
 * Entry of one tfjs pool worker thread (model/tfjs/pool.ts starts it): builds its own GoogLeNet
 * on its own tfjs backend from the shared model bytes, then answers classify requests one at a
 * time, in the order they arrive.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { Engine } from "../engine.js";
import { createTfjsEngine } from "./engine.js";
import type { PoolReply, PoolRequest, PoolWorkerData, SerialisedError } from "./pool.js";

function serialise(error: unknown): SerialisedError {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, ...(error.stack !== undefined ? { stack: error.stack } : {}) };
  }
  return { name: "Error", message: String(error) };
}

const port = parentPort;
if (!port) throw new Error("model/tfjs/pool-worker is a worker thread entry; start it through createTfjsPoolEngine");
const data = workerData as PoolWorkerData;
const reply = (message: PoolReply, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

const logLines: string[] = [];
let engine: Engine | undefined;
try {
  // A private copy: the ONNX reader decodes strings with TextDecoder, which refuses shared memory.
  const bytes = new Uint8Array(data.modelBytes).slice();
  engine = await createTfjsEngine(bytes, {
    source: data.source,
    backend: data.backend,
    maxBatch: data.maxBatch,
    log: (line) => logLines.push(line),
  });
} catch (error) {
  reply({ type: "failed", error: serialise(error) });
}

if (engine) {
  const ready = engine;
  // tfjs shares one backend per thread; running requests one after another keeps their
  // intermediate tensors from competing for the wasm heap.
  let queue: Promise<void> = Promise.resolve();
  port.on("message", (request: PoolRequest) => {
    queue = queue.then(async () => {
      try {
        const output = await ready.classify(new Float32Array(request.input), request.count);
        const owned = output.byteOffset === 0 && output.byteLength === output.buffer.byteLength ? output : output.slice();
        reply({ type: "result", id: request.id, output: owned.buffer as ArrayBuffer }, [owned.buffer as ArrayBuffer]);
      } catch (error) {
        reply({ type: "error", id: request.id, error: serialise(error) });
      }
    });
  });
  reply({ type: "ready", backend: ready.backend, flavour: ready.flavour, log: logLines });
}

import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { BackendUnavailableError } from "../errors.js";

const { onnx } = onnxProto;

/** A one-node graph (Relu on a [1,4] tensor): enough for onnxruntime to start its CUDA provider. */
function probeGraph(): Uint8Array {
  const tensor = (name: string): onnxProto.onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: 1 }, { dimValue: 4 }] } } },
  });
  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: "", version: 13 }],
    producerName: "googlenet-eval gpu probe",
    graph: { name: "probe", input: [tensor("x")], output: [tensor("y")], node: [{ opType: "Relu", input: ["x"], output: ["y"] }] },
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * Starts onnxruntime's CUDA execution provider on a one-node graph and runs it once, so a
 * worker that must use the GPU learns that it cannot before it takes any work: the provider
 * can otherwise only be tried by loading a model, i.e. after a message was received.
 *
 * @throws BackendUnavailableError with onnxruntime's reason when the provider does not start
 *   (no CUDA add-on, a CUDA or cuDNN library missing, no GPU).
 */
export async function probeCudaProvider(): Promise<void> {
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(probeGraph(), { executionProviders: ["cuda"] });
    await session.run({ x: new ort.Tensor("float32", new Float32Array([-1, 1, -2, 2]), [1, 4]) });
  } catch (error) {
    throw new BackendUnavailableError(
      `a GPU is required, but onnxruntime's CUDA execution provider could not start (${(error as Error).message}); ` +
        "it needs onnxruntime-node's CUDA add-on (libonnxruntime_providers_cuda.so), CUDA 12, cuDNN 9 and an NVIDIA GPU",
      { cause: error },
    );
  } finally {
    await session?.release();
  }
}

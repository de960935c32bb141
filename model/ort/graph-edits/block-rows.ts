import onnxProto from "onnx-proto";
import type { LrnChain } from "./lrn-rewrite.js";
import { NCHWC_DOMAIN, addInitializer, isNchwc, type ModelProto, type NodeProto, type ProtoGraphIndex } from "./proto-graph.js";

const { onnx } = onnxProto;

/** The blocked convolutions that compute one chain's window sum from its square. */
export interface WindowSumConvs {
  /** The blocked x^2. */
  readonly square: string;
  /** In graph order; the last one writes the blocked base (its Sum input is the first's output). */
  readonly convs: readonly NodeProto[];
  readonly base: string;
}

/**
 * The convolutions onnxruntime made of the rewrite's window sum (one band, or two grouped bands
 * with the Add fused as the second one's Sum input), or why they are not recognised.
 */
export function findWindowSumConvs(blockedBase: string, index: ProtoGraphIndex): WindowSumConvs | string {
  const last = index.producer.get(blockedBase);
  if (!isNchwc(last, "Conv")) return "its window sum is not a blocked convolution";
  const square = last.input?.[0] ?? "";
  const convs = [last];
  const sum = last.input?.[3];
  if (sum) {
    const first = index.producer.get(sum);
    if (!isNchwc(first, "Conv") || first.input?.[0] !== square || (first.input?.length ?? 0) > 3) {
      return "its window sum adds something other than a band of the same square";
    }
    if ((index.consumers.get(sum) ?? []).length !== 1) return "a band of its window sum is read elsewhere";
    convs.unshift(first);
  }
  const squaring = index.producer.get(square);
  if (squaring?.opType !== "Mul" || (squaring.domain ?? "") !== "" || squaring.input?.[0] !== squaring.input?.[1]) {
    return "its window sum does not read the square of x";
  }
  if ((index.consumers.get(square) ?? []).some((reader) => !convs.includes(reader))) return "its square is read elsewhere";
  return { square, convs, base: blockedBase };
}

/**
 * Nodes that compute a chain's window sum as one convolution over the block index, replacing
 * the band convolutions, or why it cannot (with undefined nodes).
 *
 * Why: a blocked tensor [N, C, H, W] is stored as [N, C/B, H, W, B] (B = 8 or 16 channels per
 * block), which is also the blocked layout of [N, B, C/B, H*W]: the block index becomes a row.
 * Channel c = B*row + lane, so its window c-2..c+2 lies in its own row and the rows above and
 * below, and a 3x1 blocked convolution with B inputs and B outputs sums it, with the zero
 * padding of the first and last row standing for the channels past either end. That is 3*B
 * multiply-adds per value (48 for B = 16) where the band convolutions do 112 (two grouped
 * bands over 192 channels) or C (one band). The view is two Reshapes, which onnxruntime runs
 * without a copy; its shape is read from the tensor, so a batch of any size, empty too, fits.
 */
export function sumAcrossBlockRows(
  chain: LrnChain,
  windowSum: WindowSumConvs,
  blockSize: number,
  model: ModelProto,
): { nodes?: NodeProto[]; reason?: string } {
  const { channels, window } = chain;
  const before = Math.floor((window.size - 1) / 2);
  const after = Math.ceil((window.size - 1) / 2);
  if (channels % blockSize !== 0) return { reason: `${channels} channels are not whole blocks of ${blockSize}` };
  if (before > blockSize || after > blockSize) return { reason: `a window of ${window.size} reaches past the neighbouring block` };
  const prefix = `${chain.output}/block_rows`;
  const ints = (name: string, values: number[]) => addInitializer(model, `${prefix}/${name}`, [values.length], BigInt64Array.from(values.map(BigInt)));
  const weights = new Float32Array(3 * blockSize * blockSize);
  // onnxruntime's blocked filter layout (MLAS OIHWBiBo): [kernel row][input lane][output lane].
  for (let row = 0; row < 3; row++) {
    for (let inputLane = 0; inputLane < blockSize; inputLane++) {
      for (let outputLane = 0; outputLane < blockSize; outputLane++) {
        const offset = (row - 1) * blockSize + inputLane - outputLane;
        if (offset >= -before && offset <= after) weights[(row * blockSize + inputLane) * blockSize + outputLane] = window.alpha / window.size;
      }
    }
  }
  const filter = addInitializer(model, `${prefix}/filter`, [blockSize, blockSize, 3, 1], weights);
  const bias = addInitializer(model, `${prefix}/bias`, [blockSize], new Float32Array(blockSize).fill(window.bias));
  const tensor = (name: string) => `${prefix}/${name}`;
  const slice = (name: string, from: number, to: number): NodeProto => ({
    opType: "Slice",
    input: [tensor("shape"), ints(`${name}_from`, [from]), ints(`${name}_to`, [to]), ints(`${name}_axis`, [0])],
    output: [tensor(name)],
    name: tensor(name),
  });
  const intsType = onnx.AttributeProto.AttributeType.INTS;
  const nodes: NodeProto[] = [
    { opType: "Shape", input: [windowSum.square], output: [tensor("shape")], name: tensor("shape") },
    slice("batch", 0, 1),
    slice("height", 2, 3),
    slice("width", 3, 4),
    { opType: "Mul", input: [tensor("height"), tensor("width")], output: [tensor("pixels")], name: tensor("pixels") },
    {
      opType: "Concat",
      input: [tensor("batch"), ints("lanes_and_rows", [blockSize, channels / blockSize]), tensor("pixels")],
      output: [tensor("view")],
      name: tensor("view"),
      attribute: [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 0 }],
    },
    { opType: "Reshape", input: [windowSum.square, tensor("view")], output: [tensor("rows")], name: tensor("rows") },
    {
      opType: "Conv",
      domain: NCHWC_DOMAIN,
      input: [tensor("rows"), filter, bias],
      output: [tensor("sums")],
      name: tensor("sums"),
      attribute: [
        { name: "kernel_shape", type: intsType, ints: [3, 1] },
        { name: "pads", type: intsType, ints: [1, 0, 1, 0] },
      ],
    },
    { opType: "Reshape", input: [tensor("sums"), tensor("shape")], output: [windowSum.base], name: tensor("base") },
  ];
  return { nodes };
}

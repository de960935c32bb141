import type { InputAffine } from "./googlenet-weights.js";
import { describeNode, BINARY_ARITHMETIC, type GraphIndex } from "./graph-index.js";
import { intAttribute, intsAttribute, type OnnxNode } from "./read-onnx.js";

/**
 * The nodes between the graph input and conv1 (torchvision's `transform_input`), evaluated
 * symbolically: every tensor there is either a constant or, per channel, an affine function
 * of one input channel. Anything else before conv1 is a ModelFormatError naming the node.
 */

interface ChannelAffine {
  readonly source: number;
  readonly scale: number;
  readonly offset: number;
}

interface Constant {
  readonly kind: "const";
  readonly dims: readonly number[];
  readonly data: readonly number[];
}

/** A function of the input: per channel an affine of one input channel; rank 4 with a channel axis, or rank 3 after a scalar Gather. */
interface Affine {
  readonly kind: "affine";
  readonly channels: readonly ChannelAffine[];
  readonly channelAxis: boolean;
}

type SymbolicValue = Constant | Affine;

const MAX_INT32 = 2 ** 31 - 1;

/**
 * The per-channel affine that feeds `tensor` (conv1's input) from an input of `channels`
 * channels, or undefined when it is the identity.
 */
export function evaluateInputAffine(index: GraphIndex, tensor: string, channels: number): InputAffine | undefined {
  const result = new AffineEvaluator(index, channels).evaluate(tensor);
  if (result.kind !== "affine" || !result.channelAxis || result.channels.length !== 3) {
    throw index.error(`the input of the first convolution is not a 3-channel image (found ${result.kind === "affine" ? result.channels.length : 0} channels)`);
  }
  const [c0, c1, c2] = result.channels as [ChannelAffine, ChannelAffine, ChannelAffine];
  const identity = result.channels.every((ch, c) => ch.source === c && ch.scale === 1 && ch.offset === 0);
  if (identity) return undefined;
  return {
    source: [c0.source, c1.source, c2.source],
    scale: [c0.scale, c1.scale, c2.scale],
    offset: [c0.offset, c1.offset, c2.offset],
  };
}

class AffineEvaluator {
  private readonly memo = new Map<string, SymbolicValue>();
  private readonly source: string;

  constructor(
    private readonly index: GraphIndex,
    private readonly channels: number,
  ) {
    this.source = index.graph.source;
  }

  evaluate(name: string): SymbolicValue {
    const known = this.memo.get(name);
    if (known) return known;
    let value: SymbolicValue;
    if (name === this.index.inputName) {
      value = {
        kind: "affine",
        channelAxis: true,
        channels: Array.from({ length: this.channels }, (_, c) => ({ source: c, scale: 1, offset: 0 })),
      };
    } else if (this.index.isConstant(name)) {
      value = this.constOf(name);
    } else {
      const node = this.index.producer.get(name);
      if (!node) throw this.index.error(`tensor "${name}" is read but no node produces it`);
      value = this.evaluateNode(node);
    }
    this.memo.set(name, value);
    return value;
  }

  private evaluateNode(node: OnnxNode): SymbolicValue {
    const args = node.inputs.map((input) => (input ? this.evaluate(input) : undefined));
    const [x] = args;
    if (x?.kind !== "affine" && node.opType !== "Concat" && !BINARY_ARITHMETIC.has(node.opType)) {
      this.fail(node, "its input is not derived from the image");
    }
    switch (node.opType) {
      case "Identity":
      case "Cast":
        return x as SymbolicValue;
      case "Gather":
        return this.gather(node, x as Affine);
      case "Slice":
        return this.slice(node, x as Affine);
      case "Unsqueeze":
        return this.unsqueeze(node, x as Affine);
      case "Concat":
        return this.concat(node, args);
      case "Add":
      case "Sub":
      case "Mul":
      case "Div":
        return this.arithmetic(node, args);
      default:
        return this.fail(node, "this operator is not a per-channel affine");
    }
  }

  private gather(node: OnnxNode, affine: Affine): Affine {
    const axis = this.channelAxisOf(intAttribute(node, "axis", this.source) ?? 0, affine.channelAxis ? 4 : 3, node);
    if (!affine.channelAxis || axis !== 1) this.fail(node, "it gathers along an axis other than channels");
    const indices = this.constOf(node.inputs[1] ?? "");
    const picked = indices.data.map((i) => affine.channels[i < 0 ? i + affine.channels.length : i]);
    if (picked.some((c) => c === undefined)) this.fail(node, `index out of range [${indices.data.join(", ")}]`);
    return { kind: "affine", channels: picked as ChannelAffine[], channelAxis: indices.dims.length > 0 };
  }

  private slice(node: OnnxNode, affine: Affine): Affine {
    const starts = this.intsOf(node, 1, "starts") ?? [];
    const ends = this.intsOf(node, 2, "ends") ?? [];
    const rank = affine.channelAxis ? 4 : 3;
    const axes = this.intsOf(node, 3, "axes") ?? starts.map((_, i) => i);
    const steps = this.intsOf(node, 4, "steps") ?? starts.map(() => 1);
    let picked = affine.channels;
    axes.forEach((rawAxis, i) => {
      const axis = this.channelAxisOf(rawAxis, rank, node);
      const start = starts[i] ?? 0;
      const end = ends[i] ?? MAX_INT32;
      const step = steps[i] ?? 1;
      if (axis === 1 && affine.channelAxis) {
        picked = sliceChannels(picked, start, end, step);
      } else if (!(start === 0 && end >= MAX_INT32 && step === 1)) {
        this.fail(node, "it slices a spatial or batch axis");
      }
    });
    return { kind: "affine", channels: picked, channelAxis: affine.channelAxis };
  }

  private unsqueeze(node: OnnxNode, affine: Affine): Affine {
    const axes = this.intsOf(node, 1, "axes") ?? [];
    if (affine.channelAxis || axes.length !== 1 || this.channelAxisOf(axes[0] ?? 0, 4, node) !== 1) {
      this.fail(node, "it adds an axis other than the channel axis");
    }
    return { kind: "affine", channels: affine.channels, channelAxis: true };
  }

  private concat(node: OnnxNode, args: readonly (SymbolicValue | undefined)[]): Affine {
    const parts = args.filter((a): a is SymbolicValue => a !== undefined);
    if (parts.some((p) => p.kind !== "affine" || !p.channelAxis)) this.fail(node, "it joins something other than image channels");
    const axis = this.channelAxisOf(intAttribute(node, "axis", this.source) ?? 1, 4, node);
    if (axis !== 1) this.fail(node, "it concatenates along an axis other than channels");
    return {
      kind: "affine",
      channelAxis: true,
      channels: parts.flatMap((p) => (p.kind === "affine" ? p.channels : [])),
    };
  }

  /** Add, Sub, Mul or Div of the image-derived tensor and a constant, in either order. */
  private arithmetic(node: OnnxNode, args: readonly (SymbolicValue | undefined)[]): Affine {
    const [a, b] = args;
    const affineFirst = a?.kind === "affine";
    const affine = affineFirst ? a : b;
    const constant = affineFirst ? b : a;
    if (affine?.kind !== "affine" || constant?.kind !== "const") return this.fail(node, "it combines two image-derived tensors");
    const k = this.perChannel(constant, affine, node);
    return {
      kind: "affine",
      channelAxis: affine.channelAxis,
      channels: affine.channels.map((ch, c) => {
        const v = k[c] as number;
        switch (node.opType) {
          case "Add": return { ...ch, offset: ch.offset + v };
          case "Mul": return { ...ch, scale: ch.scale * v, offset: ch.offset * v };
          case "Sub": return affineFirst ? { ...ch, offset: ch.offset - v } : { ...ch, scale: -ch.scale, offset: v - ch.offset };
          default:
            if (!affineFirst) this.fail(node, "it divides by the image");
            return { ...ch, scale: ch.scale / v, offset: ch.offset / v };
        }
      }),
    };
  }

  /** A constant broadcast against [N, C, H, W] (or [N, H, W]) as one value per channel. */
  private perChannel(constant: Constant, affine: Affine, node: OnnxNode): number[] {
    const n = affine.channels.length;
    if (constant.data.length === 1) return Array.from({ length: n }, () => constant.data[0] as number);
    const rank = affine.channelAxis ? 4 : 3;
    const padded = [...Array.from({ length: Math.max(0, rank - constant.dims.length) }, () => 1), ...constant.dims];
    const varying = padded.map((d, axis) => (d !== 1 ? axis : -1)).filter((axis) => axis >= 0);
    if (!affine.channelAxis || padded.length !== 4 || varying.length !== 1 || varying[0] !== 1 || padded[1] !== n) {
      this.fail(node, `its constant of shape [${constant.dims.join(", ")}] is not per-channel`);
    }
    return [...constant.data];
  }

  private fail(node: OnnxNode, why: string): never {
    throw this.index.error(`${describeNode(node)} before the first convolution: ${why}; only a per-channel affine of the input (Gather, Slice, Unsqueeze, Mul, Add, Sub, Div, Concat) may come before conv1`);
  }

  private constOf(name: string): Constant {
    const value = this.index.constantOf(name);
    if (!value) throw this.index.error(`tensor "${name}" before the first convolution is neither constant nor derived from the input`);
    return { kind: "const", dims: value.dims, data: Array.from(value.data) };
  }

  private channelAxisOf(axis: number, rank: number, node: OnnxNode): number {
    const normalised = axis < 0 ? axis + rank : axis;
    if (normalised < 0 || normalised >= rank) this.fail(node, `axis ${axis} is out of range`);
    return normalised;
  }

  /** An int list given as the input at `position` (newer opsets) or as the attribute (older ones). */
  private intsOf(node: OnnxNode, position: number, attributeName: string): readonly number[] | undefined {
    const name = node.inputs[position];
    if (name) return this.constOf(name).data;
    return intsAttribute(node, attributeName, this.source);
  }
}

/** ONNX Slice along the channel axis: negative indices count from the end, then clamp. */
function sliceChannels(channels: readonly ChannelAffine[], start: number, end: number, step: number): ChannelAffine[] {
  const n = channels.length;
  const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + n : v, lo), hi);
  const from = step > 0 ? clamp(start, 0, n) : clamp(start, -1, n - 1);
  const to = step > 0 ? clamp(end, 0, n) : clamp(end, -1, n - 1);
  const picked: ChannelAffine[] = [];
  for (let c = from; step > 0 ? c < to : c > to; c += step) picked.push(channels[c] as ChannelAffine);
  return picked;
}

import { ModelFormatError } from "../errors.js";
import {
  INCEPTION_NAMES,
  type GoogLeNetWeights,
  type InceptionName,
  type InceptionWeights,
  type PoolSpec,
} from "./googlenet-weights.js";
import { describeNode, GraphIndex, type Step } from "./graph-index.js";
import { evaluateInputAffine } from "./input-affine.js";
import { ChainReader, readHead, readInception, type Flow } from "./layer-readers.js";
import { readOnnxModel, type OnnxGraph, type OnnxNode } from "./read-onnx.js";
import type { Flavour } from "../preprocess.js";

/**
 * GoogLeNet recognised from an ONNX graph's STRUCTURE (operator types, how tensors connect,
 * weight shapes), never from node or tensor names, so renamed, re-ordered or re-exported files
 * map the same way. Everything here is plain data; model/tfjs/googlenet.ts turns it into tensors.
 */

/** Facts about any ONNX image classifier, cheap to compute and never throwing on structure. */
export interface OnnxModelDescription {
  readonly inputName: string;
  /** As declared: numbers, symbolic names (batch "N") or undefined for unknown dimensions. */
  readonly inputShape: readonly (number | string | undefined)[];
  readonly outputName: string;
  /** Size of the output's last dimension (classes), when declared. */
  readonly outputSize: number | undefined;
  /** True when the output is already softmaxed (produced by a Softmax node). */
  readonly softmaxed: boolean;
  /** The recognised GoogLeNet flavour, or undefined for any other network. */
  readonly flavour: Flavour | undefined;
  /** Why the flavour is undefined (the structural mismatch found), for logs. */
  readonly unrecognisedReason?: string;
}

type Stem = Pick<GoogLeNetWeights, "conv1" | "pool1" | "lrn1" | "conv2Reduce" | "conv2" | "lrn2" | "pool2">;

/** The main chain from the graph input to its (first) output, or a ModelFormatError. */
function mainChain(index: GraphIndex): Step[] {
  const output = index.graph.outputs[0];
  if (!output) throw index.error("the graph has no output");
  return index.walkBack(output.name, (t) => t === index.inputName).steps;
}

function countModules(steps: readonly Step[]): number {
  return steps.filter((s) => s.kind === "concat" && s.branches.length === 4).length;
}

/** Input channels and side from the declared [N, 3, H, H] shape; 3 and 224 where it is symbolic. */
function inputGeometry(index: GraphIndex): { channels: number; size: number } {
  const input = index.graph.inputs[0];
  const shape = input?.shape ?? [];
  const channels = typeof shape[1] === "number" ? shape[1] : 3;
  const size = typeof shape[2] === "number" ? shape[2] : 224;
  if (channels !== 3 || (typeof shape[3] === "number" && shape[3] !== size)) {
    throw index.error(`input "${input?.name}" has shape [${shape.join(", ")}], expected [N, 3, H, H]`);
  }
  return { channels, size };
}

function readStem(reader: ChainReader, flow: Flow): Stem {
  const conv1 = reader.conv(flow, "conv1 7x7/2", 7);
  const pool1 = reader.pool(flow, "pool1 3x3/2");
  const lrn1 = reader.lrn();
  const conv2Reduce = reader.conv(flow, "conv2 1x1 reduce", 1);
  const conv2 = reader.conv(flow, "conv2 3x3", 3);
  const lrn2 = reader.lrn();
  const pool2 = reader.pool(flow, "pool2 3x3/2");
  return { conv1, pool1, ...(lrn1 ? { lrn1 } : {}), conv2Reduce, conv2, ...(lrn2 ? { lrn2 } : {}), pool2 };
}

/** The nine inception modules with the max pools before 4a and 5a. */
function readModules(reader: ChainReader, flow: Flow, index: GraphIndex): Pick<GoogLeNetWeights, "inception" | "pool3" | "pool4"> {
  const inception: Partial<Record<InceptionName, InceptionWeights>> = {};
  const between: PoolSpec[] = [];
  for (const [i, name] of INCEPTION_NAMES.entries()) {
    if (name === "4a" || name === "5a") between.push(reader.pool(flow, `the max pool before inception ${name}`));
    const step = reader.next();
    if (step.kind !== "concat" || step.branches.length !== 4) {
      throw index.error(`inception ${name}: expected module ${i + 1} of ${INCEPTION_NAMES.length} (a Concat of 4 branches), found ${step.kind === "node" ? describeNode(step.node) : `a Concat of ${step.branches.length}`}`);
    }
    inception[name] = readInception(step, name, flow, index);
  }
  const [pool3, pool4] = between as [PoolSpec, PoolSpec];
  return { inception: inception as Record<InceptionName, InceptionWeights>, pool3, pool4 };
}

/** The flavour decides the input convention, so every structural sign must agree on it. */
function flavourOf(stem: Stem, modules: Pick<GoogLeNetWeights, "inception" | "pool4">, index: GraphIndex): Flavour {
  const { lrn1, lrn2 } = stem;
  const { inception, pool4 } = modules;
  const fiveKernels = new Set(INCEPTION_NAMES.map((n) => inception[n].conv5x5.shape[0]));
  const signs = {
    bvlc: [fiveKernels.size === 1 && fiveKernels.has(5), lrn1 !== undefined && lrn2 !== undefined, pool4.kernel[0] === 3],
    torchvision: [fiveKernels.size === 1 && fiveKernels.has(3), lrn1 === undefined && lrn2 === undefined, pool4.kernel[0] === 2],
  };
  const flavour: Flavour | undefined = signs.bvlc.every(Boolean) ? "bvlc" : signs.torchvision.every(Boolean) ? "torchvision" : undefined;
  if (!flavour) {
    throw index.error(
      `a GoogLeNet of neither known flavour: "5x5" branch kernels ${[...fiveKernels].join("/")}, ` +
        `LRN ${lrn1 ? "present" : "absent"}, pool before 5a ${pool4.kernel.join("x")}; ` +
        `expected bvlc (5x5, LRN, 3x3 pool) or torchvision (3x3, no LRN, 2x2 pool)`,
    );
  }
  return flavour;
}

/**
 * Recognises GoogLeNet in an ONNX graph and returns its weights as plain data, or throws
 * ModelFormatError naming the file and the first structural mismatch.
 */
export function recogniseGoogLeNet(graph: OnnxGraph): GoogLeNetWeights {
  const index = new GraphIndex(graph);
  const steps = mainChain(index);
  const firstConv = steps.findIndex((s) => s.kind === "node" && s.node.opType === "Conv");
  const moduleCount = countModules(steps.slice(Math.max(firstConv, 0)));
  if (firstConv < 0 || moduleCount !== INCEPTION_NAMES.length) {
    throw index.error(`expected ${INCEPTION_NAMES.length} inception modules (Concat of 4 branches), found ${firstConv < 0 ? 0 : moduleCount}`);
  }
  const input = inputGeometry(index);
  const conv1Node = (steps[firstConv] as { node: OnnxNode }).node;
  const inputAffine = evaluateInputAffine(index, conv1Node.inputs[0] ?? "", input.channels);

  const reader = new ChainReader(steps.slice(firstConv), index, "stem");
  const flow: Flow = { ...input };
  const stem = readStem(reader, flow);
  const modules = readModules(reader, flow, index);
  const head = readHead(reader, flow, index);
  return {
    source: graph.source,
    flavour: flavourOf(stem, modules, index),
    inputSize: input.size,
    ...(inputAffine ? { inputAffine } : {}),
    ...stem,
    ...modules,
    ...head,
  };
}

/** Reads ONNX bytes and recognises GoogLeNet: the one call an engine needs. */
export function loadGoogLeNetWeights(bytes: Uint8Array, source: string): GoogLeNetWeights {
  return recogniseGoogLeNet(readOnnxModel(bytes, source));
}

/**
 * Cheap facts about any ONNX classifier for engines that run it as it is: never throws for an
 * unknown structure (flavour is then undefined with the reason), only for unreadable bytes.
 */
export function describeOnnxModel(bytes: Uint8Array, source: string): OnnxModelDescription {
  const graph = readOnnxModel(bytes, source);
  const input = graph.inputs[0];
  const output = graph.outputs[0];
  const producer = output ? graph.nodes.find((n) => n.outputs.includes(output.name)) : undefined;
  const last = output?.shape[output.shape.length - 1];
  let flavour: Flavour | undefined;
  let unrecognisedReason: string | undefined;
  try {
    flavour = recogniseGoogLeNet(graph).flavour;
  } catch (error) {
    if (!(error instanceof ModelFormatError)) throw error;
    unrecognisedReason = error.message;
  }
  return {
    inputName: input?.name ?? "",
    inputShape: input?.shape ?? [],
    outputName: output?.name ?? "",
    outputSize: typeof last === "number" ? last : undefined,
    softmaxed: producer?.opType === "Softmax",
    flavour,
    ...(unrecognisedReason ? { unrecognisedReason } : {}),
  };
}

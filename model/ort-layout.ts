import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { ModelFormatError } from "./errors.js";
import type { LrnChain } from "./onnx-optimize.js";

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;

/** The domain of onnxruntime's blocked-layout (NCHWc) operators in an optimized graph. */
const NCHWC_DOMAIN = "com.microsoft.nchwc";

/** Ops whose result does not depend on the memory layout their same-shaped operands share. */
const ELEMENTWISE = new Set(["Sqrt", "Mul", "Div", "Pow", "Log", "Exp"]);

/** What `keepLrnStepsBlocked` changed. */
export interface LayoutEdit {
  readonly bytes: Uint8Array;
  /** Outputs of the LRN chains now computed on the blocked tensors. */
  readonly blocked: readonly string[];
  /** ReorderInput/ReorderOutput nodes taken out. */
  readonly reordersRemoved: number;
  /** Chains left as onnxruntime laid them out, each with the reason. */
  readonly kept: readonly string[];
}

/**
 * Takes onnxruntime's own layout reorders out from around the elementwise steps of the
 * rewritten LRNs, in a graph onnxruntime has optimized (saved through `optimizedModelFilePath`).
 *
 * Why: on x86 onnxruntime runs convolutions and pools in its blocked NCHWc layout and converts
 * the band convolution and the square too, but has no blocked kernel for Sqrt or Div, so it
 * reorders x and the window sum back to NCHW before them and the result forward again after:
 * per 16 crops, three copies of 38.5 MB tensors at the second LRN and three of 12.8 MB at the
 * first (measured 1.23x -> 1.20x the LRN-free graph's time).
 * The steps are elementwise over tensors of one shape, so on the blocked tensors, which hold
 * the same values in another order, they compute the same values in that order. That holds
 * only without padding: a blocked tensor rounds the channels up to the block (8 or 16), and
 * the padding channels would give 0/0; a chain whose window sum has padded channels, whose
 * steps are not what `rewriteSlowNodes` wrote, or whose output feeds anything but
 * onnxruntime's ReorderInput, is left as it is.
 *
 * @throws ModelFormatError when the bytes are not an ONNX graph.
 */
export function keepLrnStepsBlocked(optimizedBytes: Uint8Array, chains: readonly LrnChain[], source: string): LayoutEdit {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(optimizedBytes);
  } catch (error) {
    throw new ModelFormatError(`${source}: onnxruntime's optimized graph is not readable ONNX (${(error as Error).message})`, {
      cause: error,
    });
  }
  const graph = model.graph;
  if (!graph?.node) throw new ModelFormatError(`${source}: onnxruntime's optimized graph has no nodes`);
  const index = indexGraph(graph);
  const blocked: string[] = [];
  const kept: string[] = [];
  const removed = new Set<NodeProto>();
  for (const chain of chains) {
    const plan = planChain(chain, index);
    if (typeof plan === "string") {
      kept.push(`${chain.output}: ${plan}`);
      continue;
    }
    applyPlan(plan, index, removed);
    blocked.push(chain.output);
  }
  if (removed.size === 0) return { bytes: optimizedBytes, blocked, reordersRemoved: 0, kept };
  graph.node = (graph.node as NodeProto[]).filter((node) => !removed.has(node));
  return { bytes: onnx.ModelProto.encode(model).finish(), blocked, reordersRemoved: removed.size, kept };
}

interface GraphIndex {
  readonly producer: Map<string, NodeProto>;
  readonly consumers: Map<string, NodeProto[]>;
  readonly initializerDims: Map<string, number[]>;
  readonly graphOutputs: Set<string>;
}

function indexGraph(graph: onnxProto.onnx.IGraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node ?? []) {
    for (const output of node.output ?? []) producer.set(output, node);
    for (const input of node.input ?? []) {
      const list = consumers.get(input) ?? [];
      list.push(node);
      consumers.set(input, list);
    }
  }
  const initializerDims = new Map<string, number[]>();
  for (const tensor of graph.initializer ?? []) initializerDims.set(tensor.name ?? "", (tensor.dims ?? []).map(Number));
  const graphOutputs = new Set((graph.output ?? []).map((output) => output.name ?? ""));
  return { producer, consumers, initializerDims, graphOutputs };
}

/** The rewiring of one chain: the blocked tensor for each reordered name, and the nodes to drop. */
interface ChainPlan {
  readonly steps: readonly NodeProto[];
  readonly blockedFor: ReadonlyMap<string, string>;
  readonly reorderOutputs: readonly NodeProto[];
  readonly output: string;
  readonly reorderInputs: readonly NodeProto[];
}

function isNchwc(node: NodeProto | undefined, opType: string): node is NodeProto {
  return node?.domain === NCHWC_DOMAIN && node.opType === opType;
}

function intAttribute(node: NodeProto, name: string): number | undefined {
  const attribute = node.attribute?.find((candidate) => candidate.name === name);
  return attribute?.i === undefined || attribute.i === null ? undefined : Number(attribute.i);
}

/** A plan, or why the chain stays as it is. */
function planChain(chain: LrnChain, index: GraphIndex): ChainPlan | string {
  const { producer, consumers, initializerDims, graphOutputs } = index;
  const blockedFor = new Map<string, string>();
  const reorderOutputs: NodeProto[] = [];
  for (const name of [chain.input, chain.base]) {
    const reorder = producer.get(name);
    if (!isNchwc(reorder, "ReorderOutput")) return `${name} is not reordered out of the blocked layout`;
    if ((intAttribute(reorder, "channels_last") ?? 0) !== 0 || intAttribute(reorder, "channels") !== chain.channels) {
      return `${name}'s reorder is not to NCHW with ${chain.channels} channels`;
    }
    blockedFor.set(name, reorder.input?.[0] ?? "");
    reorderOutputs.push(reorder);
  }
  // The window sum's blocked convolution: its filter's first dimension is the channel count
  // rounded up to the block, so equality means no padding (and then x has none either).
  const windowSum = producer.get(blockedFor.get(chain.base) ?? "");
  const filter = isNchwc(windowSum, "Conv") ? initializerDims.get(windowSum.input?.[1] ?? "") : undefined;
  if (filter?.[0] !== chain.channels) return `the window sum's blocked tensor is padded past ${chain.channels} channels`;

  const chainTensors = new Set([chain.input, chain.base, ...chain.steps]);
  const steps: NodeProto[] = [];
  for (const name of [...chain.steps, chain.output]) {
    const step = producer.get(name);
    if (!step || (step.domain ?? "") !== "" || !ELEMENTWISE.has(step.opType ?? "") || step.output?.length !== 1) {
      return `${name} is no longer made by an elementwise step`;
    }
    for (const input of step.input ?? []) {
      const dims = initializerDims.get(input);
      const scalar = dims !== undefined && dims.reduce((product, dim) => product * dim, 1) === 1;
      if (!chainTensors.has(input) && !scalar) return `${step.name ?? name} reads ${input}, outside the chain`;
    }
    steps.push(step);
  }
  if (graphOutputs.has(chain.output)) return `${chain.output} is a graph output`;
  const reorderInputs = consumers.get(chain.output) ?? [];
  for (const consumer of reorderInputs) {
    if (!isNchwc(consumer, "ReorderInput") || (intAttribute(consumer, "channels_last") ?? 0) !== 0) {
      return `${chain.output} feeds ${consumer.opType ?? "?"}, not a reorder into the blocked layout`;
    }
  }
  if (reorderInputs.length === 0) return `${chain.output} feeds nothing`;
  return { steps, blockedFor, reorderOutputs, output: chain.output, reorderInputs };
}

function applyPlan(plan: ChainPlan, index: GraphIndex, removed: Set<NodeProto>): void {
  const { consumers } = index;
  for (const step of plan.steps) step.input = (step.input ?? []).map((input) => plan.blockedFor.get(input) ?? input);
  for (const reorder of plan.reorderInputs) {
    const reordered = reorder.output?.[0] ?? "";
    for (const consumer of consumers.get(reordered) ?? []) {
      consumer.input = (consumer.input ?? []).map((input) => (input === reordered ? plan.output : input));
    }
    removed.add(reorder);
  }
  // A reorder of x stays when something outside the chain still reads x in NCHW.
  for (const reorder of plan.reorderOutputs) {
    const name = reorder.output?.[0] ?? "";
    const stillRead = (consumers.get(name) ?? []).some((consumer) => !plan.steps.includes(consumer) && !removed.has(consumer));
    if (!stillRead && !index.graphOutputs.has(name)) removed.add(reorder);
  }
}

/**
 * A CPU session whose rewritten LRNs run their elementwise steps on onnxruntime's blocked
 * tensors: a first session has onnxruntime optimize the graph and save it (its blocked layout
 * depends on this CPU, so the file is made here, each time, and deleted), `keepLrnStepsBlocked`
 * takes the reorders out, and the session returned loads the edited graph with the optimizer
 * off (the graph is already optimized; a second pass would only redo the work). Where nothing
 * is edited (a CPU without the blocked layout) the graph is loaded as it is, with
 * `sessionOptions` as given; so too, with a line saying why, when the temporary folder, the
 * edit or the edited graph fails: an exact graph that is only slower.
 */
export async function createCpuSession(
  graphBytes: Uint8Array,
  chains: readonly LrnChain[],
  sessionOptions: ort.InferenceSession.SessionOptions,
  source: string,
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<{ session: ort.InferenceSession; layout?: LayoutEdit }> {
  const asItIs = async (error?: unknown) => {
    if (error !== undefined) {
      log(`googlenet-eval: ${source}: the LRN steps keep onnxruntime's layout reorders (${(error as Error).message})`);
    }
    return ort.InferenceSession.create(graphBytes, sessionOptions);
  };
  let folder: string;
  try {
    folder = await mkdtemp(join(tmpdir(), "googlenet-eval-ort-"));
  } catch (error) {
    return { session: await asItIs(error) };
  }
  let layout: LayoutEdit;
  try {
    const optimizedPath = join(folder, "optimized.onnx");
    // A graph onnxruntime cannot load fails here, as it would without the edit.
    const optimizing = await ort.InferenceSession.create(graphBytes, {
      ...sessionOptions,
      enableProfiling: false,
      optimizedModelFilePath: optimizedPath,
      // Errors only: onnxruntime warns that a saved graph with blocked-layout nodes fits this
      // CPU alone, which is how it is used. This session only optimizes; it runs nothing.
      logSeverityLevel: 3,
    });
    await optimizing.release();
    try {
      layout = keepLrnStepsBlocked(await readFile(optimizedPath), chains, source);
    } catch (error) {
      return { session: await asItIs(error) };
    }
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
  if (layout.reordersRemoved === 0) return { session: await asItIs(), layout };
  try {
    return { session: await ort.InferenceSession.create(layout.bytes, { ...sessionOptions, graphOptimizationLevel: "disabled" }), layout };
  } catch (error) {
    return { session: await asItIs(error) };
  }
}

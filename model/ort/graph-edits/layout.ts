import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import type { LrnChain } from "./lrn-rewrite.js";
import { findWindowSumConvs, sumAcrossBlockRows } from "./block-rows.js";
import { runStemInParts, type StemSplit } from "./stem.js";
import {
  bytesDigest,
  decodeOptimizedGraph,
  dropUnusedInitializers,
  encodeModel,
  graphDigest,
  indexProtoGraph,
  protoIntAttribute,
  POINTWISE_OPS,
  isNchwc,
  type ModelProto,
  type NodeProto,
  type ProtoGraphIndex,
} from "./proto-graph.js";

const { onnx } = onnxProto;

/** What `keepLrnStepsBlocked` changed. */
export interface LayoutEdit {
  readonly bytes: Uint8Array;
  /** Outputs of the LRN chains now computed on the blocked tensors. */
  readonly blocked: readonly string[];
  /** ReorderInput/ReorderOutput nodes taken out. */
  readonly reordersRemoved: number;
  /** Chains left as onnxruntime laid them out, each with the reason. */
  readonly kept: readonly string[];
  /** Blocked chains whose window sum is one convolution over the block rows (model/ort/graph-edits/block-rows.ts). */
  readonly windowSumRows: readonly string[];
  /** Why a blocked chain kept its band convolutions. */
  readonly bandsKept: readonly string[];
}

/** How `keepLrnStepsBlocked` edits beyond taking the reorders out. */
export interface LayoutOptions {
  /**
   * onnxruntime's channels per block on this CPU (see `nchwcBlockSize`); with it each blocked
   * chain's window sum becomes one convolution over the block rows. Default: none (the band
   * convolutions stay).
   */
  readonly blockSize?: number;
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
 * onnxruntime's ReorderInput, is left as it is. With `options.blockSize`, a blocked chain's
 * window sum also becomes one convolution over the block rows (model/ort/graph-edits/block-rows.ts).
 *
 * @throws ModelFormatError when the bytes are not an ONNX graph.
 */
export function keepLrnStepsBlocked(
  optimizedBytes: Uint8Array,
  chains: readonly LrnChain[],
  source: string,
  options: LayoutOptions = {},
): LayoutEdit {
  const model = decodeOptimizedGraph(optimizedBytes, source);
  const edit = blockLrnSteps(model, chains, options);
  return { ...edit, bytes: edit.reordersRemoved === 0 ? optimizedBytes : encodeModel(model) };
}

/** `keepLrnStepsBlocked` on a decoded graph, edited in place. */
function blockLrnSteps(model: ModelProto, chains: readonly LrnChain[], options: LayoutOptions): Omit<LayoutEdit, "bytes"> {
  const graph = model.graph as onnxProto.onnx.GraphProto;
  const index = indexProtoGraph(graph);
  const blocked: string[] = [];
  const kept: string[] = [];
  const windowSumRows: string[] = [];
  const bandsKept: string[] = [];
  const removed = new Set<NodeProto>();
  const replaced = new Map<NodeProto, NodeProto[]>();
  for (const chain of chains) {
    const plan = planChain(chain, index);
    if (typeof plan === "string") {
      kept.push(`${chain.output}: ${plan}`);
      continue;
    }
    applyPlan(plan, index, removed);
    blocked.push(chain.output);
    if (options.blockSize === undefined) continue;
    const windowSum = findWindowSumConvs(plan.blockedFor.get(chain.base) ?? "", index);
    const rows = typeof windowSum === "string" ? { reason: windowSum } : sumAcrossBlockRows(chain, windowSum, options.blockSize, model);
    if (!rows.nodes || typeof windowSum === "string") {
      bandsKept.push(`${chain.output}: ${rows.reason ?? "?"}`);
      continue;
    }
    const [first, ...others] = windowSum.convs as [NodeProto, ...NodeProto[]];
    replaced.set(first, rows.nodes);
    for (const conv of others) removed.add(conv);
    windowSumRows.push(chain.output);
  }
  if (removed.size > 0 || replaced.size > 0) {
    graph.node = graph.node.flatMap((node) => replaced.get(node) ?? (removed.has(node) ? [] : [node]));
    dropUnusedInitializers(graph);
  }
  const reordersRemoved = [...removed].filter((node) => isNchwc(node, "ReorderInput") || isNchwc(node, "ReorderOutput")).length;
  return { blocked, reordersRemoved, kept, windowSumRows, bandsKept };
}

/** The rewiring of one chain: the blocked tensor for each reordered name, and the nodes to drop. */
interface ChainPlan {
  readonly steps: readonly NodeProto[];
  readonly blockedFor: ReadonlyMap<string, string>;
  readonly reorderOutputs: readonly NodeProto[];
  readonly output: string;
  readonly reorderInputs: readonly NodeProto[];
}

/** A plan, or why the chain stays as it is. */
function planChain(chain: LrnChain, index: ProtoGraphIndex): ChainPlan | string {
  const { producer, consumers, initializerDims, graphOutputs } = index;
  const blockedFor = new Map<string, string>();
  const reorderOutputs: NodeProto[] = [];
  for (const name of [chain.input, chain.base]) {
    const reorder = producer.get(name);
    if (!isNchwc(reorder, "ReorderOutput")) return `${name} is not reordered out of the blocked layout`;
    if ((protoIntAttribute(reorder, "channels_last") ?? 0) !== 0 || protoIntAttribute(reorder, "channels") !== chain.channels) {
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
    if (!step || (step.domain ?? "") !== "" || !POINTWISE_OPS.has(step.opType ?? "") || step.output?.length !== 1) {
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
    if (!isNchwc(consumer, "ReorderInput") || (protoIntAttribute(consumer, "channels_last") ?? 0) !== 0) {
      return `${chain.output} feeds ${consumer.opType ?? "?"}, not a reorder into the blocked layout`;
    }
  }
  if (reorderInputs.length === 0) return `${chain.output} feeds nothing`;
  return { steps, blockedFor, reorderOutputs, output: chain.output, reorderInputs };
}

function applyPlan(plan: ChainPlan, index: ProtoGraphIndex, removed: Set<NodeProto>): void {
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

/** How `createCpuSession` edits beyond taking the reorders out. */
export interface CpuSessionOptions {
  /**
   * Crops per part of the stem run part by part (model/ort/graph-edits/stem.ts), for graphs whose LRN steps
   * run blocked; 0 keeps the batch whole. Default: 4 (with `STEM_PARTS` parts, the scorer's
   * batches of 16 crops; a larger batch's rest goes to the last part).
   */
  readonly stemCropsPerPart?: number;
  /** Sum each blocked window over the block rows (model/ort/graph-edits/block-rows.ts). Default: true. */
  readonly blockRows?: boolean;
  /**
   * Called with the edited graph just before it loads. For tests only: one that corrupts an
   * edit here shows the load-time probe (model/ort/graph-edits/checked-session.ts) catching it, with the production
   * edits themselves untouched. Default: none.
   */
  readonly editedGraphHook?: (model: ModelProto) => void;
}

export const STEM_PARTS = 4;
export const DEFAULT_STEM_CROPS_PER_PART = 4;

/** Everything `createCpuSession` changed in the optimized graph. */
export interface CpuSessionEdit extends Omit<LayoutEdit, "bytes"> {
  readonly stem?: StemSplit;
  /** Why the stem runs the batch whole, when it was to be split. */
  readonly stemKept?: string;
}

/**
 * A CPU session whose rewritten LRNs run their elementwise steps on onnxruntime's blocked
 * tensors: a first session has onnxruntime optimize the graph and save it (its blocked layout
 * depends on this CPU, so the file is made here, each time, and deleted), `keepLrnStepsBlocked`
 * takes the reorders out and sums the windows over the block rows, `runStemInParts` runs the
 * layers up to the first branch after the LRNs a few crops at a time, and the session returned
 * loads the edited graph with the optimizer off (the graph is already optimized; a second pass
 * would only redo the work). Where nothing is edited (a CPU without the blocked layout) the
 * graph is loaded as it is, with `sessionOptions` as given; so too, with a line saying why,
 * when the temporary folder, the edit or the edited graph fails: an exact graph that is only
 * slower. A digest of the graph the session runs comes with it, computed on demand: the probe
 * cache (probe-cache.ts) keys a passed probe on the graph that actually ran.
 */
export async function createCpuSession(
  graphBytes: Uint8Array,
  chains: readonly LrnChain[],
  sessionOptions: ort.InferenceSession.SessionOptions,
  source: string,
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
  options: CpuSessionOptions = {},
): Promise<{ session: ort.InferenceSession; layout?: CpuSessionEdit; digest: () => string }> {
  const asItIs = async (error?: unknown) => {
    if (error !== undefined) {
      log(`googlenet-eval: ${source}: the LRN steps keep onnxruntime's layout reorders (${(error as Error).message})`);
    }
    return { session: await ort.InferenceSession.create(graphBytes, sessionOptions), digest: () => bytesDigest(graphBytes) };
  };
  let folder: string;
  try {
    folder = await mkdtemp(join(tmpdir(), "googlenet-eval-ort-"));
  } catch (error) {
    return asItIs(error);
  }
  let edit: { model: ModelProto; layout: CpuSessionEdit };
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
      const blockSize = options.blockRows === false ? undefined : await nchwcBlockSize(folder);
      edit = editOptimizedGraph(await readFile(optimizedPath), chains, source, blockSize, options);
    } catch (error) {
      return asItIs(error);
    }
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
  const { model, layout } = edit;
  if (layout.reordersRemoved === 0 && !layout.stem) return { ...(await asItIs()), layout };
  try {
    options.editedGraphHook?.(model);
    const session = await ort.InferenceSession.create(encodeModel(model), { ...sessionOptions, graphOptimizationLevel: "disabled" });
    return { session, layout, digest: () => graphDigest(model) };
  } catch (error) {
    return asItIs(error);
  }
}

function editOptimizedGraph(
  optimizedBytes: Uint8Array,
  chains: readonly LrnChain[],
  source: string,
  blockSize: number | undefined,
  options: CpuSessionOptions,
): { model: ModelProto; layout: CpuSessionEdit } {
  const model = decodeOptimizedGraph(optimizedBytes, source);
  const layout: CpuSessionEdit = blockLrnSteps(model, chains, { blockSize });
  const cropsPerPart = options.stemCropsPerPart ?? DEFAULT_STEM_CROPS_PER_PART;
  const lastBlocked = layout.blocked[layout.blocked.length - 1];
  if (cropsPerPart === 0 || !lastBlocked) return { model, layout };
  const stem = runStemInParts(model, lastBlocked, cropsPerPart, STEM_PARTS);
  return { model, layout: typeof stem === "string" ? { ...layout, stemKept: stem } : { ...layout, stem } };
}

let blockSizeProbe: Promise<number | undefined> | undefined;

/**
 * onnxruntime's channels per block in its NCHWc layout on this CPU (MLAS: 16 with AVX-512, 8
 * with AVX2), or undefined without that layout. onnxruntime does not report it, so a one-node
 * graph is optimized once per process: a convolution with 4 outputs gets a filter padded to one
 * block, whose first dimension is the block size.
 */
export function nchwcBlockSize(folder: string): Promise<number | undefined> {
  blockSizeProbe ??= probeBlockSize(folder).catch(() => undefined);
  return blockSizeProbe;
}

async function probeBlockSize(folder: string): Promise<number | undefined> {
  const path = join(folder, "block-probe.onnx");
  const value = (name: string, dims: number[]) => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((dimValue) => ({ dimValue })) } } },
  });
  const probe = encodeModel(
    onnx.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ version: 12 }],
      graph: {
        name: "block_probe",
        node: [{ opType: "Conv", input: ["x", "w"], output: ["y"], attribute: [{ name: "kernel_shape", type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1] }] }],
        initializer: [{ name: "w", dims: [4, 32, 1, 1], dataType: onnx.TensorProto.DataType.FLOAT, floatData: new Array(4 * 32).fill(1) }],
        input: [value("x", [1, 32, 4, 4])],
        output: [value("y", [1, 4, 4, 4])],
      },
    }),
  );
  const session = await ort.InferenceSession.create(probe, {
    intraOpNumThreads: 1,
    graphOptimizationLevel: "all",
    optimizedModelFilePath: path,
    logSeverityLevel: 3,
  });
  await session.release();
  const graph = decodeOptimizedGraph(await readFile(path), "block probe").graph;
  const conv = graph?.node?.find((node) => isNchwc(node, "Conv"));
  const filter = graph?.initializer?.find((tensor) => tensor.name === conv?.input?.[1]);
  const blockSize = Number(filter?.dims?.[0] ?? 0);
  return blockSize >= 4 ? blockSize : undefined;
}

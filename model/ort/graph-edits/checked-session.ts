import * as ort from "onnxruntime-node";
import type { RewriteReport } from "./lrn-rewrite.js";
import { createCpuSession, DEFAULT_STEM_CROPS_PER_PART, STEM_PARTS, type CpuSessionEdit, type CpuSessionOptions } from "./layout.js";
import { PROBE_TOLERANCE, fixedBatchOf, probeCrops, probeProbabilities, relativeDifference } from "./probe.js";
import { bytesDigest } from "./proto-graph.js";
import { openProbeCache, probeKey, type ProbeCache, type ProbeKey } from "./probe-cache.js";
import type { Preprocess } from "../../preprocess.js";

/** What `createCheckedCpuSession` edits, and how it checks the edits. */
export interface CheckedEditsOptions extends CpuSessionOptions {
  /** The path or URL the bytes came from, for messages. */
  readonly source: string;
  /** The flavour's input convention, for the probe crops. */
  readonly preprocess: Preprocess;
  /** The LRN rewrite of the bytes (model/ort/graph-edits/lrn-rewrite.ts), or undefined when it is off. */
  readonly rewrite?: RewriteReport;
  /** Edit the optimized graph's layout at all (model/ort/graph-edits/layout.ts). */
  readonly blockedLrnSteps: boolean;
  /**
   * The folder where passed probes are recorded (model/ort/graph-edits/probe-cache.ts), so that a
   * later load of the same edited graph, from the same file, by the same onnxruntime on the same
   * CPU skips the probe. Default: none, every load probes.
   */
  readonly probeCache?: string;
  /** Where the probe cache's lines go (a record ignored, a folder not writable). Default: stderr. */
  readonly log?: (line: string) => void;
}

/** A CPU session and the one-line account of its edits ("on: ...; off: ...; probe: ..."). */
export interface CheckedSession {
  readonly session: ort.InferenceSession;
  readonly summary: string;
}

const tolerance = PROBE_TOLERANCE.toExponential(0);

/**
 * A CPU session of the model with the LRN rewrite and the layout edits, kept only where a probe
 * batch gives the same probabilities through them as through the graph as stored (within
 * `PROBE_TOLERANCE`, relative): the layout edits rewrite the graph onnxruntime optimized for
 * this CPU, down to MLAS's blocked filter layout, so an onnxruntime that lays out or computes
 * anything differently would otherwise load fine and score wrong. When the edits disagree, the
 * rewrite alone is checked the same way (it is plain ONNX, so it does not depend on
 * onnxruntime's internals), and when that disagrees too the graph as stored runs. The session
 * of the graph as stored is created for the comparison and released after it, or kept as the
 * answer. With `probeCache`, a pass is recorded under everything it depends on
 * (probe-cache.ts), and a later load whose key matches skips the probe and the session of the
 * graph as stored, which is most of a load's time.
 *
 * @throws whatever onnxruntime throws when the graph (as stored or rewritten) does not load.
 */
export async function createCheckedCpuSession(
  modelBytes: Uint8Array,
  sessionOptions: ort.InferenceSession.SessionOptions,
  options: CheckedEditsOptions,
): Promise<CheckedSession> {
  const { rewrite, source } = options;
  const rewritten = rewrite !== undefined && rewrite.lrnRewritten > 0;
  const graphBytes = rewritten ? rewrite.bytes : modelBytes;
  const chains = options.blockedLrnSteps ? (rewrite?.lrnChains ?? []) : [];
  const layoutWanted = chains.length > 0;
  if (!rewritten && !layoutWanted) {
    const why = rewrite === undefined ? "turned off in the engine options" : rewrite.lrnKept.length > 0 ? rewrite.lrnKept.join("; ") : "no LRN to rewrite";
    return { session: await ort.InferenceSession.create(modelBytes, sessionOptions), summary: `none (${why})` };
  }
  const notes: string[] = [];
  const edited = layoutWanted
    ? await createCpuSession(graphBytes, chains, sessionOptions, source, (line) => notes.push(line.replace(`googlenet-eval: ${source}: `, "")), options)
    : { session: await ort.InferenceSession.create(graphBytes, sessionOptions), digest: () => bytesDigest(graphBytes) };
  const { on, off } = describeEdits(options, edited.layout, notes);
  const layoutApplied = edited.layout !== undefined && (edited.layout.reordersRemoved > 0 || edited.layout.stem !== undefined);
  const cached = await passedEarlier(modelBytes, edited.digest, sessionOptions, options);
  if (cached.earlier !== undefined) return { session: edited.session, summary: line(on, off, cached.earlier) };

  let reference: ort.InferenceSession;
  try {
    reference = await ort.InferenceSession.create(modelBytes, sessionOptions);
  } catch (error) {
    await edited.session.release();
    throw error;
  }
  const probe = await probeAgainst(reference, options);
  if (typeof probe === "string") {
    await edited.session.release();
    return { session: reference, summary: `off (${probe})` };
  }
  const full = await probe.check(edited.session);
  if (full.agrees) {
    await reference.release();
    await cached.record?.(`${probe.label}: ${full.text}`);
    return { session: edited.session, summary: line(on, off, `${probe.label}: ${full.text}`) };
  }
  await edited.session.release();
  if (layoutApplied && rewritten) {
    // It loaded once already (the first session was made from it), so a failure here is rare;
    // the graph as stored is the answer then too.
    const alone = await ort.InferenceSession.create(graphBytes, sessionOptions).catch(() => undefined);
    const check = alone ? await probe.check(alone) : { agrees: false, text: "" };
    if (alone && check.agrees) {
      await reference.release();
      const layoutEdits = on.filter((edit) => !edit.startsWith("LRN rewrite")).map((edit) => edit.replace(/ \(.*$/, ""));
      const dropped = `${layoutEdits.join(", ")} (${probe.label}: ${full.text} with them)`;
      return { session: alone, summary: line(on.filter((edit) => edit.startsWith("LRN rewrite")), [dropped, ...off], `LRN rewrite alone: ${check.text}`) };
    }
    await alone?.release();
  }
  return { session: reference, summary: `off: the graph runs as stored (${probe.label}: ${full.text} with ${on.join(", ")})` };
}

/**
 * The probe line of a pass recorded for this load's key, or how to record this load's pass.
 * Only the whole set of edits passing is recorded: a fallback after a failed probe (the LRN
 * rewrite alone, the graph as stored) is probed again at every load, so it is never hidden.
 */
async function passedEarlier(
  modelBytes: Uint8Array,
  editedGraph: () => string,
  sessionOptions: ort.InferenceSession.SessionOptions,
  options: CheckedEditsOptions,
): Promise<{ earlier?: string; record?: (result: string) => Promise<void> }> {
  if (options.probeCache === undefined) return {};
  const log = options.log ?? ((text: string) => process.stderr.write(`${text}\n`));
  const cache: ProbeCache = openProbeCache(options.probeCache, log);
  const edits = {
    lrnRewrite: options.rewrite !== undefined,
    blockedLrnSteps: options.blockedLrnSteps,
    blockRows: options.blockRows ?? true,
    stemCropsPerPart: options.stemCropsPerPart ?? DEFAULT_STEM_CROPS_PER_PART,
  };
  let key: ProbeKey;
  try {
    key = probeKey(modelBytes, editedGraph(), sessionOptions, edits);
  } catch (error) {
    // The cache only saves time: whatever goes wrong with it, the probe runs as without it.
    log(`googlenet-eval: probe cache not used (${(error as Error).message}); probing`);
    return {};
  }
  const earlier = await cache.find(key);
  if (earlier === undefined) return { record: (result) => cache.record(key, result) };
  return { earlier: `passed earlier for this model and onnxruntime ${key.onnxruntime} (cache file ${earlier.file}): ${earlier.result}` };
}

function line(on: readonly string[], off: readonly string[], probe: string): string {
  return [`on: ${on.join(", ") || "none"}`, ...(off.length > 0 ? [`off: ${off.join(", ")}`] : []), `probe: ${probe}`].join("; ");
}

interface Probe {
  readonly label: string;
  check(session: ort.InferenceSession): Promise<{ agrees: boolean; text: string }>;
}

/**
 * The probe: crops that fill every part of the stem (model/ort/graph-edits/stem.ts), and the graph as
 * stored's probabilities for them; or why the graph as stored could not run them.
 */
async function probeAgainst(reference: ort.InferenceSession, options: CheckedEditsOptions): Promise<Probe | string> {
  const cropsPerPart = options.stemCropsPerPart ?? DEFAULT_STEM_CROPS_PER_PART;
  // One crop in the open-ended last part is enough to run it; a batch of 1 would miss the
  // batch arithmetic of the block-row view.
  const count = fixedBatchOf(reference) ?? Math.max(2, (STEM_PARTS - 1) * cropsPerPart + 1);
  const crops = probeCrops(count, options.preprocess);
  let expected: Float32Array;
  try {
    expected = await probeProbabilities(reference, crops, count);
  } catch (error) {
    return `the probe did not run through the graph as stored: ${(error as Error).message}`;
  }
  // Nothing can be judged against a graph that gives no numbers; the scorer reports its faults.
  if (!expected.every(Number.isFinite)) return "the graph as stored gives the probe non-finite probabilities, so no edit can be checked";
  return {
    label: `${count} dead-leaves crops`,
    async check(session) {
      let actual: Float32Array;
      try {
        actual = await probeProbabilities(session, crops, count);
      } catch (error) {
        return { agrees: false, text: `failed (${(error as Error).message.split("\n")[0] ?? ""})` };
      }
      if (actual.length !== expected.length) {
        return { agrees: false, text: `${actual.length} values where the graph as stored gives ${expected.length}` };
      }
      const difference = relativeDifference(actual, expected);
      const agrees = difference <= PROBE_TOLERANCE;
      return { agrees, text: `largest relative difference ${difference.toExponential(1)} from the graph as stored (${agrees ? "within" : "over"} ${tolerance})` };
    },
  };
}

/** The edits in the session, by name, and those not made with the reason. */
function describeEdits(options: CheckedEditsOptions, layout: CpuSessionEdit | undefined, notes: readonly string[]): { on: string[]; off: string[] } {
  const on: string[] = [];
  const off: string[] = [];
  const { rewrite } = options;
  if (rewrite && rewrite.lrnRewritten > 0) on.push(`LRN rewrite (${rewrite.lrnRewritten} LRNs)`);
  off.push(...(rewrite?.lrnKept ?? []).map((reason) => `LRN rewrite of ${reason}`));
  if (!options.blockedLrnSteps) {
    off.push("blocked LRN steps, block-row window sums, stem in parts (turned off in the engine options)");
    return { on, off };
  }
  if (!layout) {
    off.push(`blocked LRN steps, block-row window sums, stem in parts (${notes.join("; ") || "not made"})`);
    return { on, off };
  }
  if (layout.blocked.length > 0) on.push(`blocked LRN steps (${layout.blocked.length}, ${layout.reordersRemoved} reorders removed)`);
  else if (layout.kept.length === 0) off.push("blocked LRN steps (onnxruntime lays out nothing in blocks on this CPU)");
  off.push(...layout.kept.map((reason) => `blocked LRN steps of ${reason}`));
  if (layout.windowSumRows.length > 0) on.push(`block-row window sums (${layout.windowSumRows.length})`);
  else if (layout.blocked.length > 0 && layout.bandsKept.length === 0) off.push(`block-row window sums (${options.blockRows === false ? "turned off in the engine options" : "no block size found on this CPU"})`);
  off.push(...layout.bandsKept.map((reason) => `block-row window sums of ${reason}`));
  const cropsPerPart = options.stemCropsPerPart ?? DEFAULT_STEM_CROPS_PER_PART;
  if (layout.stem) on.push(`stem in parts (${STEM_PARTS} of ${cropsPerPart} crops, ${layout.stem.nodes} nodes each, to ${layout.stem.end})`);
  else if (layout.stemKept) off.push(`stem in parts (${layout.stemKept})`);
  else if (cropsPerPart === 0) off.push("stem in parts (turned off in the engine options)");
  return { on, off };
}

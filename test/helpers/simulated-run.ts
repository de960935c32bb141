import { fileURLToPath } from "node:url";
import { SCHEMES, type Scheme } from "../../model/image/crop-types.js";
import { schemeCropIndices } from "../../model/image/crops.js";
import { readSynsets } from "../../model/synsets.js";
import type { ModelInfo } from "../../model/engine.js";
import { perClassAccuracy } from "../../queue/aggregate.js";
import type { ResultRecord, RunFacts, SchemeTop5, Summary, TopEntry } from "../../scoring/records.js";
import { POSITIONS, encodePositions } from "../../scoring/statistics.js";
import { summarize } from "../../scoring/summary.js";

/** The real class names, read in place from ../shared (never copied into the repo). */
export const SYNSET_WORDS = fileURLToPath(new URL("../../../shared/imagenet/synset_words.txt", import.meta.url));

/** Options of simulateRun. */
export interface SimulatedRunOptions {
  /** Scored images (labelled and unlabelled). */
  readonly images: number;
  /** Of those, how many carry no label. Default: 0. */
  readonly unlabelled?: number;
  /** Keys of images that failed to decode, appended after the scored ones. Default: none. */
  readonly failedKeys?: readonly string[];
  /** Number of models; more than one makes an ensemble with per-model top-5 lists. */
  readonly models: number;
  readonly crops: 10 | 144;
  /** Distinct true classes the images are spread over. Default: 20. */
  readonly classes?: number;
  /** Default: 1. */
  readonly seed?: number;
}

export interface SimulatedRun {
  readonly records: ResultRecord[];
  /** The models as summary.json names them, in --model order. */
  readonly models: ModelInfo[];
  readonly crops: 10 | 144;
  readonly schemes: Scheme[];
  readonly classNames: readonly string[];
}

/** mulberry32: small, seeded, good enough to make varied but reproducible runs. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

// Some positions see less of the object: larger scales, corners and the squeezed full square.
const SCALE_EFFECT: Record<number, number> = { 256: 0, 288: 0.15, 320: 0, 352: -0.35 };
const CROP_EFFECT: Record<string, number> = { tl: -0.3, tr: -0.3, bl: -0.4, br: -0.4, center: 0.2, full: -0.1 };

/** Top-5 of a probability vector over `candidates`, ties to the lower class index (PROTOCOL.md). */
function top5Of(candidates: readonly number[], probabilities: readonly number[], names: readonly string[]): TopEntry[] {
  return candidates
    .map((index, i) => ({ index, p: probabilities[i]! }))
    .sort((a, b) => b.p - a.p || a.index - b.index)
    .slice(0, 5)
    .map(({ index, p }) => [index, p, names[index]!]);
}

function mean(vectors: readonly (readonly number[])[]): number[] {
  const out = new Array<number>(vectors[0]!.length).fill(0);
  for (const v of vectors) v.forEach((x, i) => (out[i]! += x / vectors.length));
  return out;
}

/**
 * A run scored the way the scorer does it, on simulated softmax outputs: each model gives each
 * of the 144 positions a probability vector over the true class and six fixed confusers of it;
 * schemes average the positions, the ensemble averages the models, and each record's
 * `positions` string holds the ensemble's own verdict at every position. Records are therefore
 * consistent the way real ones are (scheme 1 is position 20 alone), with realistic error rates.
 */
export async function simulateRun(options: SimulatedRunOptions): Promise<SimulatedRun> {
  const rand = random(options.seed ?? 1);
  const names = (await readSynsets(SYNSET_WORDS)).names;
  const classCount = options.classes ?? 20;
  const classes = Array.from({ length: classCount }, (_, i) => (i * 47 + 3) % 1000);
  const confusers = (label: number): number[] => Array.from({ length: 6 }, (_, j) => (label + 1 + j * 131) % 1000);
  const modelBias = Array.from({ length: options.models }, (_, m) => -0.25 * m);
  const schemes: Scheme[] = options.crops === 144 ? [...SCHEMES] : ["1", "10"];
  const computed = options.crops === 144 ? POSITIONS.map((_, i) => i) : schemeCropIndices("10");

  const records: ResultRecord[] = [];
  for (let image = 0; image < options.images; image++) {
    const label = classes[image % classes.length]!;
    const candidates = [label, ...confusers(label)];
    const difficulty = 2.3 + 1.6 * normal(rand);
    const confuserStrength = candidates.slice(1).map((_, j) => 0.8 - 0.25 * j + 0.5 * normal(rand));
    // probabilities[model][position] over candidates; positions not computed stay undefined.
    const probabilities = modelBias.map((bias) => {
      const byPosition: number[][] = [];
      for (const p of computed) {
        const position = POSITIONS[p]!;
        const logits = [
          difficulty + bias + SCALE_EFFECT[position.scale]! + CROP_EFFECT[position.crop]! + 1.3 * normal(rand),
          ...confuserStrength.map((s) => s + 0.6 * normal(rand)),
        ];
        const top = Math.max(...logits);
        const exp = logits.map((l) => Math.exp(l - top));
        const total = exp.reduce((a, b) => a + b, 0);
        byPosition[p] = exp.map((e) => e / total);
      }
      return byPosition;
    });
    const schemeTop5 = (perPosition: (p: number) => number[]): SchemeTop5 => {
      const top5: SchemeTop5 = {};
      for (const scheme of schemes) {
        top5[scheme] = top5Of(candidates, mean(schemeCropIndices(scheme).map(perPosition)), names);
      }
      return top5;
    };
    const ensembleAt = (p: number): number[] => mean(probabilities.map((byPosition) => byPosition[p]!));
    const isLabelled = image >= (options.unlabelled ?? 0);
    const [width, height] = image % 5 === 1 ? [375, 500] : image % 7 === 2 ? [500, 500] : [500, 375];
    const record: ResultRecord = {
      key: `val/${names[label]!.replace(/\W+/g, "_")}_${String(image).padStart(3, "0")}.JPEG`,
      label: isLabelled ? label : null,
      width,
      height,
      // Averaging per-model scheme means equals averaging the ensemble's positions: equal weights.
      top5: schemeTop5(ensembleAt),
    };
    if (options.models > 1) record.models = probabilities.map((byPosition) => ({ top5: schemeTop5((p) => byPosition[p]!) }));
    if (isLabelled && options.crops === 144) {
      const verdicts = POSITIONS.map((_, p) => top5Of(candidates, ensembleAt(p), names).map((e) => e[0]));
      record.positions = encodePositions(
        verdicts.map((top) => top[0] === label),
        verdicts.map((top) => top.includes(label)),
      );
    }
    records.push(record);
  }
  for (const key of options.failedKeys ?? []) records.push({ key, error: `cannot decode ${key}: premature end of JPEG data` });
  const models = Array.from({ length: options.models }, (_, m): ModelInfo => ({
    file: m === 0 ? "../shared/models/bvlc-googlenet.onnx" : `models/bvlc-googlenet-retrained-${m}.onnx`,
    sha256: m === 0 ? "f5e86a8bb03c8170fb631d164d3851eaddfc0cb4759b16a506b5ef6b35b41de4" : "0".repeat(63) + String(m),
    flavour: "bvlc",
  }));
  return { records, models, crops: options.crops, schemes, classNames: names };
}

/**
 * summary.json of a simulated run as `score` writes it: the real summarize(). With `perClass`,
 * plus the per-class accuracy the aggregate adds (queue/aggregate.ts), which the report must
 * complete with confusions from the records.
 */
export function summarizeRun(run: SimulatedRun, options: { perClass?: boolean } = {}): Summary {
  const summary = summarize(run.records, run.models, run.crops);
  if (!options.perClass) return summary;
  return { ...summary, perClass: perClassAccuracy(run.records, run.schemes.at(-1) as Scheme, run.classNames) };
}

/** run.json of a simulated run: how it went, as `score` records it beside summary.json. */
export const SIMULATED_RUN_FACTS: RunFacts = {
  engine: "onnxruntime",
  backend: "cpu",
  wallSeconds: 754.2,
  cropsPerSecond: 118.4,
  startedAt: "2025-01-02T03:04:05.000Z",
};

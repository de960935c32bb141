import type { S3Client } from "@aws-sdk/client-s3";
import { NUM_CLASSES } from "../model/engine.js";
import type { EngineChoice } from "../model/load.js";
import { loadEngine } from "../model/load.js";
import type { Flavour } from "../model/preprocess.js";
import type { Synsets } from "../model/synsets.js";
import { readBuiltInSynsets } from "../model/synsets.js";
import { remappingsFor } from "../scoring/devkit-ids.js";
import type { LabelDiagnosis } from "../scoring/label-check.js";
import { LABEL_CHECK_IMAGES, LabelCheck } from "../scoring/label-check.js";
import { scoreImages } from "../scoring/scorer.js";
import { readUrl } from "../storage/open-location.js";
import { openLocation } from "../storage/open-location.js";

export { LABEL_CHECK_FILE } from "../scoring/label-check.js";

export interface PlanLabelCheckInput {
  readonly input: string;
  readonly keys: readonly string[];
  /**
   * A read function for the sampled keys (in input order), for inputs whose images are not all
   * loose objects (archive members). Default: each key read from `input`.
   */
  readonly reads?: (keys: readonly string[]) => (key: string) => Promise<Uint8Array>;
  readonly labels: readonly (number | null)[];
  readonly models: readonly { readonly url: string; readonly preprocess: Flavour | null }[];
  readonly engine: EngineChoice;
  readonly applyExifOrientation: boolean;
  readonly maxPixels: number;
  readonly classes: readonly number[] | undefined;
  readonly s3: S3Client | undefined;
  /**
   * The run's classes, through which the devkit-id remapping reads the built-in validation
   * labels. Default: the built-in synset_words.txt, as aggregate assumes for ReaL (a queued run
   * is ImageNet's unless plan was given another list).
   */
  readonly synsets?: Synsets;
}

/**
 * Up to {@link LABEL_CHECK_IMAGES} labelled keys spread evenly over the run: a listing in folder
 * order (ImageNet-V2's 10 per class) would otherwise give only a few classes.
 */
function sampleOf(keys: readonly string[], labels: readonly (number | null)[]): { key: string; label: number }[] {
  const labelled = keys.flatMap((key, i) => (labels[i] === null || labels[i] === undefined ? [] : [{ key, label: labels[i] as number }]));
  if (labelled.length <= LABEL_CHECK_IMAGES) return labelled;
  const step = labelled.length / LABEL_CHECK_IMAGES;
  return Array.from({ length: LABEL_CHECK_IMAGES }, (_, i) => labelled[Math.floor(i * step)] as { key: string; label: number });
}

/**
 * The label check as `plan` runs it, before anything is sent: ~200 labelled images at 1 crop on
 * this machine's CPU with the run's models (onnxruntime threads on all cores). Undefined when
 * the run has no labelled image. Reads only; a fault reading an image stops the plan as any
 * other read would.
 */
export async function checkPlannedLabels(run: PlanLabelCheckInput): Promise<LabelDiagnosis | undefined> {
  const sample = sampleOf(run.keys, run.labels);
  if (sample.length === 0) return undefined;
  const location = openLocation(run.input, { s3: run.s3 });
  const models = [];
  try {
    for (const model of run.models) {
      models.push(
        await loadEngine(await readUrl(model.url, run.s3), {
          source: model.url,
          engine: run.engine,
          device: "cpu",
          ...(model.preprocess !== null ? { preprocess: model.preprocess } : {}),
        }),
      );
    }
    const read = run.reads?.(sample.map(({ key }) => key)) ?? ((key: string) => location.read(key));
    // Learned from every key's label, not only the sample's: more images name more devkit ids.
    const remappings = await remappingsFor(run.keys, run.labels, run.synsets ?? (await readBuiltInSynsets()));
    const check = new LabelCheck(remappings, sample.length);
    const classNames = Array.from({ length: NUM_CLASSES }, (_, i) => String(i));
    const records = scoreImages(
      sample.map(({ key, label }) => ({ key, label, read: () => read(key) })),
      { models, crops: 1, classNames, applyExifOrientation: run.applyExifOrientation, maxPixels: run.maxPixels, classes: run.classes },
    );
    for await (const record of records) check.add(record);
    return check.diagnosis ?? check.finish();
  } finally {
    await Promise.all(models.map(({ engine }) => engine.dispose()));
  }
}

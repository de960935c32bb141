import { realpath } from "node:fs/promises";
import { basename } from "node:path";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { StorageError } from "../storage/errors.js";
import type { Location } from "../storage/location.js";
import { isS3Url } from "../storage/location.js";

/**
 * run-header.json, written beside results.jsonl before the first result: every setting that
 * changes what a record says, so a resumed run can refuse to append records made under other
 * settings. Engine, backend, threads and batch size change only float rounding, not results,
 * so they are not in it.
 */
export const RUN_HEADER_FILE = "run-header.json";

const FileDigest = z.object({ file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });

const RunHeaderSchema = z.object({
  version: z.literal(1),
  /**
   * The images scored, as `inputOfRun` gives it. Optional only for headers written before it
   * was recorded; every header written now has it.
   */
  input: z.string().min(1).optional(),
  /** In --model order: the order of per-model results and of the ensemble. */
  models: z.array(FileDigest).min(1),
  crops: z.union([z.literal(1), z.literal(10), z.literal(144)]),
  exifOrientation: z.boolean(),
  maxPixels: z.number().int().positive(),
  /** The --preprocess override, or null when each model's convention is recognised from its graph. */
  preprocess: z.enum(["bvlc", "torchvision"]).nullable(),
  /** The label file, or null when labels come from WNIDs in file and folder names. */
  labels: FileDigest.nullable(),
  /** synset_words.txt: class names in the records, and WNID labels. */
  synsetsSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /**
   * Present when no label file was given and the built-in ILSVRC 2012 validation labels label
   * images (keys named ILSVRC2012_val_NNNNNNNN.*): the file, its sha256 and how many images
   * of the first run's listing it labelled. Absent otherwise, so headers from before it read
   * the same; a resume is refused when it is present on one side only (labels would differ).
   */
  builtInLabels: FileDigest.extend({ images: z.number().int().nonnegative() }).optional(),
  /**
   * Where labels come from and the class subset scored over (scoring/label-space.ts). Headers
   * written before it have none: labels from the file or from WNIDs in names, all 1000 classes.
   */
  labelSpace: z
    .object({
      layout: z.enum(["label-file", "wnid-in-path", "folder-index"]),
      classes: z.object({ file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/), count: z.number().int().positive() }).nullable(),
    })
    .optional(),
});

export type RunHeader = z.infer<typeof RunHeaderSchema>;

/**
 * The input a run header records: an S3 location's normalized URL, or a local folder's real
 * path. The real path, so the same folder reached through a relative path from another working
 * directory, or through a symbolic link, is the same input; a folder moved or renamed is a new
 * input, because nothing then ties its files to the records already made.
 *
 * @throws StorageError when a local folder's real path cannot be found.
 */
export async function inputOfRun(input: Location): Promise<string> {
  if (isS3Url(input.url)) return input.url;
  try {
    return await realpath(input.url);
  } catch (error) {
    throw new StorageError(`cannot resolve image folder ${input.url}: ${(error as Error).message}`, { cause: error });
  }
}

/** One setting that differs between the run in an out folder and this run. */
export interface HeaderDifference {
  /** The field's path, e.g. `models[0].sha256`. */
  readonly field: string;
  readonly before: string;
  readonly now: string;
}

function describeDigest(digest: { file: string; sha256: string } | null, none: string): string {
  return digest === null ? none : `${digest.sha256} (${basename(digest.file)})`;
}

/**
 * The settings that differ, in header order. Files are compared by content (sha256), not by
 * path: the same model moved or copied to S3 is the same model. The input is compared by where
 * it is (`inputOfRun`): hashing every image would read the whole input before the first result,
 * and a resume skips images by their relative key, which means something only within one input.
 */
export function headerDifferences(before: RunHeader, now: RunHeader): HeaderDifference[] {
  const differences: HeaderDifference[] = [];
  const add = (field: string, a: string, b: string): void => {
    if (a !== b) differences.push({ field, before: a, now: b });
  };
  // A header without an input is from before inputs were recorded: see `withInput`.
  if (before.input !== undefined && now.input !== undefined) add("input", before.input, now.input);
  if (before.models.length !== now.models.length) {
    const list = (header: RunHeader): string =>
      `${header.models.length} (${header.models.map((model) => basename(model.file)).join(", ")})`;
    add("models", list(before), list(now));
  } else {
    before.models.forEach((model, i) => {
      const other = now.models[i] as RunHeader["models"][number];
      if (model.sha256 !== other.sha256) add(`models[${i}].sha256`, describeDigest(model, ""), describeDigest(other, ""));
    });
  }
  add("crops", String(before.crops), String(now.crops));
  add("exifOrientation", String(before.exifOrientation), String(now.exifOrientation));
  add("maxPixels", String(before.maxPixels), String(now.maxPixels));
  add("preprocess", before.preprocess ?? "none", now.preprocess ?? "none");
  const noLabels = "none (labels from file names)";
  if ((before.labels?.sha256 ?? null) !== (now.labels?.sha256 ?? null)) {
    add("labels.sha256", describeDigest(before.labels, noLabels), describeDigest(now.labels, noLabels));
  }
  add("synsetsSha256", before.synsetsSha256, now.synsetsSha256);
  // By content, as the label file: the package installed elsewhere ships the same labels.
  if ((before.builtInLabels?.sha256 ?? null) !== (now.builtInLabels?.sha256 ?? null)) {
    const builtIn = (header: RunHeader): string => describeDigest(header.builtInLabels ?? null, "none");
    add("builtInLabels.sha256", builtIn(before), builtIn(now));
  }
  const layout = (header: RunHeader): string => header.labelSpace?.layout ?? (header.labels === null ? "wnid-in-path" : "label-file");
  // A label file given or not is already told by labels.sha256.
  if (before.labels === null && now.labels === null) add("labelSpace.layout", layout(before), layout(now));
  const classes = (header: RunHeader): string => {
    const subset = header.labelSpace?.classes;
    return subset ? `${subset.count} classes, sha256 ${subset.sha256} (${basename(subset.file)})` : "all 1000";
  };
  if ((before.labelSpace?.classes?.sha256 ?? null) !== (now.labelSpace?.classes?.sha256 ?? null)) {
    add("labelSpace.classes", classes(before), classes(now));
  }
  return differences;
}

/**
 * Refuses a resume whose settings differ from the run already in `out`, naming each differing
 * field with its value there and here.
 *
 * @throws ConfigurationError when any field differs.
 */
export function assertSameRun(before: RunHeader, now: RunHeader, out: string): void {
  const differences = headerDifferences(before, now);
  if (differences.length === 0) return;
  const there = differences.map((d) => `${d.field} ${d.before}`).join(", ");
  const here = differences.map((d) => `${d.field} ${d.now}`).join(", ");
  throw new ConfigurationError(
    `${out} already holds a run with ${there}; this run has ${here}: use another output folder, or delete ${out} to start again`,
  );
}

export function formatRunHeader(header: RunHeader): string {
  return `${JSON.stringify(header, null, 2)}\n`;
}

/**
 * The header of the run in `location`, or undefined when there is none (a run from before
 * headers were written, or no run at all).
 *
 * @throws StorageError when the file is there but is not a header.
 */
export async function readRunHeader(location: Location, out: string): Promise<RunHeader | undefined> {
  const bytes = await location.readIfExists(RUN_HEADER_FILE);
  if (bytes === undefined) return undefined;
  let parsed: z.SafeParseReturnType<unknown, RunHeader>;
  try {
    parsed = RunHeaderSchema.safeParse(JSON.parse(bytes.toString("utf8")));
  } catch (error) {
    throw new StorageError(`${out}/${RUN_HEADER_FILE} is not valid JSON; delete ${out} to start again, or use another output folder`, {
      cause: error,
    });
  }
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`).join("; ");
    throw new StorageError(`${out}/${RUN_HEADER_FILE} is not a run header (${problems}); delete ${out} to start again, or use another output folder`);
  }
  return parsed.data;
}

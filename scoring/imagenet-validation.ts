import type { S3Client } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { NUM_CLASSES } from "../model/engine.js";
import { LabelFileError } from "../model/errors.js";
import { readBuiltInSynsets, type Synsets } from "../model/synsets.js";
import { IMAGE_EXTENSIONS } from "../storage/image-keys.js";
import { readUrl } from "../storage/open-location.js";

/** Images in the ILSVRC 2012 validation set: ILSVRC2012_val_00000001 to ILSVRC2012_val_00050000. */
export const VALIDATION_IMAGES = 50_000;

/** TF-slim's validation labels, shipped in data/: line n (from 1) is the WNID of ILSVRC2012_val_{n:08d}. */
export const VALIDATION_LABELS_FILE = "ilsvrc2012_validation_synset_labels.txt";

/** The ReaL labels (Beyer et al. 2020), shipped in data/: element i lists the classes of ILSVRC2012_val_{i+1:08d}. */
export const REAL_LABELS_FILE = "real.json";

const VALIDATION_NAME = new RegExp(
  `^ILSVRC2012_val_(\\d{8})(?:${IMAGE_EXTENSIONS.map((extension) => `\\${extension}`).join("|")})$`,
  "i",
);

/**
 * The 1-based validation number of a key whose last segment is `ILSVRC2012_val_NNNNNNNN.<ext>`
 * (an image extension, any case; in an archive or a folder alike), or undefined for any other
 * key. Numbers outside 1..50,000 are returned too: the tables below say they have no label.
 */
export function validationNumber(key: string): number | undefined {
  const last = key.slice(Math.max(key.lastIndexOf("/"), key.lastIndexOf("\\")) + 1);
  const digits = VALIDATION_NAME.exec(last)?.[1];
  if (digits === undefined) return undefined;
  const n = Number(digits);
  return n >= 1 ? n : undefined;
}

/**
 * A data/ file of the package, looked up from this module as source (scoring/) and as built
 * (dist/scoring/), as model/synsets.ts finds synset_words.txt, and beside a bundle (the
 * aggregator Lambda's index.mjs, whose bundling copies data/ next to it).
 *
 * @throws LabelFileError when the package was installed without its data folder.
 */
export function builtInDataPath(file: string): string {
  const paths = [`../data/${file}`, `../../data/${file}`, `./data/${file}`].map((candidate) =>
    fileURLToPath(new URL(candidate, import.meta.url)),
  );
  const found = paths.find((path) => existsSync(path));
  if (found === undefined) {
    throw new LabelFileError(`the built-in ${file} is missing from this installation; looked for ${paths.join(", ")}`);
  }
  return found;
}

/** The built-in validation labels as class indices of a run's synsets. */
export interface ValidationLabels {
  /** Where they were read from, for messages. */
  readonly source: string;
  /** The class of validation number n, or null when it has none (outside 1..50,000, or a WNID the synsets lack). */
  labelOf(n: number): number | null;
}

/**
 * Parses TF-slim's validation labels through `synsets` (class index = line of the WNID in
 * synset_words.txt). Every line must be a WNID: the file is the package's own, so a bad line
 * means a damaged installation, not a user's typo.
 */
export function parseValidationLabels(text: string, synsets: Synsets, source: string): ValidationLabels {
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== VALIDATION_IMAGES) {
    throw new LabelFileError(`${source}: expected ${VALIDATION_IMAGES} lines (one WNID each), found ${lines.length}`);
  }
  const classes = new Int16Array(VALIDATION_IMAGES).fill(-1);
  lines.forEach((line, i) => {
    if (!/^n\d{8}$/.test(line.trim())) throw new LabelFileError(`${source}:${i + 1}: expected a WNID like n01440764, got "${line}"`);
    classes[i] = synsets.indexOf(line.trim()) ?? -1;
  });
  return {
    source,
    labelOf: (n) => {
      const index = n >= 1 && n <= VALIDATION_IMAGES ? (classes[n - 1] as number) : -1;
      return index < 0 ? null : index;
    },
  };
}

/** The validation labels shipped in data/, mapped through `synsets`. */
export async function readBuiltInValidationLabels(synsets: Synsets): Promise<ValidationLabels> {
  const path = builtInDataPath(VALIDATION_LABELS_FILE);
  return parseValidationLabels(await readFile(path, "utf8"), synsets, path);
}

/** ReaL labels: for each validation image, the list of classes counted right (empty: left out of ReaL). */
export interface RealLabels {
  readonly source: string;
  /** The list for a key with a validation name, or undefined when the key has none (another name, or a number past the file). */
  lookup(key: string): readonly number[] | undefined;
}

/**
 * Parses the real.json format: a JSON list of lists of class indices (sorted-WNID order),
 * element i for ILSVRC2012_val_{i+1:08d}. Anything else is refused, naming the element.
 */
export function parseRealLabels(text: string, source: string): RealLabels {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new LabelFileError(`${source}: not JSON (${(error as Error).message}); ReaL labels are a JSON list of lists of class indices`, {
      cause: error,
    });
  }
  if (!Array.isArray(value) || value.length === 0) {
    throw new LabelFileError(`${source}: ReaL labels must be a non-empty JSON list of lists of class indices (element i for ILSVRC2012_val_{i+1})`);
  }
  const lists = value.map((element: unknown, i) => {
    const ok =
      Array.isArray(element) &&
      element.every((c: unknown) => typeof c === "number" && Number.isInteger(c) && c >= 0 && c < NUM_CLASSES);
    if (!ok) {
      throw new LabelFileError(
        `${source}: element ${i} (ILSVRC2012_val_${String(i + 1).padStart(8, "0")}) must be a list of class indices 0..${NUM_CLASSES - 1}, ` +
          `got ${JSON.stringify(element).slice(0, 60)}`,
      );
    }
    return element as number[];
  });
  return {
    source,
    lookup: (key) => {
      const n = validationNumber(key);
      return n === undefined ? undefined : lists[n - 1];
    },
  };
}

/** Reads a real.json file from a path or s3:// URL. */
export async function readRealLabelsFile(path: string, s3?: S3Client): Promise<RealLabels> {
  let text: string;
  try {
    text = (await readUrl(path, s3)).toString("utf8");
  } catch (error) {
    throw new LabelFileError(`cannot read ReaL labels ${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseRealLabels(text, path);
}

/** The ReaL labels shipped in data/. */
export async function readBuiltInRealLabels(): Promise<RealLabels> {
  return readRealLabelsFile(builtInDataPath(REAL_LABELS_FILE));
}

/** The built-in validation labels as a run uses them: the file's digest for the run header, and the labels. */
export interface BuiltInValidationLabels {
  readonly path: string;
  readonly sha256: string;
  readonly labels: ValidationLabels;
}

/** Reads the shipped validation labels with their sha256 (the run header compares runs by it). */
export async function loadBuiltInValidationLabels(synsets: Synsets): Promise<BuiltInValidationLabels> {
  const path = builtInDataPath(VALIDATION_LABELS_FILE);
  const bytes = await readFile(path);
  return {
    path,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    labels: parseValidationLabels(bytes.toString("utf8"), synsets, path),
  };
}

/** The built-in label of a key: its validation number's class, or null when it has no validation name or no label. */
export function validationLabelOf(labels: ValidationLabels, key: string): number | null {
  const n = validationNumber(key);
  return n === undefined ? null : labels.labelOf(n);
}

/** How summary.json names the shipped ReaL labels: the same bytes wherever the package is installed. */
export const BUILT_IN_REAL_SOURCE = `built-in ${REAL_LABELS_FILE}`;

/**
 * The ReaL labels a run judges by: `given` (a real.json path or s3:// URL); none when `given`
 * is null; else, by default, the shipped ones, but only when some key has a validation name
 * (nothing to judge otherwise) and the classes are ImageNet's in sorted-WNID order (ReaL's
 * indices mean nothing in another label set).
 */
export async function realLabelsFor(
  given: string | null | undefined,
  keys: readonly string[],
  synsets: Synsets,
  s3?: S3Client,
): Promise<RealLabels | undefined> {
  if (given === null) return undefined;
  if (given !== undefined) return readRealLabelsFile(given, s3);
  if (!keys.some((key) => validationNumber(key) !== undefined)) return undefined;
  const imagenet = await readBuiltInSynsets();
  if (imagenet.wnids.join() !== synsets.wnids.join()) return undefined;
  return { ...(await readBuiltInRealLabels()), source: BUILT_IN_REAL_SOURCE };
}

/** How a manifest names the built-in validation labels as its label source (`plan` without --labels). */
export const BUILT_IN_LABELS_SOURCE = `built-in ${VALIDATION_LABELS_FILE}`;

/**
 * The ReaL labels an aggregation judges by: `given`, none when null, else the shipped ones when
 * any record's key has a validation name. Unlike realLabelsFor it cannot check the run's
 * classes (the manifest does not record its synsets): queued runs are ImageNet's unless `plan`
 * was given another list, and then `--real-labels none` is the way out.
 */
export async function realLabelsForKeys(
  given: RealLabels | null | undefined,
  keys: Iterable<string>,
): Promise<RealLabels | undefined> {
  if (given !== undefined) return given ?? undefined;
  for (const key of keys) {
    if (validationNumber(key) !== undefined) return { ...(await readBuiltInRealLabels()), source: BUILT_IN_REAL_SOURCE };
  }
  return undefined;
}

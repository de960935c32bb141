import { NUM_CLASSES } from "../model/engine.js";
import { LabelFileError } from "../model/errors.js";
import type { Synsets } from "../model/synsets.js";
import { readUrl } from "../storage/open-location.js";

/**
 * Label file formats, detected from content:
 * - `caffe-val`: Caffe's val.txt, `relative/path class-index` per line.
 * - `loc-csv`: Kaggle's LOC_val_solution.csv, header `ImageId,PredictionString`, the WNID is
 *   the first token of PredictionString, ImageId has no extension.
 * - `synset-labels`: TF-slim's imagenet_2012_validation_synset_labels.txt, one WNID per line;
 *   line n (from 1) labels ILSVRC2012_val_{n:08d}.
 */
export type LabelFormat = "caffe-val" | "loc-csv" | "synset-labels";

/** A line that could not be used. */
export interface LabelProblem {
  readonly line: number;
  readonly message: string;
}

export interface LabelTable {
  readonly source: string;
  readonly format: LabelFormat;
  /** Number of usable labels. */
  readonly size: number;
  /**
   * Bad lines, skipped (at most `maxProblems` kept; `problemCount` has the total). A table is
   * returned with its good lines so that one bad line does not throw away a 50,000-line run;
   * callers should show these, since skipped images count as unlabelled.
   */
  readonly problems: readonly LabelProblem[];
  readonly problemCount: number;
  /**
   * The class index for an image key (relative to the input folder, `/`-separated), or null.
   * Tries the key itself, then its base name (val.txt lists bare file names), then each without
   * its extension (LOC ids and TF-slim names have none).
   */
  lookup(key: string): number | null;
}

export interface ParseLabelsOptions {
  /** The file name, used in every message. */
  readonly source: string;
  /** Needed for the WNID formats (LOC csv, synset labels). */
  readonly synsets?: Synsets;
  /** How many bad lines to keep for the message. Default: 10. */
  readonly maxProblems?: number;
}

const DEVKIT_REFUSAL =
  "looks like the devkit's ILSVRC2012_validation_ground_truth.txt (one integer per line, no file names). " +
  "Its ids are ILSVRC2012 devkit ids (ILSVRC2012_ID in meta.mat), not class indices in sorted-WNID order, " +
  "so scoring against it would be silently wrong. Leave --labels out instead: images named ILSVRC2012_val_NNNNNNNN.* " +
  "get the built-in ILSVRC 2012 validation labels (data/ilsvrc2012_validation_synset_labels.txt); " +
  "or use Caffe's val.txt (file name and class index per line) or LOC_val_solution.csv (ImageId,PredictionString)";

const WNID = /^n\d{8}$/;
const CAFFE_LINE = /^(.*\S)\s+(\S+)$/;

function stripExtension(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

function baseName(key: string): string {
  return key.slice(key.lastIndexOf("/") + 1);
}

/** The names a key may be listed under, most specific first. */
function candidates(key: string): string[] {
  const normal = key.replace(/\\/g, "/").replace(/^\.\//, "");
  const base = baseName(normal);
  return [...new Set([normal, base, stripExtension(normal), stripExtension(base)])];
}

function detect(lines: readonly string[], source: string): LabelFormat {
  const first = lines.find((line) => line.trim() !== "")?.trim();
  if (first === undefined) throw new LabelFileError(`${source}: the label file is empty`);
  if (/^ImageId\s*,\s*PredictionString$/i.test(first)) return "loc-csv";
  if (WNID.test(first)) return "synset-labels";
  if (/^\d+$/.test(first) && lines.every((line) => /^\s*\d*\s*$/.test(line))) {
    throw new LabelFileError(`${source}: ${DEVKIT_REFUSAL}`);
  }
  if (/^.*\S\s+-?\d+$/.test(first)) return "caffe-val";
  throw new LabelFileError(
    `${source}:1: unknown label file format (first line "${first}"); use one of: ` +
      `Caffe val.txt ("path class-index" per line), LOC_val_solution.csv (header "ImageId,PredictionString"), ` +
      `imagenet_2012_validation_synset_labels.txt (one WNID per line)`,
  );
}

function needSynsets(options: ParseLabelsOptions, format: LabelFormat): Synsets {
  if (!options.synsets) {
    throw new LabelFileError(`${options.source}: a ${format} label file names WNIDs, so it needs synset_words.txt to map them to class indices`);
  }
  return options.synsets;
}

/** Parses a label file, detecting its format from its content. */
export function parseLabels(text: string, options: ParseLabelsOptions): LabelTable {
  const { source } = options;
  const maxProblems = options.maxProblems ?? 10;
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const format = detect(lines, source);
  const byName = new Map<string, number>();
  const problems: LabelProblem[] = [];
  let problemCount = 0;
  const problem = (line: number, message: string): void => {
    problemCount++;
    if (problems.length < maxProblems) problems.push({ line, message });
  };
  const add = (line: number, name: string, index: number): void => {
    const earlier = byName.get(name);
    if (earlier !== undefined && earlier !== index) {
      problem(line, `"${name}" is listed again with class ${index} (first with ${earlier}); keeping the first`);
      return;
    }
    byName.set(name, index);
  };
  const classOfWnid = (line: number, wnid: string | undefined): number | undefined => {
    const synsets = needSynsets(options, format);
    if (wnid === undefined || !WNID.test(wnid)) {
      problem(line, `expected a WNID like n01440764, got "${wnid ?? ""}"`);
      return undefined;
    }
    const index = synsets.indexOf(wnid);
    if (index === undefined) problem(line, `unknown WNID ${wnid} (not in ${synsets.source})`);
    return index;
  };

  if (format === "synset-labels") {
    // Line n names ILSVRC2012_val_{n:08d}, so blank lines still count as lines.
    let n = lines.length;
    while (n > 0 && (lines[n - 1] as string).trim() === "") n--;
    for (let i = 0; i < n; i++) {
      const index = classOfWnid(i + 1, (lines[i] as string).trim());
      if (index !== undefined) add(i + 1, `ILSVRC2012_val_${String(i + 1).padStart(8, "0")}`, index);
    }
  } else {
    let headerSeen = false;
    lines.forEach((raw, i) => {
      const line = raw.trim();
      const number = i + 1;
      if (line === "") return;
      if (format === "loc-csv") {
        if (!headerSeen) {
          headerSeen = true;
          return;
        }
        const comma = line.indexOf(",");
        if (comma <= 0) {
          problem(number, `expected "ImageId,PredictionString", got "${line}"`);
          return;
        }
        const index = classOfWnid(number, line.slice(comma + 1).trim().split(/\s+/)[0]);
        if (index !== undefined) add(number, line.slice(0, comma).trim(), index);
        return;
      }
      const match = CAFFE_LINE.exec(line);
      const value = match?.[2];
      if (!match || value === undefined || !/^-?\d+$/.test(value)) {
        problem(number, `expected "path class-index", got "${line}"`);
        return;
      }
      const index = Number(value);
      if (index < 0 || index >= NUM_CLASSES) {
        problem(number, `class index ${index} is outside 0..${NUM_CLASSES - 1}`);
        return;
      }
      add(number, (match[1] as string).replace(/\\/g, "/").replace(/^\.\//, ""), index);
    });
  }

  if (byName.size === 0) {
    const shown = problems.map((p) => `  line ${p.line}: ${p.message}`).join("\n");
    throw new LabelFileError(`${source}: no usable label (${format} format)${shown ? `:\n${shown}` : ""}`);
  }
  return {
    source,
    format,
    size: byName.size,
    problems,
    problemCount,
    lookup(key: string): number | null {
      for (const name of candidates(key)) {
        const index = byName.get(name);
        if (index !== undefined) return index;
      }
      return null;
    },
  };
}

/** Reads and parses a label file from a path or an s3:// URL. */
export async function readLabels(path: string, options: Omit<ParseLabelsOptions, "source">): Promise<LabelTable> {
  let text: string;
  try {
    text = (await readUrl(path)).toString("utf8");
  } catch (error) {
    throw new LabelFileError(`cannot read label file ${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseLabels(text, { ...options, source: path });
}

/** A one-paragraph description of a table's skipped lines, or undefined when there are none. */
export function describeProblems(table: LabelTable): string | undefined {
  if (table.problemCount === 0) return undefined;
  const shown = table.problems.map((p) => `  ${table.source}:${p.line}: ${p.message}`).join("\n");
  const more = table.problemCount - table.problems.length;
  return (
    `${table.problemCount} line(s) of ${table.source} skipped; those images count as unlabelled:\n${shown}` +
    (more > 0 ? `\n  ... and ${more} more` : "")
  );
}

const WNID_IN_PATH = /(?<![A-Za-z0-9])n\d{8}(?!\d)/;

/**
 * The label of an image from a WNID in its file name or, failing that, the nearest parent
 * folder (ImageNet's train layout `n01440764/n01440764_10026.JPEG`, or the samples' names
 * `n01440764_tench.JPEG`). Null when no part names one of the 1000 WNIDs.
 */
export function labelFromPath(key: string, synsets: Synsets): number | null {
  const parts = key.split("/");
  for (let i = parts.length - 1; i >= 0; i--) {
    const wnid = WNID_IN_PATH.exec(parts[i] as string)?.[0];
    if (wnid !== undefined) {
      const index = synsets.indexOf(wnid);
      if (index !== undefined) return index;
    }
  }
  return null;
}

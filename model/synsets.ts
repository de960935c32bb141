import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { NUM_CLASSES } from "./engine.js";
import { LabelFileError } from "./errors.js";

/**
 * The ImageNet classes as synset_words.txt lists them: line i (from 0) is class index i, the
 * index every model here outputs.
 */
export interface Synsets {
  /** The file the table was read from, for messages. */
  readonly source: string;
  /** WordNet ids by class index. */
  readonly wnids: readonly string[];
  /** First name of each class (the text before the first comma), by class index. */
  readonly names: readonly string[];
  /** Class index of a WNID, or undefined when it is not one of the 1000. */
  indexOf(wnid: string): number | undefined;
}

const LINE = /^(n\d{8})\s+(\S.*)$/;

/**
 * Parses synset_words.txt: `WNID name, synonyms` per line, exactly 1000 lines, in sorted WNID
 * order. Sortedness is checked because class index means position in the sorted list; a
 * reordered file would silently relabel every prediction.
 */
export function parseSynsets(text: string, source: string): Synsets {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  // One trailing newline is the usual end of file, not a 1001st class.
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== NUM_CLASSES) {
    throw new LabelFileError(
      `${source}: expected ${NUM_CLASSES} lines (one ImageNet class each, "WNID name, synonyms"), found ${lines.length}`,
    );
  }
  const wnids: string[] = [];
  const names: string[] = [];
  const byWnid = new Map<string, number>();
  lines.forEach((line, i) => {
    const match = LINE.exec(line.trim());
    if (!match) {
      throw new LabelFileError(
        `${source}:${i + 1}: expected "WNID name, synonyms" (e.g. "n01440764 tench, Tinca tinca"), got "${line}"`,
      );
    }
    const wnid = match[1] as string;
    const previous = wnids[i - 1];
    if (previous !== undefined && !(wnid > previous)) {
      throw new LabelFileError(
        `${source}:${i + 1}: ${wnid} is not after ${previous}; the classes must be in sorted WNID order, one per line`,
      );
    }
    wnids.push(wnid);
    names.push((match[2] as string).split(",")[0]?.trim() ?? "");
    byWnid.set(wnid, i);
  });
  return { source, wnids, names, indexOf: (wnid) => byWnid.get(wnid) };
}

/** Reads and parses a synset_words.txt file. */
export async function readSynsets(path: string): Promise<Synsets> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new LabelFileError(`cannot read synsets file ${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseSynsets(text, path);
}

/**
 * Where the package keeps the 1000 ILSVRC 2012 classes (data/synset_words.txt at the package
 * root), looked up from this module both as source (model/synsets.ts) and as built
 * (dist/model/synsets.js), so the same file serves a clone and an installed package.
 */
const BUILT_IN_CANDIDATES = ["../data/synset_words.txt", "../../data/synset_words.txt"];

/**
 * The path of the ImageNet class list shipped with the package: the default class names and
 * WNIDs wherever no other list is given.
 *
 * @throws LabelFileError when the package was installed without its data folder.
 */
export function builtInSynsetsPath(): string {
  const paths = BUILT_IN_CANDIDATES.map((candidate) => fileURLToPath(new URL(candidate, import.meta.url)));
  const found = paths.find((path) => existsSync(path));
  if (found === undefined) {
    throw new LabelFileError(`the built-in ImageNet class list is missing from this installation; looked for ${paths.join(", ")}`);
  }
  return found;
}

/** The 1000 ImageNet classes shipped with the package. */
export async function readBuiltInSynsets(): Promise<Synsets> {
  return readSynsets(builtInSynsetsPath());
}

import { createHash } from "node:crypto";
import { NUM_CLASSES } from "../model/engine.js";
import { LabelFileError } from "../model/errors.js";
import type { Synsets } from "../model/synsets.js";

/**
 * A subset of the 1000 classes a test set is scored over (ImageNet-A and -R use 200): each
 * crop's softmax is restricted to it and renormalised, which equals masking the logits of the
 * other classes before the softmax; top-5 lists and errors are then over the subset.
 */
export interface ClassSubset {
  /** The file it was read from, for messages and the run header. */
  readonly source: string;
  /** Class indices, ascending, each once. */
  readonly indices: readonly number[];
  /**
   * sha256 (hex) of the indices as text (`0,6,11,...`): the same classes give the same digest
   * whether the file names WNIDs or indices, so a resume compares what is scored, not spelling.
   */
  readonly sha256: string;
}

const WNID = /^n\d{8}$/;
const INDEX = /^\d+$/;

/**
 * Parses a class list: one WNID (n01440764) or class index (0..999) per line; blank lines and
 * `#` comments are skipped; a class listed twice counts once. Fewer than 2 classes is refused
 * (a softmax over one class says nothing).
 *
 * @throws LabelFileError naming the file and line of an unknown WNID, an index out of range, or
 *   anything else.
 */
export function parseClassSubset(text: string, synsets: Synsets, source: string): ClassSubset {
  const chosen = new Set<number>();
  text
    .replace(/^\uFEFF/, "")
    .split(/\r?\n/)
    .forEach((raw, i) => {
      const line = raw.replace(/#.*$/, "").trim();
      if (line === "") return;
      const where = `${source}:${i + 1}`;
      if (WNID.test(line)) {
        const index = synsets.indexOf(line);
        if (index === undefined) throw new LabelFileError(`${where}: unknown WNID ${line} (not in ${synsets.source})`);
        chosen.add(index);
      } else if (INDEX.test(line) && Number(line) < NUM_CLASSES) {
        chosen.add(Number(line));
      } else {
        throw new LabelFileError(`${where}: expected a WNID like n01440764 or a class index 0..${NUM_CLASSES - 1}, got "${line}"`);
      }
    });
  if (chosen.size < 2) throw new LabelFileError(`${source}: a class subset needs at least 2 classes, found ${chosen.size}`);
  const indices = [...chosen].sort((a, b) => a - b);
  return { source, indices, sha256: createHash("sha256").update(indices.join(",")).digest("hex") };
}

/** The classes as a mask: true for a class in the subset. */
export function maskOf(indices: readonly number[]): Uint8Array {
  const mask = new Uint8Array(NUM_CLASSES);
  for (const index of indices) mask[index] = 1;
  return mask;
}

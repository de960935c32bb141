import type { Synsets } from "../model/synsets.js";
import { NUM_CLASSES } from "../model/engine.js";
import type { ClassSubset } from "./class-subset.js";
import { labelFromPath } from "./labels.js";

/**
 * Where a run's labels come from, and so which label space its errors are in:
 * - `label-file`: a label file (val.txt, LOC csv, synset labels);
 * - `wnid-in-path`: a WNID in each file or folder name (ImageNet's train layout, ImageNet-A/-R);
 * - `folder-index`: folders named by class index, `0` to `999` (ImageNet-V2's layout), read as
 *   numbers: never by their place in a string sort of the names ("0", "1", "10", "100", ...).
 */
export type LabelLayout = "label-file" | "wnid-in-path" | "folder-index";

/** The label space of a run, as run-header.json, the manifest and summary.json record it. */
export interface LabelSpace {
  readonly layout: LabelLayout;
  /** The class subset scored over, or null for all 1000 classes. */
  readonly classes: { readonly file: string; readonly sha256: string; readonly count: number } | null;
}

const FOLDER_INDEX = /^\d{1,3}$/;

/** The class index named by the nearest parent folder of a key (`.../17/x.jpeg` is 17), or null. */
export function folderIndexLabel(key: string): number | null {
  const parts = key.split("/");
  for (let i = parts.length - 2; i >= 0; i--) {
    const part = parts[i] as string;
    if (FOLDER_INDEX.test(part)) {
      const index = Number(part);
      return index < NUM_CLASSES ? index : null;
    }
  }
  return null;
}

/**
 * Labels for keys without a label file: a WNID in the file or folder names when any key has
 * one; else, when any key lies in a folder named by a class index, ImageNet-V2's layout; else
 * none (an unlabelled run, still `wnid-in-path`).
 */
export function labelsFromLayout(
  keys: readonly string[],
  synsets: Synsets,
): { layout: Exclude<LabelLayout, "label-file">; labelOf: (key: string) => number | null } {
  const byWnid = (key: string): number | null => labelFromPath(key, synsets);
  if (keys.some((key) => byWnid(key) !== null)) return { layout: "wnid-in-path", labelOf: byWnid };
  if (keys.some((key) => folderIndexLabel(key) !== null)) return { layout: "folder-index", labelOf: folderIndexLabel };
  return { layout: "wnid-in-path", labelOf: byWnid };
}

/**
 * A queued run's label space, as aggregate's summary.json has it beside score's: the manifest
 * keeps the subset's class indices (what every worker restricts to), not its file or digest.
 */
export interface QueuedLabelSpace {
  readonly layout: LabelLayout;
  readonly classes: { readonly count: number; readonly indices: readonly number[] } | null;
}

export function labelSpaceOf(layout: LabelLayout, subset: ClassSubset | undefined): LabelSpace {
  return { layout, classes: subset === undefined ? null : { file: subset.source, sha256: subset.sha256, count: subset.indices.length } };
}

const LAYOUT_WORDS: Record<LabelLayout, string> = {
  "label-file": "from the label file",
  "wnid-in-path": "from a WNID in each file or folder name",
  "folder-index": "class index from folder names 0..999, read as numbers (ImageNet-V2 layout)",
};

/**
 * One line for the run's output: which labels and which classes the errors are over.
 * `builtIn` is how many of the run's `keys` the built-in validation labels label: they come
 * before the layout's (score-job's labelOf), which then labels only the rest, so the line names
 * them first; the layout stays the run's recorded setting (headers and summaries before the
 * built-in labels compare by it).
 */
export function describeLabelSpace(space: LabelSpace, builtIn?: { readonly images: number; readonly keys: number }): string {
  const classes = space.classes === null ? "all 1000 classes" : `${space.classes.count} classes of ${space.classes.file} (softmax restricted per crop)`;
  if (builtIn === undefined || builtIn.images === 0) return `label space: labels ${LAYOUT_WORDS[space.layout]}; ${classes}`;
  const validation = "from the built-in ILSVRC 2012 validation labels (names ILSVRC2012_val_NNNNNNNN)";
  const rest = builtIn.images < builtIn.keys ? ` for ${builtIn.images} of ${builtIn.keys} images, the rest ${LAYOUT_WORDS[space.layout]}` : "";
  return `label space: labels ${validation}${rest}; ${classes}`;
}

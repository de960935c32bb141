import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { StorageError } from "../storage/errors.js";
import type { EngineChoice } from "../model/load.js";
import type { CropCount } from "../model/predict.js";
import type { Flavour } from "../model/preprocess.js";
import type { Location } from "../storage/location.js";

/**
 * The contract between `plan`, the workers and `aggregate`: what a run scores
 * (`<out>/manifest.json`), what each queue message names, and where a batch's results go.
 */

export const MANIFEST_KEY = "manifest.json";
/**
 * @2 added the decoding settings (`applyExifOrientation`, `maxPixels`, each model's
 * `preprocess`); an @1 manifest lacks them, so workers cannot score it the way it was planned.
 */
export const MANIFEST_FORMAT = "googlenet-eval/manifest@2";
/**
 * @3 is @2 with `archives` and batches of archive members: written only for a run whose input
 * holds tar archives, so a worker that knows only @2 refuses such a run (dead-letters its
 * messages, naming the format) instead of reading `<archive>/<member>` keys as loose objects.
 */
export const ARCHIVES_MANIFEST_FORMAT = "googlenet-eval/manifest@3";
const PREVIOUS_MANIFEST_FORMATS = ["googlenet-eval/manifest@1"];
export const BATCH_MESSAGE_TYPE = "googlenet-eval/batch@1";
/** Where workers write batch results, relative to the run's `out`. */
export const BATCHES_FOLDER = "batches";
/** Hex digits of the manifest digest in a batch file's name: 64 bits, plenty to tell runs apart. */
const DIGEST_IN_KEY = 16;

export interface ManifestModel {
  /** Where workers load the model from (s3:// URL or absolute path), as summary.json reports it. */
  readonly url: string;
  readonly sha256: string;
  /** The input convention the worker's engine uses: the recognised one, or `preprocess`. */
  readonly flavour: Flavour;
  /**
   * `--preprocess` as given to plan, to pass to model/load.ts's `loadEngine` as `preprocess`
   * (it lets onnxruntime run a graph the architecture reader does not recognise); null when
   * the graph's recognised flavour is used.
   */
  readonly preprocess: Flavour | null;
}

export interface ManifestBatch {
  readonly id: string;
  /** Image keys relative to the manifest's input, in run order. */
  readonly keys: readonly string[];
  /** Class index per key, or null when the label source has none. */
  readonly labels: readonly (number | null)[];
  /**
   * For a batch of archive members: image members `first` to `last` (inclusive, counted among
   * the archive's image members in archive order) of `archives[archive]`, which `keys` name in
   * the same order. Absent for a batch of loose images.
   */
  readonly members?: ManifestMembers;
}

export interface ManifestMembers {
  readonly archive: number;
  readonly first: number;
  readonly last: number;
}

/**
 * A tar archive of the input. Its member index (offsets) is not in the manifest but beside it,
 * at `index` under `out`, so the manifest of a 50,000-image archive holds keys and labels only.
 */
export interface ManifestArchive {
  /** Its key relative to the input (its file name when it is the input): the first segment of its members' keys. */
  readonly key: string;
  /** Where workers read it: an s3:// URL or an absolute path. */
  readonly url: string;
  /** The version planned (S3's ETag): workers read with If-Match on it, so a replaced archive is refused. */
  readonly version: string;
  readonly size: number;
  /** Image members it holds. */
  readonly images: number;
  /** Key of its index file under `out` (storage/archive/index-file.ts). */
  readonly index: string;
}

export interface Manifest {
  /** {@link ARCHIVES_MANIFEST_FORMAT} exactly when `archives` is present. */
  readonly format: typeof MANIFEST_FORMAT | typeof ARCHIVES_MANIFEST_FORMAT;
  readonly runId: string;
  readonly createdAt: string;
  readonly codeVersion: string;
  /** The input folder or S3 prefix the keys are relative to. */
  readonly input: string;
  /** The run's output folder or S3 prefix (where this manifest lives). */
  readonly out: string;
  readonly models: readonly ManifestModel[];
  readonly crops: CropCount;
  readonly engine: EngineChoice;
  /** Rotate images by their EXIF orientation before cropping (false for validation runs, as ImageNet). */
  readonly applyExifOrientation: boolean;
  /** Images with more pixels become error records (decode.ts's `maxPixels`; default there 100 million). */
  readonly maxPixels: number;
  /** The label file or source the labels came from, or null for an unlabelled run. */
  readonly labels: string | null;
  /**
   * Class subset (indices, ascending) every crop's softmax is restricted to before averaging
   * (scoring/class-subset.ts); absent for all 1000 classes, so manifests without it still read.
   */
  readonly classes?: readonly number[];
  readonly images: number;
  /** The input's tar archives, when it holds any (then the format is {@link ARCHIVES_MANIFEST_FORMAT}). */
  readonly archives?: readonly ManifestArchive[];
  readonly batches: readonly ManifestBatch[];
}

/** The body of one queue message: small, because the keys live in the manifest. */
export interface BatchMessage {
  readonly type: typeof BATCH_MESSAGE_TYPE;
  readonly out: string;
  readonly runId: string;
  readonly batchId: string;
  /** sha256 of the manifest this message was planned from: the worker checks it and keys its output by it. */
  readonly manifestDigest: string;
}

/** A manifest and its digest ({@link digestOfManifest}), which names the run's batch files. */
export interface ManifestWithDigest {
  readonly manifest: Manifest;
  readonly manifestDigest: string;
}

const flavourSchema = z.enum(["bvlc", "torchvision"]);
const digestSchema = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (a sha256)");

const countSchema = z.number().int().nonnegative();

const manifestSchema = z.object({
  format: z.enum([MANIFEST_FORMAT, ARCHIVES_MANIFEST_FORMAT]),
  runId: z.string().min(1),
  createdAt: z.string(),
  codeVersion: z.string(),
  input: z.string().min(1),
  out: z.string().min(1),
  models: z
    .array(
      z.object({ url: z.string().min(1), sha256: digestSchema, flavour: flavourSchema, preprocess: flavourSchema.nullable() }),
    )
    .min(1),
  crops: z.union([z.literal(1), z.literal(10), z.literal(144)]),
  engine: z.enum(["tfjs", "onnxruntime", "auto"]),
  applyExifOrientation: z.boolean(),
  maxPixels: z.number().int().positive(),
  labels: z.string().nullable(),
  classes: z.array(z.number().int().min(0).max(999)).min(2).optional(),
  images: z.number().int().nonnegative(),
  archives: z
    .array(
      z.object({
        key: z.string().min(1),
        url: z.string().min(1),
        version: z.string(),
        size: countSchema,
        images: countSchema,
        index: z.string().min(1),
      }),
    )
    .optional(),
  batches: z.array(
    z
      .object({
        id: z.string().regex(/^[A-Za-z0-9_-]+$/),
        keys: z.array(z.string().min(1)),
        labels: z.array(z.number().int().min(0).nullable()),
        members: z.object({ archive: countSchema, first: countSchema, last: countSchema }).optional(),
      })
      .refine((batch) => batch.keys.length === batch.labels.length, "a batch needs one label per key"),
  ),
});

/** What the schema cannot say: @3 exactly with archives, and each batch's members within its archive. */
function archiveProblem(manifest: z.infer<typeof manifestSchema>): string | undefined {
  const archives = manifest.archives;
  if ((manifest.format === ARCHIVES_MANIFEST_FORMAT) !== (archives !== undefined)) {
    return `a ${manifest.format} manifest ${archives === undefined ? "needs" : "cannot have"} "archives"`;
  }
  for (const batch of manifest.batches) {
    const members = batch.members;
    if (members === undefined) continue;
    const archive = archives?.[members.archive];
    if (archive === undefined) return `batch ${batch.id} names archive ${members.archive}, which the manifest does not list`;
    if (members.first > members.last || members.last >= archive.images || batch.keys.length !== members.last - members.first + 1) {
      return `batch ${batch.id}: members ${members.first}-${members.last} of ${archive.key} (${archive.images} images) do not match its ${batch.keys.length} keys`;
    }
  }
  return undefined;
}

const batchMessageSchema = z.object({
  type: z.literal(BATCH_MESSAGE_TYPE),
  out: z.string().min(1),
  runId: z.string().min(1),
  batchId: z.string().regex(/^[A-Za-z0-9_-]+$/),
  manifestDigest: digestSchema,
});

function issues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`).join("; ");
}

/** Parses manifest.json text; `where` (its URL) goes into the error message. */
export function parseManifest(text: string, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new StorageError(`${where} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  const format = (json as { format?: unknown } | null)?.format;
  if (typeof format === "string" && PREVIOUS_MANIFEST_FORMATS.includes(format)) {
    throw new StorageError(
      `${where} is a ${format} manifest, planned by an older googlenet-eval; this version reads only ${MANIFEST_FORMAT} (${ARCHIVES_MANIFEST_FORMAT} for archives), ` +
        `which also records the decoding settings (EXIF orientation, pixel limit, preprocess). ` +
        `Plan the run again with this version (replacing the same output prefix, or into a new one)`,
    );
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) throw new StorageError(`${where} is not a googlenet-eval manifest: ${issues(parsed.error)}`);
  const problem = archiveProblem(parsed.data);
  if (problem !== undefined) throw new StorageError(`${where} is not a googlenet-eval manifest: ${problem}`);
  const ids = new Set<string>();
  for (const batch of parsed.data.batches) {
    if (ids.has(batch.id)) throw new StorageError(`${where}: batch id "${batch.id}" appears twice`);
    ids.add(batch.id);
  }
  return parsed.data as Manifest;
}

/** JSON with object keys sorted at every level and no whitespace: one text per value. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The run's identity: sha256 (hex) of the manifest's canonical JSON (keys sorted, no
 * whitespace). Taken over the content rather than the file's bytes, so plan (which holds the
 * object it writes) and a worker (which holds what it parsed) compute it alike, whatever the
 * key order or indentation of the stored file.
 */
export function digestOfManifest(manifest: Manifest): string {
  return createHash("sha256").update(canonicalJson(manifest)).digest("hex");
}

/**
 * Reads `<out>/manifest.json` and the digest of its bytes; a missing manifest is a StorageError
 * naming where it looked.
 */
export async function readManifestWithDigest(out: Location): Promise<ManifestWithDigest> {
  const where = `${out.url}/${MANIFEST_KEY}`;
  const bytes = await out.readIfExists(MANIFEST_KEY);
  if (bytes === undefined) throw new StorageError(`no manifest at ${where}; plan the run into ${out.url} first`);
  const manifest = parseManifest(bytes.toString("utf8"), where);
  return { manifest, manifestDigest: digestOfManifest(manifest) };
}

/** Reads `<out>/manifest.json` without its digest (see {@link readManifestWithDigest}). */
export async function readManifest(out: Location): Promise<Manifest> {
  return (await readManifestWithDigest(out)).manifest;
}

/** The manifest as stored: stable key order, two-space indent, final newline. */
export function serializeManifest(manifest: Manifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/**
 * A batch's result key, tied to its run: `batches/<batchId>.<first 16 hex of the manifest
 * digest>.jsonl`. A redelivered batch overwrites its own earlier output instead of adding a
 * second copy, and a file left by another run under the same `out` (another manifest, so
 * another digest) can never be taken for this run's.
 */
export function batchResultKeyFor(manifestDigest: string, batchId: string): string {
  if (!/^[0-9a-f]{64}$/.test(manifestDigest)) {
    throw new StorageError(`manifest digest "${manifestDigest}" is not a sha256 (64 lowercase hex digits)`);
  }
  return `${BATCHES_FOLDER}/${batchId}.${manifestDigest.slice(0, DIGEST_IN_KEY)}.jsonl`;
}

/**
 * The manifest@1 result key, with no run identity in it.
 * @deprecated Use {@link batchResultKeyFor}; `aggregate` ignores files under this name. Kept only
 * until queue/worker.ts switches.
 */
export function batchResultKey(batchId: string): string {
  return `${BATCHES_FOLDER}/${batchId}.jsonl`;
}

/** Batch ids that sort in run order: b00000, b00001, ... (wider only past 100,000 batches). */
export function batchId(index: number, count: number): string {
  const width = Math.max(5, String(Math.max(count - 1, 0)).length);
  return `b${String(index).padStart(width, "0")}`;
}

export function batchMessage(manifest: Manifest, batch: ManifestBatch, manifestDigest: string): BatchMessage {
  return { type: BATCH_MESSAGE_TYPE, out: manifest.out, runId: manifest.runId, batchId: batch.id, manifestDigest };
}

/**
 * Reads a parsed message body as a batch message: undefined when it is not one (no or another
 * `type`), a StorageError when it says it is one but is malformed (including one without
 * `manifestDigest`: plan and workers ship together, so such a message comes from no current plan).
 */
export function parseBatchMessage(body: unknown): BatchMessage | undefined {
  if (typeof body !== "object" || body === null || (body as { type?: unknown }).type !== BATCH_MESSAGE_TYPE) {
    return undefined;
  }
  const parsed = batchMessageSchema.safeParse(body);
  if (!parsed.success) throw new StorageError(`malformed batch message: ${issues(parsed.error)}`);
  return parsed.data;
}

let cachedVersion: string | undefined;

/**
 * This package's version from its package.json, found by walking up from this file, so it works
 * from the sources (tsx) and from dist/ alike.
 */
export function codeVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "googlenet-eval" && typeof pkg.version === "string") {
        cachedVersion = pkg.version;
        return cachedVersion;
      }
    } catch {
      // No package.json at this level; keep walking up.
    }
    const parent = dirname(dir);
    if (parent === dir) {
      cachedVersion = "unknown";
      return cachedVersion;
    }
    dir = parent;
  }
}

import { z } from "zod";
import { StorageError } from "../errors.js";
import type { Location } from "../location.js";
import type { TarIndex, TarMember } from "./tar-walk.js";

/*
 * An archive's member index as a file: what `plan` stores under the run for its workers (so a
 * worker never walks the archive) and in an index cache (so a later plan of the same bytes
 * never streams them again). It names the bytes it describes by the archive's version (S3's
 * ETag) and size; a reader that finds another version refuses it, since its offsets would
 * slice other bytes.
 */

export const INDEX_FILE_FORMAT = "googlenet-eval/tar-index@1";

export interface StoredIndex {
  /** The archive as it was indexed: an s3:// URL or an absolute path. */
  readonly archive: string;
  /** The archive's version (ETag) when it was indexed. */
  readonly version: string;
  readonly size: number;
  readonly index: TarIndex;
}

/** A member as stored: [path, data offset, size, kind, truncated], a fifth of the bytes of an object. */
type MemberRow = [string, number, number, "file" | "sparse", boolean];

const countSchema = z.number().int().nonnegative();

const fileSchema = z.object({
  format: z.literal(INDEX_FILE_FORMAT),
  archive: z.string().min(1),
  version: z.string(),
  size: countSchema,
  members: z.array(z.tuple([z.string().min(1), countSchema, countSchema, z.enum(["file", "sparse"]), z.boolean()])),
  skipped: z.object({ directories: countSchema, links: countSchema, other: countSchema }),
  smallContents: z.record(z.string()),
  end: countSchema,
});

/** The index file's text: one member per line, so a 50,000-member index stays readable with `less`. */
export function serializeIndex(stored: StoredIndex): string {
  const { index } = stored;
  const rows = index.members.map((member): MemberRow => [member.path, member.offset, member.size, member.kind, member.truncated]);
  const head = { format: INDEX_FILE_FORMAT, archive: stored.archive, version: stored.version, size: stored.size };
  const tail = { skipped: index.skipped, smallContents: index.smallContents, end: index.end };
  const json = (value: object) => JSON.stringify(value).slice(1, -1);
  return `{${json(head)},\n"members":[\n${rows.map((row) => JSON.stringify(row)).join(",\n")}\n],\n${json(tail)}}\n`;
}

/** Parses an index file; a file that is not one is a StorageError naming `where`. */
export function parseIndex(text: string, where: string): StoredIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new StorageError(`${where} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const detail = parsed.error.issues.slice(0, 3).map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`);
    throw new StorageError(`${where} is not a ${INDEX_FILE_FORMAT} archive index: ${detail.join("; ")}`);
  }
  const file = parsed.data;
  const members = file.members.map(([path, offset, size, kind, truncated]): TarMember => ({ path, offset, size, kind, truncated }));
  return {
    archive: file.archive,
    version: file.version,
    size: file.size,
    index: { members, skipped: file.skipped, smallContents: file.smallContents, end: file.end },
  };
}

/**
 * The index cache's key for an archive of this version and size: what identifies its bytes,
 * wherever they are stored (a copy of an object keeps its ETag). Characters a key should not
 * carry (ETag quotes) are dropped; the file itself holds the exact version, checked on reading.
 */
export function indexCacheKey(version: string, size: number): string {
  return `tar-index-${version.replace(/[^A-Za-z0-9_-]/g, "")}-${size}.json`;
}

/** The cached index of an archive of this version and size, or undefined when the cache has none. */
export async function readCachedIndex(cache: Location, version: string, size: number): Promise<StoredIndex | undefined> {
  const key = indexCacheKey(version, size);
  const bytes = await cache.readIfExists(key);
  if (bytes === undefined) return undefined;
  const stored = parseIndex(bytes.toString("utf8"), `${cache.url}/${key}`);
  // A key is made from the version with characters dropped, so two versions could share one.
  return stored.version === version && stored.size === size ? stored : undefined;
}

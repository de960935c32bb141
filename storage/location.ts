import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { MissingObjectError, ObjectTooLargeError, StorageError } from "./errors.js";

/**
 * A folder of objects addressed by `/`-separated keys: a local directory or an S3 prefix.
 * Everything in scoring/ and queue/ reads and writes through this, so `score`, `plan`, the worker and
 * `aggregate` take `s3://bucket/prefix` wherever they take a path.
 */
export interface Location {
  /** The folder as the user named it (a path or s3://bucket/prefix). */
  readonly url: string;
  /** Every key below this location, relative to it, `/`-separated, in sorted order. */
  list(): AsyncIterable<string>;
  /** Reads a whole object; with `maxBytes`, one larger is an ObjectTooLargeError, never read whole. */
  read(key: string, options?: ReadOptions): Promise<Buffer>;
  /** Reads a key, or returns undefined when it does not exist. */
  readIfExists(key: string): Promise<Buffer | undefined>;
  /** Writes a whole object, replacing any earlier one (atomically for local folders). */
  write(key: string, body: string | Uint8Array): Promise<void>;
  exists(key: string): Promise<boolean>;
  /**
   * Deletes every object below this location (`plan --replace`) but the top-level keys in
   * `keep` (default: none), and returns how many it deleted. Deleting an empty or absent
   * location is not an error.
   */
  clear(keep?: readonly string[]): Promise<number>;
  /** A location for the sub-folder or sub-prefix `key`. */
  child(key: string): Location;
}

export interface ReadOptions {
  /** Largest object, in bytes, to read. Default: no cap. */
  readonly maxBytes?: number | undefined;
}

/** Rejects keys that would escape their location ("..", absolute, empty segments). */
export function assertSafeKey(key: string): void {
  const parts = key.split("/");
  if (key.length === 0 || key.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new StorageError(`unsafe key "${key}": keys must be relative, without "." or ".." segments`);
  }
}

/** Reads a file of at most `maxBytes`, counting while reading, since the file can grow after a stat. */
async function readCapped(path: string, maxBytes: number): Promise<Buffer> {
  const { size } = await stat(path);
  if (size > maxBytes) throw new ObjectTooLargeError(`${path}: ${size} bytes, more than the limit of ${maxBytes}`, maxBytes);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of createReadStream(path, { end: maxBytes })) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) throw new ObjectTooLargeError(`${path}: more than the limit of ${maxBytes} bytes`, maxBytes);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

export class LocalLocation implements Location {
  readonly url: string;
  private readonly root: string;

  constructor(path: string) {
    this.url = path;
    this.root = resolve(path);
  }

  async *list(): AsyncIterable<string> {
    const keys: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT" && dir === this.root) return;
        throw new StorageError(`cannot list folder ${dir}: ${(error as Error).message}`, { cause: error });
      }
      for (const entry of entries) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else if (entry.isFile() || entry.isSymbolicLink()) keys.push(relative(this.root, full).split(sep).join("/"));
      }
    };
    await walk(this.root);
    keys.sort();
    yield* keys;
  }

  async read(key: string, options: ReadOptions = {}): Promise<Buffer> {
    try {
      return options.maxBytes === undefined ? await readFile(this.pathOf(key)) : await readCapped(this.pathOf(key), options.maxBytes);
    } catch (error) {
      if (error instanceof ObjectTooLargeError) throw error;
      const Kind = (error as NodeJS.ErrnoException).code === "ENOENT" ? MissingObjectError : StorageError;
      throw new Kind(`cannot read ${this.pathOf(key)}: ${(error as Error).message}`, { cause: error });
    }
  }

  async readIfExists(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.pathOf(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new StorageError(`cannot read ${this.pathOf(key)}: ${(error as Error).message}`, { cause: error });
    }
  }

  async write(key: string, body: string | Uint8Array): Promise<void> {
    const target = this.pathOf(key);
    await mkdir(dirname(target), { recursive: true });
    // Write then rename, so a reader (or a resumed run) never sees half a file.
    // Random, not the time: two writes of one key in the same millisecond (concurrent
    // aggregations in one process) must not share a temporary file.
    const temporary = `${target}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    await writeFile(temporary, body);
    await rename(temporary, target);
  }

  async exists(key: string): Promise<boolean> {
    try {
      await stat(this.pathOf(key));
      return true;
    } catch {
      return false;
    }
  }

  async clear(keep: readonly string[] = []): Promise<number> {
    let count = 0;
    for await (const key of this.list()) if (!keep.includes(key)) count++;
    // Empty the folder but keep it: it may be a mount point or carry permissions the user set.
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
      throw new StorageError(`cannot list folder ${this.root}: ${(error as Error).message}`, { cause: error });
    }
    for (const entry of entries.filter((name) => !keep.includes(name))) {
      const path = join(this.root, entry);
      try {
        await rm(path, { recursive: true, force: true });
      } catch (error) {
        throw new StorageError(`cannot delete ${path}: ${(error as Error).message}`, { cause: error });
      }
    }
    return count;
  }

  child(key: string): Location {
    assertSafeKey(key);
    return new LocalLocation(join(this.url, ...key.split("/")));
  }

  /** The absolute local path of a key. */
  pathOf(key: string): string {
    assertSafeKey(key);
    return join(this.root, ...key.split("/"));
  }
}

export function isS3Url(url: string): boolean {
  return url.startsWith("s3://");
}


/** Splits `s3://bucket/some/prefix` into bucket and key (no leading slash). */
export function parseS3Url(url: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!match?.[1]) throw new StorageError(`not an S3 URL: "${url}" (expected s3://bucket/prefix)`);
  return { bucket: match[1], key: match[2] ?? "" };
}

/** sha256 of a local file, streamed so a large model is not read twice into memory. */
export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export function sha256OfBytes(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

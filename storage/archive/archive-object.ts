import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { pipeline, Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { ConfigurationError } from "../../model/errors.js";
import { StorageError } from "../errors.js";
import type { S3Location } from "../s3-location.js";
import { FileByteSource, StreamByteSource, walkTar, type TarIndex, type WalkOptions } from "./tar-walk.js";

/*
 * One tar archive where it is stored: a local file or an S3 object, plain or gzipped. The one
 * place that knows how each is indexed and how its bytes are reached.
 */

/** File names taken as tar archives, in any case. */
const PLAIN_TAR = /\.tar$/i;
const GZIPPED_TAR = /\.(tar\.gz|tgz)$/i;

export function isArchiveKey(key: string): boolean {
  return PLAIN_TAR.test(key) || GZIPPED_TAR.test(key);
}

export function isGzippedArchiveKey(key: string): boolean {
  return GZIPPED_TAR.test(key);
}

export interface ArchiveObject {
  /** As messages name it: a local path or an s3:// URL. */
  readonly url: string;
  readonly size: number;
  /** What identifies these bytes: S3's ETag, or a local file's size, mtime and inode. */
  readonly version: string;
  /** False for .tar.gz: its members can only be reached by reading through it in order. */
  readonly seekable: boolean;
  /** Walks the headers once; `onProgress` hears bytes of the archive passed. */
  index(options?: WalkOptions & { onProgress?: (bytes: number) => void }): Promise<TarIndex>;
  /** Bytes [start, end) of a seekable archive, checked to be the version indexed. */
  readRange(start: number, end: number): Promise<Buffer>;
  /** The (gunzipped) archive bytes from the start, for a reader that goes through it in order. */
  openStream(): Promise<AsyncIterable<Uint8Array>>;
}

/** A local archive file. */
export async function localArchive(path: string): Promise<ArchiveObject> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new StorageError(`cannot open archive ${path}: ${(error as Error).message}`, { cause: error });
  }
  const gzipped = isGzippedArchiveKey(path);
  const version = `${info.size}:${info.mtimeMs}:${info.ino}`;
  const openStream = async (): Promise<AsyncIterable<Uint8Array>> => {
    const file = createReadStream(path);
    // pipeline, not pipe: a read error must reach the reader of the gunzipped bytes.
    return gzipped ? pipeline(file, createGunzip(), () => undefined) : file;
  };
  return {
    url: path,
    size: info.size,
    version,
    seekable: !gzipped,
    async index(options = {}) {
      if (gzipped) return walkStream(await openStream(), path, options);
      const source = await FileByteSource.open(path);
      try {
        return await walkTar(source, path, options);
      } finally {
        await source.close();
      }
    },
    async readRange(start, end) {
      const source = await FileByteSource.open(path);
      try {
        const now = await stat(path);
        if (`${now.size}:${now.mtimeMs}:${now.ino}` !== version) {
          throw new StorageError(`${path} changed since its index was built: score it again`);
        }
        await source.skip(start);
        const bytes = await source.read(end - start);
        return bytes;
      } finally {
        await source.close();
      }
    },
    openStream,
  };
}

/** Indexes an archive by reading its (gunzipped) bytes through once, as S3 and .tar.gz need. */
async function walkStream(
  stream: AsyncIterable<Uint8Array>,
  url: string,
  options: WalkOptions & { onProgress?: (bytes: number) => void },
): Promise<TarIndex> {
  const source = new StreamByteSource(stream, options.onProgress);
  try {
    return await walkTar(source, url, options);
  } catch (error) {
    throw gunzipFault(error, url);
  } finally {
    await source.close();
  }
}

/** A gunzip failure is the archive's damage, not an image's: it stops the run, naming the file. */
function gunzipFault(error: unknown, url: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (typeof code === "string" && code.startsWith("Z_")) {
    return new StorageError(`${url}: the gzip stream is damaged (${(error as Error).message})`, { cause: error });
  }
  return error;
}

/**
 * An archive stored in S3 (`key` relative to `location`). Reads carry If-Match with the ETag
 * found when it was opened, so an object replaced since is an ObjectChangedError.
 */
export async function s3Archive(location: S3Location, key: string, known?: { etag: string; size: number }): Promise<ArchiveObject> {
  const found = known ?? (await location.head(key));
  const url = `${location.url}/${key}`;
  if (found === undefined) throw new StorageError(`archive ${url}: no such key`);
  const gzipped = isGzippedArchiveKey(key);
  const openStream = async (): Promise<AsyncIterable<Uint8Array>> => {
    const body = await location.stream(key, { ifMatch: found.etag });
    return gzipped ? pipeline(Readable.from(body), createGunzip(), () => undefined) : body;
  };
  return {
    url,
    size: found.size,
    version: found.etag,
    seekable: !gzipped,
    async index(options = {}) {
      return walkStream(await openStream(), url, options);
    },
    async readRange(start, end) {
      if (gzipped) throw new ConfigurationError(`${url} is gzipped: its members cannot be read by range`);
      return location.readRange(key, start, end, { ifMatch: found.etag });
    },
    openStream,
  };
}

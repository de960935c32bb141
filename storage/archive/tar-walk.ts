import { open, type FileHandle } from "node:fs/promises";
import { StorageError } from "../errors.js";
import { BLOCK, decodeHeader, isZeroBlock, paddedSize, parsePaxRecords, TarFormatError } from "./tar-header.js";

/*
 * One pass over a tar archive's headers, producing its member index: each member's path, where
 * its data starts and its size. A local file is walked by offsets, reading only the headers (a
 * 6.4 GB archive of 50,000 JPEGs is ~25 MB of headers), so no image is read to index it; a
 * stream (an S3 object, a gunzipped .tar.gz) is walked by reading through it once.
 *
 * tar-stream and node-tar were considered: both read every byte of every member to reach the
 * next header and neither reports a member's data offset, which the ranged reads of a planned
 * run need; the header formats themselves are small and fixed (tar-header.ts).
 */

/** A forward-only view of an archive's bytes. */
export interface ByteSource {
  /** Bytes consumed so far: the archive offset of the next read. */
  readonly position: number;
  /** Reads up to `length` bytes; fewer only at the end of the archive. */
  read(length: number): Promise<Buffer>;
  /** Moves past up to `length` bytes without keeping them; returns how many there were. */
  skip(length: number): Promise<number>;
  close(): Promise<void>;
}

/** What a member is, for scoring: only regular files are scored; the rest are counted. */
export type MemberKind = "file" | "sparse";

export interface TarMember {
  /** The member's path inside the archive, `/`-separated, without a leading "./". */
  readonly path: string;
  /** Archive offset of the member's first data byte. */
  readonly offset: number;
  /** Data bytes as the header states them. */
  readonly size: number;
  /** "sparse": a GNU sparse file, whose stored bytes are not the file; scored as an error. */
  readonly kind: MemberKind;
  /** The archive ends before this member's data does. */
  readonly truncated: boolean;
}

export interface SkippedMembers {
  directories: number;
  /** Hard and symbolic links: they hold no bytes of their own. */
  links: number;
  /** Devices, FIFOs, and members whose path leaves the archive ("..", absolute). */
  other: number;
}

export interface TarIndex {
  /** Regular (and sparse) file members, in archive order. */
  readonly members: TarMember[];
  readonly skipped: SkippedMembers;
  /** Content of small members (WebDataset `.cls` labels), by member path. */
  readonly smallContents: Record<string, string>;
  /** Archive offset where the members end (the end-of-archive blocks, or the end of the bytes). */
  readonly end: number;
}

export interface WalkOptions {
  /** Members whose content the index keeps (at most 256 bytes each), e.g. WebDataset `.cls`. */
  readonly keepContent?: (path: string) => boolean;
}

const KEPT_CONTENT_MAX_BYTES = 256;

/** A member path as a key segment path: "./a/b" -> "a/b"; undefined when it would escape. */
function memberPath(raw: string): string | undefined {
  const parts = raw.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.length === 0 || raw.startsWith("/") || parts.includes("..")) return undefined;
  return parts.join("/");
}

/** Reads exactly `length` bytes of a pax or GNU long-name record, or fails naming the place. */
async function readRecord(source: ByteSource, length: number, archive: string, headerAt: number): Promise<Buffer> {
  const data = await source.read(length);
  if (data.length < length) throw new TarFormatError(`${archive}: the archive ends inside the extended header at byte ${headerAt}`, archive, headerAt);
  await source.skip(paddedSize(length) - length);
  return data;
}

/**
 * Walks every header of the archive. A header whose checksum fails stops the walk with a
 * TarFormatError naming the archive and byte offset; the end-of-archive blocks (or the end of
 * the bytes) end it, and anything after them is ignored. A member cut off by the end of the
 * bytes is kept, marked truncated, so it becomes that member's error record.
 */
export async function walkTar(source: ByteSource, archive: string, options: WalkOptions = {}): Promise<TarIndex> {
  const members: TarMember[] = [];
  const skipped: SkippedMembers = { directories: 0, links: 0, other: 0 };
  const smallContents: Record<string, string> = {};
  // pax "x" records and GNU long names apply to the next member only; pax "g" to all after it.
  let next: { path?: string; size?: number; sparse?: boolean } = {};
  let global: { path?: string } = {};
  for (;;) {
    const headerAt = source.position;
    const block = await source.read(BLOCK);
    // Fewer bytes than a header at the end: an archive cut inside a header holds nothing more.
    if (block.length < BLOCK) return { members, skipped, smallContents, end: headerAt };
    if (isZeroBlock(block)) return { members, skipped, smallContents, end: headerAt };
    const header = decodeHeader(block, archive, headerAt);
    if (header.type === "x" || header.type === "g") {
      const records = parsePaxRecords(await readRecord(source, header.size, archive, headerAt), archive, headerAt);
      const sizeText = records.get("size");
      const fields = {
        ...(records.has("path") ? { path: records.get("path") as string } : {}),
        ...(records.has("GNU.sparse.name") ? { path: records.get("GNU.sparse.name") as string } : {}),
        ...(sizeText !== undefined ? { size: Number(sizeText) } : {}),
        ...([...records.keys()].some((key) => key.startsWith("GNU.sparse.")) ? { sparse: true } : {}),
      };
      if (fields.size !== undefined && !(Number.isSafeInteger(fields.size) && fields.size >= 0)) {
        throw new TarFormatError(`${archive}: pax header at byte ${headerAt} has an unreadable size "${sizeText}"`, archive, headerAt);
      }
      if (header.type === "x") next = { ...next, ...fields };
      else global = fields.path !== undefined ? { path: fields.path } : global;
      continue;
    }
    if (header.type === "L" || header.type === "K") {
      const text = (await readRecord(source, header.size, archive, headerAt)).toString("utf8").replace(/\0+$/, "");
      if (header.type === "L") next = { ...next, path: text };
      continue;
    }
    const size = next.size ?? header.size;
    const rawPath = next.path ?? global.path ?? (header.ustarPrefix ? `${header.ustarPrefix}/${header.name}` : header.name);
    const sparse = next.sparse === true || header.type === "S";
    next = {};
    const path = memberPath(rawPath);
    const dataAt = source.position;
    // Links, directories and devices carry no data even when their size field is set.
    const isFile = header.type === "0" || header.type === "\0" || header.type === "7" || sparse;
    const dataBytes = isFile ? size : 0;
    if (!isFile) {
      if (header.type === "5") skipped.directories++;
      else if (header.type === "1" || header.type === "2") skipped.links++;
      else skipped.other++;
    } else if (path === undefined) {
      skipped.other++;
    }
    const keep = isFile && path !== undefined && !sparse && size <= KEPT_CONTENT_MAX_BYTES && options.keepContent?.(path) === true;
    let present: number;
    if (keep) {
      const data = await source.read(size);
      present = data.length;
      if (present === size) smallContents[path] = data.toString("utf8");
      present += await source.skip(paddedSize(size) - size);
    } else {
      present = await source.skip(paddedSize(dataBytes));
    }
    const truncated = present < dataBytes;
    if (isFile && path !== undefined) members.push({ path, offset: dataAt, size, kind: sparse ? "sparse" : "file", truncated });
    if (present < paddedSize(dataBytes)) return { members, skipped, smallContents, end: source.position };
  }
}

/** A local file read by offsets: skipping costs nothing, so only headers are read. */
export class FileByteSource implements ByteSource {
  position = 0;

  private constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly path: string,
  ) {}

  static async open(path: string): Promise<FileByteSource> {
    try {
      const handle = await open(path, "r");
      const { size } = await handle.stat();
      return new FileByteSource(handle, size, path);
    } catch (error) {
      throw new StorageError(`cannot open archive ${path}: ${(error as Error).message}`, { cause: error });
    }
  }

  async read(length: number): Promise<Buffer> {
    const wanted = Math.max(0, Math.min(length, this.size - this.position));
    const buffer = Buffer.allocUnsafe(wanted);
    let filled = 0;
    while (filled < wanted) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await this.handle.read(buffer, filled, wanted - filled, this.position + filled));
      } catch (error) {
        throw new StorageError(`cannot read archive ${this.path} at byte ${this.position + filled}: ${(error as Error).message}`, { cause: error });
      }
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    this.position += filled;
    return filled === wanted ? buffer : buffer.subarray(0, filled);
  }

  async skip(length: number): Promise<number> {
    const moved = Math.max(0, Math.min(length, this.size - this.position));
    this.position += moved;
    return moved;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * Any byte stream read once, front to back (an S3 GET's body, a gunzip stream). `onProgress`
 * hears the bytes consumed so far, for a progress line.
 */
export class StreamByteSource implements ByteSource {
  position = 0;
  private readonly iterator: AsyncIterator<Uint8Array>;
  /** Chunks received and not yet consumed, front first; kept apart so a long read copies once. */
  private chunks: Buffer[] = [];
  private pendingBytes = 0;
  private done = false;

  constructor(
    stream: AsyncIterable<Uint8Array>,
    private readonly onProgress?: (bytes: number) => void,
  ) {
    this.iterator = stream[Symbol.asyncIterator]();
  }

  /** Pulls chunks until `length` bytes are pending or the stream ends. */
  private async fill(length: number): Promise<void> {
    while (this.pendingBytes < length && !this.done) {
      const next = await this.iterator.next();
      if (next.done === true) {
        this.done = true;
      } else if (next.value.length > 0) {
        this.chunks.push(Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength));
        this.pendingBytes += next.value.length;
      }
    }
  }

  /** Removes up to `length` bytes from the front; returns them when `keep`. */
  private take(length: number, keep: boolean): Buffer[] {
    const taken: Buffer[] = [];
    let left = length;
    while (left > 0 && this.chunks.length > 0) {
      const head = this.chunks[0] as Buffer;
      if (head.length <= left) {
        this.chunks.shift();
        if (keep) taken.push(head);
        left -= head.length;
      } else {
        if (keep) taken.push(head.subarray(0, left));
        this.chunks[0] = head.subarray(left);
        left = 0;
      }
    }
    const moved = length - left;
    this.pendingBytes -= moved;
    this.position += moved;
    this.onProgress?.(this.position);
    return taken;
  }

  async read(length: number): Promise<Buffer> {
    await this.fill(length);
    // A copy: the stream may reuse its chunks' memory once they are handed on.
    return Buffer.concat(this.take(length, true));
  }

  async skip(length: number): Promise<number> {
    let moved = 0;
    while (moved < length) {
      if (this.pendingBytes === 0) {
        if (this.done) break;
        await this.fill(1);
        continue;
      }
      const step = Math.min(length - moved, this.pendingBytes);
      this.take(step, false);
      moved += step;
    }
    return moved;
  }

  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}

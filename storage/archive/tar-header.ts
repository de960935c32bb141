import { StorageError } from "../errors.js";

/*
 * The tar header formats real tools write: POSIX ustar, GNU tar's long names and sparse
 * members, and pax extended headers (POSIX.1-2001). Only what scoring needs is decoded: the
 * member's path, size, kind and where its data starts; owners, modes and times are not.
 */

export const BLOCK = 512;

/** A header block whose checksum does not hold: the archive is damaged at `offset`. */
export class TarFormatError extends StorageError {
  constructor(
    message: string,
    readonly archive: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = "TarFormatError";
  }
}

/** What a header block says before pax or GNU long-name records are applied. */
export interface RawHeader {
  readonly name: string;
  readonly size: number;
  /** The typeflag character; "\0" (old tar) is a regular file as "0" is. */
  readonly type: string;
  readonly ustarPrefix: string;
}

/** Whether every byte of a block is zero: two such blocks end an archive. */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Text up to the first NUL of a fixed-width field. */
function field(block: Uint8Array, start: number, length: number): string {
  const end = block.indexOf(0, start);
  const stop = end === -1 || end > start + length ? start + length : end;
  return Buffer.from(block.buffer, block.byteOffset + start, stop - start).toString("utf8");
}

/**
 * A numeric field: octal digits (space or NUL padded), or GNU's base-256 form (high bit of the
 * first byte set) that tar uses for sizes of 8 GiB and more.
 */
function numeric(block: Uint8Array, start: number, length: number): number {
  const first = block[start] as number;
  if ((first & 0x80) !== 0) {
    let value = first & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + (block[start + i] as number);
    return value;
  }
  const text = field(block, start, length).replace(/[ \0]+$/, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) return Number.NaN;
  return parseInt(text, 8);
}

/**
 * Checks a header block's checksum (the sum of its bytes with the checksum field taken as
 * spaces; old tars summed signed bytes, so both sums are accepted, as GNU tar does) and decodes
 * it. `offset` and `archive` only name the place in the error.
 */
export function decodeHeader(block: Uint8Array, archive: string, offset: number): RawHeader {
  const stored = numeric(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  if (Number.isNaN(stored) || (stored !== unsigned && stored !== signed)) {
    throw new TarFormatError(
      `${archive}: damaged tar header at byte ${offset} (checksum ${Number.isNaN(stored) ? "unreadable" : stored}, the block sums to ${unsigned})`,
      archive,
      offset,
    );
  }
  const size = numeric(block, 124, 12);
  if (Number.isNaN(size)) throw new TarFormatError(`${archive}: tar header at byte ${offset} has an unreadable size`, archive, offset);
  const magic = field(block, 257, 6);
  return {
    name: field(block, 0, 100),
    size,
    type: String.fromCharCode(block[156] as number),
    // Only ustar (and pax, which is ustar) has a prefix field; GNU's old format keeps other data there.
    ustarPrefix: magic === "ustar" ? field(block, 345, 155) : "",
  };
}

/**
 * The records of a pax extended header: "<length> <key>=<value>\n", length counting the whole
 * record in bytes (values are UTF-8 and may hold newlines, so records are cut by length).
 */
export function parsePaxRecords(data: Uint8Array, archive: string, offset: number): Map<string, string> {
  const records = new Map<string, string>();
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  while (at < bytes.length && bytes[at] !== 0) {
    const space = bytes.indexOf(0x20, at);
    const length = space === -1 ? Number.NaN : Number(bytes.subarray(at, space).toString("ascii"));
    if (!Number.isInteger(length) || length <= 0 || at + length > bytes.length) {
      throw new TarFormatError(`${archive}: damaged pax extended header at byte ${offset}`, archive, offset);
    }
    const record = bytes.subarray(space + 1, at + length - 1).toString("utf8");
    const equals = record.indexOf("=");
    if (equals > 0) records.set(record.slice(0, equals), record.slice(equals + 1));
    at += length;
  }
  return records;
}

/** Bytes a member's data takes in the archive: its size rounded up to whole blocks. */
export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

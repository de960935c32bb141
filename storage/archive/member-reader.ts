import { ImageDecodeError } from "../../model/errors.js";
import { ObjectTooLargeError } from "../errors.js";
import type { ArchiveObject } from "./archive-object.js";
import { StreamByteSource, type TarMember } from "./tar-walk.js";

/*
 * Reading the members of one archive that a run scores, in the order it scores them. A
 * seekable archive is read in spans: one read (a ranged GET on S3) covers several consecutive
 * members and each is sliced from it, which is what makes a 50,000-image archive cost
 * hundreds of GETs rather than 50,000. A gzipped archive is read through once, in order.
 */

export interface SpanLimits {
  /** Most bytes one read covers; a member larger than this is read alone. */
  readonly maxBytes: number;
  /** Most members one read covers. */
  readonly maxMembers: number;
}

/** Score's reads of an S3 archive: 32 members or 16 MiB a GET, at most two spans held while prefetching. */
export const SCORE_SPAN_LIMITS: SpanLimits = { maxBytes: 16 * 1024 * 1024, maxMembers: 32 };

/** The reason a member cannot be scored, before any byte of it is read; undefined when it can. */
export function memberFault(member: TarMember, key: string, maxInputBytes: number): Error | undefined {
  if (member.kind === "sparse") return new ImageDecodeError(`${key}: a sparse tar member (its stored bytes are not the file's; unpack it with tar to score it)`);
  if (member.truncated) return new ImageDecodeError(`${key}: cut off by the end of the archive`);
  if (member.size > maxInputBytes) return new ObjectTooLargeError(`${key}: ${member.size} bytes, more than the limit of ${maxInputBytes}`, maxInputBytes);
  return undefined;
}

interface Span {
  readonly first: number;
  readonly last: number;
  readonly bytes: Promise<Buffer>;
}

/**
 * Reads members of a seekable archive, given in archive order, in spans. Reads must come in
 * that order (as the scorer's prefetch makes them); a span is dropped once a later one is asked
 * for, so at most the spans the prefetch depth reaches are held.
 */
export class SpanReader {
  private readonly spans: Span[] = [];

  constructor(
    private readonly archive: ArchiveObject,
    private readonly members: readonly TarMember[],
    private readonly limits: SpanLimits,
    private readonly readable: (index: number) => boolean = () => true,
  ) {}

  /** The bytes of `members[index]`. */
  async read(index: number): Promise<Buffer> {
    let span = this.spans.find((candidate) => candidate.first <= index && index <= candidate.last);
    if (span === undefined) {
      span = this.startSpan(index);
      this.spans.push(span);
    }
    // Spans wholly before this read are done with.
    while (this.spans.length > 0 && (this.spans[0] as Span).last < index) this.spans.shift();
    const member = this.members[index] as TarMember;
    const first = this.members[span.first] as TarMember;
    const bytes = await span.bytes;
    const start = member.offset - first.offset;
    return bytes.subarray(start, start + member.size);
  }

  private startSpan(index: number): Span {
    const first = this.members[index] as TarMember;
    let last = index;
    while (
      last + 1 < this.members.length &&
      last + 1 - index < this.limits.maxMembers &&
      this.readable(last + 1) &&
      (this.members[last + 1] as TarMember).offset + (this.members[last + 1] as TarMember).size - first.offset <= this.limits.maxBytes
    ) {
      last++;
    }
    const end = (this.members[last] as TarMember).offset + (this.members[last] as TarMember).size;
    const bytes = this.archive.readRange(first.offset, end);
    // A span no read waits on any more (the run stopped) must not crash the process.
    bytes.catch(() => undefined);
    return { first: index, last, bytes };
  }
}

/**
 * Reads members of a gzipped archive by going through it once, front to back. Reads must be
 * asked for in archive order; each waits for the one before it.
 */
export class SequentialReader {
  private source: StreamByteSource | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly archive: ArchiveObject) {}

  read(member: TarMember): Promise<Buffer> {
    const result = this.queue.then(async () => {
      this.source ??= new StreamByteSource(await this.archive.openStream());
      const source = this.source;
      if (member.offset < source.position) {
        throw new RangeError(`${this.archive.url}: member at byte ${member.offset} asked for after byte ${source.position} (reads must follow archive order)`);
      }
      await source.skip(member.offset - source.position);
      return source.read(member.size);
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    await this.source?.close();
  }
}

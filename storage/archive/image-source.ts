import { stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { MissingObjectError } from "../errors.js";
import { isImageKey } from "../image-keys.js";
import { LocalLocation, type Location, type ReadOptions } from "../location.js";
import { S3Location } from "../s3-location.js";
import { isArchiveKey, localArchive, s3Archive, type ArchiveObject } from "./archive-object.js";
import { memberFault, SCORE_SPAN_LIMITS, SequentialReader, SpanReader, type SpanLimits } from "./member-reader.js";
import type { SkippedMembers, TarIndex, TarMember } from "./tar-walk.js";

/*
 * The images of an input as scoring sees them: loose files, the members of tar archives, or
 * both. A run names an input (a folder, an S3 prefix, or one archive); archives found in it
 * are opened and indexed, and their image members get keys `<archive>/<member path>`
 * (../shared/PROTOCOL.md), where `<archive>` is the archive's key relative to the input, or
 * its file name when the input is the archive itself.
 */

/** Local archives are read a few members at a time: a read is a pread, cheap either way. */
const LOCAL_SPAN_LIMITS: SpanLimits = { maxBytes: 4 * 1024 * 1024, maxMembers: 8 };

/** What an input held, for the output and summary.json. */
export interface InputSummary {
  readonly archives: number;
  /** Image members of archives. */
  readonly archiveImages: number;
  readonly looseImages: number;
  /** Members of archives not scored: directories, links, other kinds, and files that are not images. */
  readonly skipped: SkippedMembers & { notImages: number };
  /** WebDataset `.cls` members found (labels, not images). */
  readonly classMembers: number;
}

export interface OpenedArchive {
  /** Its key relative to the input (or its file name when it is the input). */
  readonly key: string;
  readonly object: ArchiveObject;
  readonly index: TarIndex;
  /** Its image members, in archive order. */
  readonly images: readonly TarMember[];
}

export interface ImageSource {
  readonly url: string;
  /** Every image, in input order: loose files by key, then each archive's members in archive order. */
  readonly keys: readonly string[];
  readonly archives: readonly OpenedArchive[];
  readonly summary: InputSummary;
  /** "1 tar archive, 50,000 images"; "64 tar shards, 1,280,000 images"; "1,000 images". */
  describe(): string;
  /** The class index a WebDataset `.cls` member gives the image, when there is one. */
  classOf(key: string): number | undefined;
  /**
   * A read function for `keys` (a subset of `keys`, in input order): archive members are read
   * in spans, so the reads must be asked for in this order.
   */
  reads(keys: readonly string[], options?: ReadOptions): (key: string) => Promise<Buffer>;
}

export interface OpenImageSourceOptions {
  /** Hears each archive's index build: bytes passed of its size. */
  readonly onIndexProgress?: (archive: string, bytes: number, size: number) => void;
  /**
   * An index known from before for this archive (`plan --index-cache`), checked by the caller to
   * be of the archive's version and size; undefined to walk the archive. Default: always walk.
   */
  readonly knownIndex?: (key: string, object: ArchiveObject) => Promise<TarIndex | undefined>;
  /**
   * Sees every archive found before any is indexed, and may throw to refuse the input (`plan`
   * refuses gzipped ones) before a byte of any archive is read. Default: all are taken.
   */
  readonly checkArchives?: (archives: readonly { readonly key: string; readonly object: ArchiveObject }[]) => void;
}

/** The members of an index that are scored, in archive order: what member positions count in. */
export function imageMembersOf(index: TarIndex): TarMember[] {
  return index.members.filter((member) => isImageKey(member.path));
}

/** The WebDataset sample a member belongs to: its path up to the first "." of its file name. */
export function sampleOf(path: string): string {
  const slash = path.lastIndexOf("/");
  const dot = path.indexOf(".", slash + 1);
  return dot === -1 ? path : path.slice(0, dot);
}

function isClassMember(path: string): boolean {
  return path.toLowerCase().endsWith(".cls");
}

/** Whether `input` names one archive rather than a folder or prefix of them. */
async function singleArchive(input: Location): Promise<ArchiveObject | undefined> {
  if (!isArchiveKey(input.url)) return undefined;
  if (input instanceof LocalLocation) {
    const info = await stat(resolve(input.url)).catch(() => undefined);
    return info?.isFile() === true ? localArchive(resolve(input.url)) : undefined;
  }
  if (input instanceof S3Location) {
    const slash = input.prefix.lastIndexOf("/");
    const parent = input.parent();
    const name = input.prefix.slice(slash + 1);
    const found = await parent.head(name);
    return found === undefined ? undefined : s3Archive(parent, name, found);
  }
  return undefined;
}

async function openArchive(key: string, object: ArchiveObject, options: OpenImageSourceOptions): Promise<OpenedArchive> {
  const known = await options.knownIndex?.(key, object);
  const index =
    known ??
    (await object.index({
      keepContent: isClassMember,
      ...(options.onIndexProgress ? { onProgress: (bytes: number) => options.onIndexProgress?.(key, bytes, object.size) } : {}),
    }));
  // The walk stops at the end-of-archive blocks, short of the record padding after them: the
  // archive is done with, so its progress ends at its size.
  if (known === undefined) options.onIndexProgress?.(key, object.size, object.size);
  return { key, object, index, images: imageMembersOf(index) };
}

/**
 * Opens what a run names: lists it, and indexes every archive in it (or the archive it is).
 * Storage faults and damaged archive headers reject (the run cannot know its images).
 */
export async function openImageSource(input: Location, options: OpenImageSourceOptions = {}): Promise<ImageSource> {
  const found: { key: string; object: ArchiveObject }[] = [];
  const loose: string[] = [];
  const single = await singleArchive(input);
  if (single !== undefined) {
    found.push({ key: basename(input.url), object: single });
  } else {
    const archiveKeys: string[] = [];
    for await (const key of input.list()) {
      if (isArchiveKey(key)) archiveKeys.push(key);
      else if (isImageKey(key)) loose.push(key);
    }
    for (const key of archiveKeys) {
      const object = input instanceof S3Location ? await s3Archive(input, key) : await localArchive((input as LocalLocation).pathOf(key));
      found.push({ key, object });
    }
  }
  options.checkArchives?.(found);
  const archives: OpenedArchive[] = [];
  for (const { key, object } of found) archives.push(await openArchive(key, object, options));
  return new ArchiveAwareSource(input, loose, archives);
}

class ArchiveAwareSource implements ImageSource {
  readonly url: string;
  readonly keys: readonly string[];
  readonly summary: InputSummary;
  /** Archive and member of each archive image key. */
  private readonly members = new Map<string, { archive: OpenedArchive; index: number }>();
  private readonly classes = new Map<string, number>();

  constructor(
    private readonly input: Location,
    loose: readonly string[],
    readonly archives: readonly OpenedArchive[],
  ) {
    this.url = input.url;
    const keys = [...loose];
    const skipped = { directories: 0, links: 0, other: 0, notImages: 0 };
    let classMembers = 0;
    for (const archive of archives) {
      archive.images.forEach((member, index) => {
        const key = `${archive.key}/${member.path}`;
        keys.push(key);
        this.members.set(key, { archive, index });
      });
      skipped.directories += archive.index.skipped.directories;
      skipped.links += archive.index.skipped.links;
      skipped.other += archive.index.skipped.other;
      const samples = new Map<string, number>();
      for (const [path, text] of Object.entries(archive.index.smallContents)) {
        const value = Number(text.trim());
        if (Number.isInteger(value) && value >= 0) samples.set(sampleOf(path), value);
      }
      for (const member of archive.index.members) {
        if (isClassMember(member.path)) classMembers++;
        else if (!isImageKey(member.path)) skipped.notImages++;
      }
      for (const member of archive.images) {
        const label = samples.get(sampleOf(member.path));
        if (label !== undefined) this.classes.set(`${archive.key}/${member.path}`, label);
      }
    }
    this.keys = keys;
    const archiveImages = archives.reduce((sum, archive) => sum + archive.images.length, 0);
    this.summary = { archives: archives.length, archiveImages, looseImages: loose.length, skipped, classMembers };
  }

  describe(): string {
    const count = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;
    const { archives, archiveImages, looseImages, skipped } = this.summary;
    if (archives === 0) return count(looseImages, "image");
    const parts = [`${archives === 1 ? "1 tar archive" : `${count(archives, "tar shard")}`}, ${count(archiveImages, "image")}`];
    if (looseImages > 0) parts.push(`and ${count(looseImages, "loose image")}`);
    const passed = [
      skipped.directories > 0 ? count(skipped.directories, "directory", "directories") : "",
      skipped.links > 0 ? count(skipped.links, "link") : "",
      skipped.notImages > 0 ? count(skipped.notImages, "other file") : "",
      skipped.other > 0 ? count(skipped.other, "other member") : "",
    ].filter((part) => part !== "");
    return `${parts.join(" ")}${passed.length > 0 ? ` (skipped: ${passed.join(", ")})` : ""}`;
  }

  classOf(key: string): number | undefined {
    return this.classes.get(key);
  }

  reads(keys: readonly string[], options: ReadOptions = {}): (key: string) => Promise<Buffer> {
    const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    // Per archive, a reader over just the members this run reads (a resume skips the rest).
    const readers = new Map<OpenedArchive, { position: Map<string, number>; read: (position: number) => Promise<Buffer> }>();
    // One pass over the keys, not one per archive: 64 shards of 20,000 images each would
    // otherwise filter 1.28 million keys 64 times.
    const wantedBy = new Map<OpenedArchive, string[]>();
    for (const key of keys) {
      const archive = this.members.get(key)?.archive;
      if (archive === undefined) continue;
      const list = wantedBy.get(archive) ?? [];
      if (list.length === 0) wantedBy.set(archive, list);
      list.push(key);
    }
    for (const [archive, wanted] of wantedBy) {
      const members = wanted.map((key) => archive.images[(this.members.get(key) as { index: number }).index] as TarMember);
      const position = new Map(wanted.map((key, at) => [key, at]));
      const readable = (at: number) => memberFault(members[at] as TarMember, wanted[at] as string, maxBytes) === undefined;
      if (archive.object.seekable) {
        const spans = new SpanReader(archive.object, members, archive.object.url.startsWith("s3://") ? SCORE_SPAN_LIMITS : LOCAL_SPAN_LIMITS, readable);
        readers.set(archive, { position, read: (at) => spans.read(at) });
      } else {
        const sequential = new SequentialReader(archive.object);
        readers.set(archive, { position, read: (at) => sequential.read(members[at] as TarMember) });
      }
    }
    return async (key: string) => {
      const found = this.members.get(key);
      if (found === undefined) return this.input.read(key, options);
      const reader = readers.get(found.archive);
      const at = reader?.position.get(key);
      if (reader === undefined || at === undefined) throw new MissingObjectError(`${key}: not among the keys this read was prepared for`);
      const fault = memberFault(found.archive.images[found.index] as TarMember, key, maxBytes);
      if (fault !== undefined) throw fault;
      return reader.read(at);
    };
  }
}

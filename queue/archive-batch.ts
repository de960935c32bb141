import type { S3Client } from "@aws-sdk/client-s3";
import { MissingObjectError, ObjectChangedError } from "../storage/errors.js";
import type { ImageInput } from "../scoring/image-input.js";
import { localArchive, s3Archive, type ArchiveObject } from "../storage/archive/archive-object.js";
import { parseIndex } from "../storage/archive/index-file.js";
import { imageMembersOf } from "../storage/archive/image-source.js";
import { memberFault, SpanReader, type SpanLimits } from "../storage/archive/member-reader.js";
import type { TarMember } from "../storage/archive/tar-walk.js";
import { isS3Url } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { S3Location } from "../storage/s3-location.js";
import type { Manifest, ManifestArchive, ManifestBatch, ManifestMembers } from "./manifest.js";
import { PermanentMessageError } from "./message-errors.js";

/*
 * A worker's side of a batch of archive members: the archive's index from the file plan stored
 * beside the manifest (read once per run), and the members' bytes from one ranged GET per
 * batch carrying If-Match with the planned ETag, sliced in memory. The archive itself is never
 * listed, walked or read outside the batch's own byte range.
 */

/**
 * Most bytes one GET of a batch covers: a batch's members are read in one request unless they
 * span more than this (32 ImageNet JPEGs are ~4 MB), so a batch of large photos holds at most
 * this much at once.
 */
export const BATCH_SPAN_MAX_BYTES = 64 * 1024 * 1024;

/** Indexes a worker keeps: one run's shards, without growing for ever across runs. */
const CACHED_INDEXES = 64;

/**
 * Archive image members by run and archive position. Keyed by the manifest's digest, so a re-plan
 * of the same `out` (whose index files are rewritten) never meets an index of the earlier run.
 */
export class ArchiveIndexCache {
  private readonly images = new Map<string, readonly TarMember[]>();

  constructor(private readonly s3: S3Client) {}

  /** The image members of `manifest.archives[position]`, in archive order. */
  async get(manifest: Manifest, manifestDigest: string, position: number): Promise<readonly TarMember[]> {
    const key = `${manifestDigest}:${position}`;
    let images = this.images.get(key);
    if (images === undefined) {
      images = await this.read(manifest, position);
      if (this.images.size >= CACHED_INDEXES) this.images.delete(this.images.keys().next().value as string);
      this.images.set(key, images);
    }
    return images;
  }

  private async read(manifest: Manifest, position: number): Promise<readonly TarMember[]> {
    const archive = manifest.archives?.[position] as ManifestArchive;
    const out = openLocation(manifest.out, { s3: this.s3 });
    const where = `${out.url}/${archive.index}`;
    // A storage fault rejects as itself (tried again later); what is there but wrong never heals.
    const bytes = await out.readIfExists(archive.index);
    if (bytes === undefined) throw new PermanentMessageError(`no archive index at ${where} (for ${archive.url}): the run's output prefix was damaged; plan the run again`);
    let stored;
    try {
      stored = parseIndex(bytes.toString("utf8"), where);
    } catch (error) {
      throw new PermanentMessageError((error as Error).message, { cause: error });
    }
    if (stored.version !== archive.version || stored.size !== archive.size) {
      throw new PermanentMessageError(
        `${where} indexes ${stored.archive} version ${stored.version} (${stored.size} bytes), but the manifest planned ${archive.version} (${archive.size} bytes); plan the run again`,
      );
    }
    return imageMembersOf(stored.index);
  }
}

/**
 * The archive as planned, read without a HEAD: S3 reads carry If-Match with the planned ETag;
 * a local file must still have the planned size, modification time and inode.
 */
async function plannedArchive(archive: ManifestArchive, s3: S3Client): Promise<ArchiveObject> {
  if (isS3Url(archive.url)) {
    const object = new S3Location(archive.url, s3);
    const name = object.prefix.slice(object.prefix.lastIndexOf("/") + 1);
    return s3Archive(object.parent(), name, { etag: archive.version, size: archive.size });
  }
  const local = await localArchive(archive.url);
  if (local.version !== archive.version) throw new ObjectChangedError(`${archive.url} changed since it was planned (size, time or inode): plan the run again`);
  return local;
}

/**
 * The inputs of a batch of archive members. Members that cannot be scored (sparse, cut off,
 * over `maxBytes`) are their error records without being read; the rest come from as few
 * ranged GETs as {@link BATCH_SPAN_MAX_BYTES} allows, one for a batch of ordinary photos.
 */
export async function archiveBatchInputs(
  manifest: Manifest,
  batch: ManifestBatch & { members: ManifestMembers },
  images: readonly TarMember[],
  s3: S3Client,
  maxBytes: number,
): Promise<ImageInput[]> {
  const archive = manifest.archives?.[batch.members.archive] as ManifestArchive;
  const members = images.slice(batch.members.first, batch.members.last + 1);
  members.forEach((member, i) => {
    const key = `${archive.key}/${member.path}`;
    if (key !== batch.keys[i]) {
      throw new PermanentMessageError(`batch ${batch.id}: member ${batch.members.first + i} of ${archive.url}'s index is ${key}, but the manifest lists ${batch.keys[i]}`);
    }
  });
  const object = await plannedArchive(archive, s3);
  const limits: SpanLimits = { maxBytes: BATCH_SPAN_MAX_BYTES, maxMembers: members.length };
  const faultOf = (i: number) => memberFault(members[i] as TarMember, batch.keys[i] as string, maxBytes);
  const spans = new SpanReader(object, members, limits, (i) => faultOf(i) === undefined);
  return batch.keys.map((key, i) => ({
    key,
    label: batch.labels[i] ?? null,
    read: async () => {
      const fault = faultOf(i);
      if (fault !== undefined) throw fault;
      try {
        return await spans.read(i);
      } catch (error) {
        // The archive gone is not this member's fault (which would make every member an error
        // record): like a replaced archive, it fails the batch for good.
        if (error instanceof MissingObjectError) throw new ObjectChangedError(`${archive.url} was deleted since it was planned: ${error.message}`, { cause: error });
        throw error;
      }
    },
  }));
}

/** Whether a failure comes from an archive that is no longer the one planned (412, deleted, changed). */
export function archiveChangedIn(error: unknown): ObjectChangedError | undefined {
  for (let at: unknown = error, depth = 0; at !== undefined && at !== null && depth < 8; depth++) {
    if (at instanceof ObjectChangedError) return at;
    at = (at as { cause?: unknown }).cause;
  }
  return undefined;
}

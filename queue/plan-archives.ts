import type { S3Client } from "@aws-sdk/client-s3";
import { ConfigurationError } from "../model/errors.js";
import { isS3Url, type Location } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import type { ArchiveObject } from "../storage/archive/archive-object.js";
import { indexCacheKey, readCachedIndex, serializeIndex } from "../storage/archive/index-file.js";
import { openImageSource, type ImageSource, type OpenedArchive } from "../storage/archive/image-source.js";
import { batchId, type ManifestArchive, type ManifestBatch } from "./manifest.js";

/*
 * What `plan` does with tar archives in its input: index each once (or take the index from a
 * cache), store the indexes beside the manifest for the workers, and cut batches that never
 * span two archives, so each batch is one contiguous byte range of one object.
 */

/** Where an archive's index is stored under the run's `out`. */
export function archiveIndexKey(position: number): string {
  return `archives/${position}.json`;
}

export interface PlanInputOptions {
  readonly s3: S3Client | undefined;
  /** Folder or s3:// prefix of indexes kept between plans, by archive version and size. Default: none. */
  readonly indexCache?: string | undefined;
  /** Hears each archive's index build: bytes passed of its size. */
  readonly onIndexProgress?: ((archive: string, bytes: number, size: number) => void) | undefined;
}

export interface PlanInput {
  readonly source: ImageSource;
  /** Archives whose index came from the cache rather than a pass over their bytes. */
  readonly reused: ReadonlySet<string>;
}

/** The refusal of a gzipped archive, with the command that makes it plannable. */
function gzippedRefusal(object: ArchiveObject): ConfigurationError {
  const plain = object.url.replace(/\.tgz$/i, ".tar").replace(/\.gz$/i, "");
  const fix = isS3Url(object.url) ? `aws s3 cp ${object.url} - | gunzip | aws s3 cp - ${plain}` : `gunzip -k ${object.url}`;
  return new ConfigurationError(
    `${object.url}: workers read archives by byte range, and ranges need an uncompressed tar: gunzip it first, e.g. ${fix}, ` +
      `then plan ${plain} (score reads .tar.gz as it is). Nothing was sent`,
  );
}

/**
 * Opens the input as `plan` needs it: every archive indexed, from `indexCache` when it holds
 * this archive's version and size, else by one pass over its bytes (then stored in the cache,
 * before anything else can fail, so a plan refused later need not stream it again). An input
 * holding a gzipped archive is refused before a byte of any archive is read.
 */
export async function openPlanInput(input: Location, options: PlanInputOptions): Promise<PlanInput> {
  const cache = options.indexCache === undefined ? undefined : openLocation(options.indexCache, { s3: options.s3 });
  const reused = new Set<string>();
  const source = await openImageSource(input, {
    ...(options.onIndexProgress ? { onIndexProgress: options.onIndexProgress } : {}),
    checkArchives: (archives) => {
      const gzipped = archives.find(({ object }) => !object.seekable);
      if (gzipped !== undefined) throw gzippedRefusal(gzipped.object);
    },
    knownIndex: async (key, object) => {
      const cached = cache === undefined ? undefined : await readCachedIndex(cache, object.version, object.size);
      if (cached !== undefined) reused.add(key);
      return cached?.index;
    },
  });
  if (cache !== undefined) {
    for (const archive of source.archives.filter((opened) => !reused.has(opened.key))) {
      await cache.write(indexCacheKey(archive.object.version, archive.object.size), serializeIndex(storedOf(archive)));
    }
  }
  return { source, reused };
}

function storedOf(archive: OpenedArchive) {
  return { archive: archive.object.url, version: archive.object.version, size: archive.object.size, index: archive.index };
}

/** The manifest's list of the input's archives, each naming where its index is stored. */
export function manifestArchives(source: ImageSource): ManifestArchive[] {
  return source.archives.map((archive, position) => {
    const { url, version, size } = archive.object;
    return { key: archive.key, url, version, size, images: archive.images.length, index: archiveIndexKey(position) };
  });
}

/** Writes each archive's index under `out`, where {@link manifestArchives} says. */
export async function storeArchiveIndexes(out: Location, source: ImageSource): Promise<void> {
  for (const [position, archive] of source.archives.entries()) {
    await out.write(archiveIndexKey(position), serializeIndex(storedOf(archive)));
  }
}

/**
 * Batches of at most `batchSize` images: the loose images first, then each archive's image
 * members in archive order, a batch never holding members of two archives (or members and
 * loose files), so a worker reads an archive batch as one byte range.
 */
export function cutBatches(source: ImageSource, labels: readonly (number | null)[], batchSize: number): ManifestBatch[] {
  const runs: { start: number; length: number; archive?: number }[] = [{ start: 0, length: source.summary.looseImages }];
  let start = source.summary.looseImages;
  source.archives.forEach((archive, position) => {
    runs.push({ start, length: archive.images.length, archive: position });
    start += archive.images.length;
  });
  const count = runs.reduce((sum, run) => sum + Math.ceil(run.length / batchSize), 0);
  const batches: ManifestBatch[] = [];
  for (const run of runs) {
    for (let first = 0; first < run.length; first += batchSize) {
      const last = Math.min(first + batchSize, run.length) - 1;
      const from = run.start + first;
      const to = run.start + last + 1;
      batches.push({
        id: batchId(batches.length, count),
        keys: source.keys.slice(from, to),
        labels: labels.slice(from, to),
        ...(run.archive !== undefined ? { members: { archive: run.archive, first, last } } : {}),
      });
    }
  }
  return batches;
}

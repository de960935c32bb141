import { execFileSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { localArchive } from "../storage/archive/archive-object.js";
import { StreamByteSource, walkTar } from "../storage/archive/tar-walk.js";

/*
 * The archive figures of `npm run bench` (issue 20): archives are written by GNU tar, never by
 * the code measured, from the sample photos.
 */

/**
 * A tar of `files` (names in ../shared/imagenet/samples) written by GNU tar into a new temporary
 * folder; with `paddingBytes`, a member of that many zero bytes that is not an image sits in
 * the middle, so the archive is large while its images are the photos. Returns the archive
 * path and a function removing the folder.
 */
export async function sampleTar(samples: string, files: readonly string[], paddingBytes = 0): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "googlenet-bench-tar-"));
  const path = join(dir, "samples.tar");
  const list = [...files];
  if (paddingBytes > 0) {
    const padding = join(dir, "padding.bin");
    await writeFile(padding, "");
    await truncate(padding, paddingBytes);
    const half = Math.floor(list.length / 2);
    execFileSync("tar", ["--format=gnu", "-cf", path, "-C", samples, ...list.slice(0, half), "-C", dir, "padding.bin", "-C", samples, ...list.slice(half)]);
    await rm(padding);
  } else {
    execFileSync("tar", ["--format=gnu", "-cf", path, "-C", samples, ...list]);
  }
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface IndexSpeed {
  readonly archiveMB: number;
  /** A plain sequential read of the file (what `cat > /dev/null` does), MB/s. */
  readonly sequentialReadMBps: number;
  /** The member index built by offsets (local archives: headers only), MB of archive per second. */
  readonly indexByOffsetsMBps: number;
  /** The member index built by reading the archive through (as from S3 or gunzip), MB/s. */
  readonly indexStreamedMBps: number;
  readonly members: number;
}

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await work();
  return [result, (performance.now() - start) / 1000];
}

/** Index speed for a local archive beside a plain sequential read of it, in one process. */
export async function measureIndexSpeed(path: string): Promise<IndexSpeed> {
  const archive = await localArchive(path);
  const mb = archive.size / 1e6;
  const [, readSeconds] = await timed(async () => {
    let bytes = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) bytes += (chunk as Buffer).length;
    return bytes;
  });
  const [index, offsetSeconds] = await timed(() => archive.index());
  const [, streamSeconds] = await timed(() => walkTar(new StreamByteSource(createReadStream(path, { highWaterMark: 1024 * 1024 })), path));
  return {
    archiveMB: Math.round(mb),
    sequentialReadMBps: mb / readSeconds,
    indexByOffsetsMBps: mb / offsetSeconds,
    indexStreamedMBps: mb / streamSeconds,
    members: index.members.length,
  };
}

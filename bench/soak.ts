import type { CropCount } from "../model/image/crops.js";
import { SAMPLES, samplePhotos, type Measurement } from "./measure.js";
import { sampleTar, type IndexSpeed } from "./archive-bench.js";
import type { Report } from "./report.js";
import { fixed, round } from "./report.js";
import { run } from "./run-task.js";

export interface SoakSettings {
  /** Images of the 1-crop run (the 1000 sample photos cycled). */
  readonly oneCrop: number;
  /** Images of the 144-crop run. */
  readonly allCrops: number;
  readonly batch: number;
  readonly threads: number;
  /** Extra environment for the measuring processes (e.g. MALLOC_ARENA_MAX=2), to try a remedy. */
  readonly env: Record<string, string>;
  /** sharp's operation cache on or off in the measuring processes; undefined leaves sharp's default. */
  readonly sharpCache: boolean | undefined;
}

/** One soak run's figures as the JSON line reports them. */
export interface SoakResult {
  readonly images: number;
  readonly crops: CropCount;
  /** RSS after the reference image (a tenth of the run: 1,000 of 10,000, 100 of 1,000) and at the end. */
  readonly rssAfterMB: number;
  readonly rssAfterImages: number;
  readonly rssEndMB: number;
  /** rssEnd / rssAfter - 1; the target is at most 0.1. */
  readonly rssGrowth: number;
  readonly rssEveryImages: number;
  readonly rssTraceMB: readonly number[];
  readonly heapTraceMB: readonly number[];
  readonly externalTraceMB: readonly number[];
  readonly peakRssMB: number;
  readonly imagesPerSec: number;
  /** MALLOC_ARENA_MAX in the measuring process ("default": glibc's own). */
  readonly mallocArenaMax: string;
}

/**
 * The environment the soak's processes start with unless the bench's own environment or
 * --child-env says otherwise: glibc's malloc gives each thread that allocates (libvips's decode
 * threads, onnxruntime's, libuv's) an arena of its own, up to 8 per core, and memory freed in
 * one is not returned to the system, so RSS creeps for thousands of images with JavaScript's
 * memory flat (measured here: 1,500 images at 1 crop, V8 heap 12-23 MB and external memory
 * 25-62 MB throughout, RSS 602 -> 666 MB; the same with MALLOC_ARENA_MAX=2: 593 -> 604 MB;
 * sharp's cache off: no change). Workers and `score` should run with the same setting.
 */
export const SOAK_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };

/**
 * The memory soak of `npm run bench -- --soak`: `score`'s pipeline with onnxruntime over many
 * images at 1 crop and at 144 crops, RSS every 100 images (every tenth of a smaller run), and
 * the growth from the first tenth of the run to its end.
 */
export async function runSoak(report: Report, settings: SoakSettings): Promise<{ soak1: SoakResult; soak144: SoakResult; soakArchive: ArchiveSoakResult }> {
  const one = await soakRun(report, settings, 1, settings.oneCrop);
  const all = await soakRun(report, settings, 144, settings.allCrops);
  const archive = await archiveSoak(report, settings);
  return { soak1: one, soak144: all, soakArchive: archive };
}

/** `score` on a >= 2 GB archive against the same photos as loose files, in one run. */
export interface ArchiveSoakResult {
  readonly archiveMB: number;
  readonly images: number;
  readonly folderPeakRssMB: number;
  readonly archivePeakRssMB: number;
  /** archive / folder peak RSS; the target is at most 1.1. */
  readonly peakRssRatio: number;
  readonly folderImagesPerSec: number;
  readonly archiveImagesPerSec: number;
  readonly index: IndexSpeed;
}

/** Bytes of the member that is not an image, so the archive passes 2 GB with 110 MB of photos. */
const ARCHIVE_PADDING_BYTES = 2 * 1024 ** 3;

async function archiveSoak(report: Report, settings: SoakSettings): Promise<ArchiveSoakResult> {
  const env = { ...(process.env.MALLOC_ARENA_MAX === undefined ? SOAK_ENV : {}), ...settings.env };
  const photos = await samplePhotos(1000);
  const tar = await sampleTar(SAMPLES, photos, ARCHIVE_PADDING_BYTES);
  try {
    const index = (await run({ kind: "archive-index", archive: tar.path })).indexSpeed as IndexSpeed;
    const folder = await run({ kind: "score-input", input: SAMPLES, crops: 1, threads: settings.threads }, env);
    const archive = await run({ kind: "score-input", input: tar.path, crops: 1, threads: settings.threads }, env);
    const ratio = archive.peakRssMB / folder.peakRssMB;
    report.add(`soak: score on a ${index.archiveMB} MB tar (the photos around a 2 GiB member that is not an image), 1 crop`, archive, `peak RSS ${fixed(archive.peakRssMB, 0)} MB = x${fixed(ratio, 3)} the same photos as files (${fixed(folder.peakRssMB, 0)} MB; target <= 1.1)`);
    report.log(`  index of that archive: by offsets ${fixed(index.indexByOffsetsMBps, 0)} MB/s, read through ${fixed(index.indexStreamedMBps, 0)} MB/s, a plain sequential read ${fixed(index.sequentialReadMBps, 0)} MB/s`);
    return {
      archiveMB: index.archiveMB,
      images: archive.images ?? 0,
      folderPeakRssMB: round(folder.peakRssMB, 0),
      archivePeakRssMB: round(archive.peakRssMB, 0),
      peakRssRatio: round(ratio, 3),
      folderImagesPerSec: round(folder.imagesPerSec ?? 0, 2),
      archiveImagesPerSec: round(archive.imagesPerSec ?? 0, 2),
      index,
    };
  } finally {
    await tar.remove();
  }
}

async function soakRun(report: Report, settings: SoakSettings, crops: CropCount, images: number): Promise<SoakResult> {
  const rssAfter = Math.max(1, Math.floor(images / 10));
  const rssEvery = Math.min(100, rssAfter);
  const env = { ...(process.env.MALLOC_ARENA_MAX === undefined ? SOAK_ENV : {}), ...settings.env };
  const arenas = env.MALLOC_ARENA_MAX ?? process.env.MALLOC_ARENA_MAX ?? "default";
  const m: Measurement = await run(
    {
      kind: "pipeline",
      engine: "onnxruntime",
      batch: settings.batch,
      threads: settings.threads,
      images,
      crops,
      rssAfter,
      rssEvery,
      ...(settings.sharpCache !== undefined ? { sharpCache: settings.sharpCache } : {}),
    },
    env,
  );
  const rssAfterMB = m.rssAfterMB ?? 0;
  const rssEndMB = m.rssEndMB ?? 0;
  const growth = rssEndMB / rssAfterMB - 1;
  report.add(
    `soak: pipeline onnxruntime, ${m.images} images x ${crops}`,
    m,
    `RSS ${fixed(rssAfterMB, 0)} MB after ${rssAfter} images, ${fixed(rssEndMB, 0)} MB at the end (${(growth * 100).toFixed(1)}%), MALLOC_ARENA_MAX=${arenas}`,
  );
  report.log(`  RSS every ${rssEvery} images (MB): ${(m.rssTraceMB ?? []).join(" ")}`);
  report.log(`  V8 heap in use (MB): ${(m.heapTraceMB ?? []).join(" ")}; outside it, held by JS (MB): ${(m.externalTraceMB ?? []).join(" ")}`);
  return {
    images: m.images ?? images,
    crops,
    rssAfterMB: round(rssAfterMB, 0),
    rssAfterImages: rssAfter,
    rssEndMB: round(rssEndMB, 0),
    rssGrowth: round(growth, 3),
    rssEveryImages: rssEvery,
    rssTraceMB: m.rssTraceMB ?? [],
    heapTraceMB: m.heapTraceMB ?? [],
    externalTraceMB: m.externalTraceMB ?? [],
    peakRssMB: round(m.peakRssMB, 0),
    imagesPerSec: round(m.imagesPerSec ?? 0, 2),
    mallocArenaMax: arenas,
  };
}

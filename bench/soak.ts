import type { CropCount } from "../model/image/crops.js";
import type { Measurement } from "./measure.js";
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
export async function runSoak(report: Report, settings: SoakSettings): Promise<{ soak1: SoakResult; soak144: SoakResult }> {
  const one = await soakRun(report, settings, 1, settings.oneCrop);
  const all = await soakRun(report, settings, 144, settings.allCrops);
  return { soak1: one, soak144: all };
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

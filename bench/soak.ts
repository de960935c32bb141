import type { CropCount } from "../model/crops.js";
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
  readonly peakRssMB: number;
  readonly imagesPerSec: number;
}

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
  const m: Measurement = await run(
    { kind: "pipeline", engine: "onnxruntime", batch: settings.batch, threads: settings.threads, images, crops, rssAfter, rssEvery },
    settings.env,
  );
  const rssAfterMB = m.rssAfterMB ?? 0;
  const rssEndMB = m.rssEndMB ?? 0;
  const growth = rssEndMB / rssAfterMB - 1;
  report.add(
    `soak: pipeline onnxruntime, ${m.images} images x ${crops}`,
    m,
    `RSS ${fixed(rssAfterMB, 0)} MB after ${rssAfter} images, ${fixed(rssEndMB, 0)} MB at the end (${(growth * 100).toFixed(1)}%)`,
  );
  report.log(`  RSS every ${rssEvery} images (MB): ${(m.rssTraceMB ?? []).join(" ")}`);
  return {
    images: m.images ?? images,
    crops,
    rssAfterMB: round(rssAfterMB, 0),
    rssAfterImages: rssAfter,
    rssEndMB: round(rssEndMB, 0),
    rssGrowth: round(growth, 3),
    rssEveryImages: rssEvery,
    rssTraceMB: m.rssTraceMB ?? [],
    peakRssMB: round(m.peakRssMB, 0),
    imagesPerSec: round(m.imagesPerSec ?? 0, 2),
  };
}

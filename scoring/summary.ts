import type { InputSummary } from "../storage/archive/image-source.js";
import { SCHEMES } from "../model/image/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import type { CropCount } from "../model/image/crops.js";
import { schemesForCount } from "../model/predict.js";
import type { ErrorRates, ResultRecord, SchemeErrorRates, Summary } from "./records.js";
import { isFailed } from "./records.js";
import {
  calibrationErrors,
  isLabelled,
  modelComparisons,
  positionErrors,
  realErrors,
  schemeComparisons,
  schemeErrors,
  type RealLookup,
} from "./statistics.js";

/** What a summary reports beyond the records' own labels. */
export interface SummaryExtras {
  /** ReaL labels to judge validation-named records by; none: no `real` anywhere. */
  readonly real?: RealLookup & { readonly source: string };
  /** Set when the built-in validation labels labelled images; copied into summary.json. */
  readonly builtInLabels?: { readonly file: string; readonly images: number };
  /** Set when the input held tar archives: what was found in them, copied into summary.json. */
  readonly input?: InputSummary & { readonly description: string };
  /** Set when WebDataset `.cls` members labelled images; copied into summary.json. */
  readonly classMemberLabels?: { readonly images: number };
}

/** The scheme rates with each scheme's ReaL errors and calibration beside them. */
function withBeyond(
  rates: SchemeErrorRates,
  list: readonly ResultRecord[],
  extras: SummaryExtras,
  model: number | undefined,
): { rates: SchemeErrorRates; missing?: string } {
  const options = model === undefined ? {} : { model };
  const real = extras.real ? realErrors(list, extras.real, options) : {};
  const calibration = calibrationErrors(list, options);
  const out: SchemeErrorRates = {};
  for (const scheme of SCHEMES) {
    const r = rates[scheme];
    if (!r) continue;
    const c = calibration.schemes[scheme];
    out[scheme] = {
      ...r,
      ...(real[scheme] ? { real: real[scheme] } : {}),
      ...(c ? { calibration: { nll: c.nll, ece: c.ece } } : {}),
    };
  }
  return { rates: out, ...(calibration.missing !== undefined ? { missing: calibration.missing } : {}) };
}

/** How many scored records have a ReaL entry, left-out ones included. */
function realImages(list: readonly ResultRecord[], real: RealLookup): number {
  return list.filter((record) => !isFailed(record) && real.lookup(record.key) !== undefined).length;
}

/** How many records there are, scored, labelled and failed, and the failed ones' keys. */
function census(records: readonly ResultRecord[]): Pick<Summary, "images" | "scored" | "failed" | "labelled" | "failedKeys"> {
  const failedKeys = records.filter(isFailed).map((record) => record.key);
  const scored = records.length - failedKeys.length;
  const labelled = records.filter(isLabelled).length;
  return { images: records.length, scored, failed: failedKeys.length, labelled, failedKeys };
}

/**
 * summary.json for a run (../shared/PROTOCOL.md): error rates over scored images that have a
 * label, as unrounded fractions with their Wilson intervals, for each scheme the run computed;
 * failed images counted and listed. For an ensemble the top-level rates are the ensemble's and
 * `models[i]` has model i's (from each record's `models[i].top5`); for one model they are the
 * same numbers.
 *
 * When no scored image has a label, `schemes` is empty: there is no error rate to report.
 */
export function summarize(
  records: Iterable<ResultRecord>,
  models: readonly ModelInfo[],
  crops: CropCount,
  extras: SummaryExtras = {},
): Summary {
  // Comparisons and positions read the records again, so a one-shot iterable is kept.
  const list = Array.isArray(records) ? (records as readonly ResultRecord[]) : [...records];
  const schemes = schemesForCount(crops);
  const { images, scored, failed, labelled, failedKeys } = census(list);
  const top = withBeyond(schemeErrors(list, { require: schemes }), list, extras, undefined);
  const ensemble = top.rates;
  const own: SchemeErrorRates[] = models.map((_, i) =>
    models.length > 1 ? withBeyond(schemeErrors(list, { model: i, require: schemes }), list, extras, i).rates : ensemble,
  );
  const realCount = extras.real ? realImages(list, extras.real) : 0;
  const positions = crops === 144 ? positionErrors(list) : undefined;
  const comparisons = [
    ...schemeComparisons(list, schemes),
    ...modelComparisons(
      list,
      models.map((model) => model.file),
      schemes,
    ),
  ];
  return {
    images,
    scored,
    failed,
    labelled,
    schemes: ensemble,
    models: models.map((model, i) => ({
      file: model.file,
      sha256: model.sha256,
      flavour: model.flavour,
      schemes: own[i] as SchemeErrorRates,
    })),
    failedKeys,
    ...(positions ? { positions } : {}),
    ...(labelled > 0 ? { comparisons } : {}),
    ...(extras.builtInLabels && extras.builtInLabels.images > 0 ? { builtInLabels: { ...extras.builtInLabels } } : {}),
    ...(extras.input ? { input: extras.input } : {}),
    ...(extras.classMemberLabels && extras.classMemberLabels.images > 0 ? { classMemberLabels: { ...extras.classMemberLabels } } : {}),
    ...(extras.real && realCount > 0 ? { realLabels: { source: extras.real.source, images: realCount } } : {}),
    ...(top.missing !== undefined ? { calibrationMissing: top.missing } : {}),
  };
}

function percent(value: number | undefined): string {
  return value === undefined ? "-" : `${(value * 100).toFixed(2)}%`;
}

function modelName(file: string): string {
  return file.slice(Math.max(file.lastIndexOf("/"), file.lastIndexOf("\\")) + 1);
}

function decimal(value: number | undefined, digits: number): string {
  return value === undefined ? "-" : value.toFixed(digits);
}

/** The cells of one row: the original errors, then ReaL's and calibration's when the run has them. */
function rowCells(rate: ErrorRates | undefined, real: boolean, calibration: boolean): string[] {
  return [
    percent(rate?.top1Error),
    percent(rate?.top5Error),
    ...(real ? [percent(rate?.real?.top1Error), percent(rate?.real?.top5Error)] : []),
    ...(calibration ? [decimal(rate?.calibration?.nll, 4), percent(rate?.calibration?.ece)] : []),
  ];
}

/** Lines under the table saying where labels came from and why a measure is missing. */
function notes(summary: Summary): string[] {
  const lines: string[] = [];
  if (summary.builtInLabels) {
    lines.push(`labels: built-in ILSVRC 2012 validation labels (${summary.builtInLabels.file}) for ${summary.builtInLabels.images} images`);
  }
  if (summary.realLabels) {
    const leftOut = Object.values(summary.schemes).find((r) => r?.real)?.real?.leftOut ?? 0;
    lines.push(
      `ReaL: ${summary.realLabels.source}, ${summary.realLabels.images} images with a ReaL entry, ${leftOut} left out (empty list)`,
    );
  }
  if (summary.calibrationMissing !== undefined) lines.push(`calibration: ${summary.calibrationMissing}`);
  else if (summary.labelled > 0) lines.push("calibration: NLL in nats (probabilities floored at 1e-12), ECE top-label, 15 equal-width bins");
  return lines;
}

/**
 * A block in the shape of the paper's Table 3: one row per model and scheme, then the
 * ensemble's rows when there is more than one model. Errors in percent, two decimals; ReaL
 * errors, NLL and ECE in columns after them when the summary has them.
 */
export function formatTable3(summary: Summary): string {
  const all = [summary.schemes, ...summary.models.map((m) => m.schemes)].flatMap((rates) => Object.values(rates));
  const real = all.some((r) => r?.real !== undefined);
  const calibration = all.some((r) => r?.calibration !== undefined);
  const header = [
    "models",
    "crops",
    "model",
    "top-1 error",
    "top-5 error",
    ...(real ? ["ReaL top-1", "ReaL top-5"] : []),
    ...(calibration ? ["NLL", "ECE"] : []),
  ];
  const rows: string[][] = [];
  const computed = SCHEMES.filter((scheme) => summary.schemes[scheme] ?? summary.models[0]?.schemes[scheme]);
  for (const scheme of computed) {
    for (const model of summary.models) {
      rows.push(["1", scheme, modelName(model.file), ...rowCells(model.schemes[scheme], real, calibration)]);
    }
  }
  if (summary.models.length > 1) {
    for (const scheme of computed) {
      rows.push([String(summary.models.length), scheme, "ensemble", ...rowCells(summary.schemes[scheme], real, calibration)]);
    }
  }
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((row) => (row[c] as string).length)));
  const line = (cells: string[]): string =>
    cells.map((cell, c) => (c >= 3 ? cell.padStart(widths[c] as number) : cell.padEnd(widths[c] as number))).join("  ");
  const lines = [
    `images ${summary.images}, scored ${summary.scored}, failed ${summary.failed}, labelled ${summary.labelled}`,
    line(header),
    ...rows.map(line),
  ];
  if (summary.labelled === 0) lines.push("(no scored image has a label, so there are no error rates)");
  lines.push(...notes(summary));
  return lines.join("\n");
}

import { SCHEMES } from "../model/image/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import type { CropCount } from "../model/image/crops.js";
import { schemesForCount } from "../model/predict.js";
import type { ResultRecord, SchemeErrorRates, Summary } from "./records.js";
import { isFailed } from "./records.js";
import { isLabelled, modelComparisons, positionErrors, schemeComparisons, schemeErrors } from "./statistics.js";

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
export function summarize(records: Iterable<ResultRecord>, models: readonly ModelInfo[], crops: CropCount): Summary {
  // Comparisons and positions read the records again, so a one-shot iterable is kept.
  const list = Array.isArray(records) ? (records as readonly ResultRecord[]) : [...records];
  const schemes = schemesForCount(crops);
  const { images, scored, failed, labelled, failedKeys } = census(list);
  const ensemble = schemeErrors(list, { require: schemes });
  const own: SchemeErrorRates[] = models.map((_, i) =>
    models.length > 1 ? schemeErrors(list, { model: i, require: schemes }) : ensemble,
  );
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
  };
}

function percent(value: number | undefined): string {
  return value === undefined ? "-" : `${(value * 100).toFixed(2)}%`;
}

function modelName(file: string): string {
  return file.slice(Math.max(file.lastIndexOf("/"), file.lastIndexOf("\\")) + 1);
}

/**
 * A block in the shape of the paper's Table 3: one row per model and scheme, then the
 * ensemble's rows when there is more than one model. Errors in percent, two decimals.
 */
export function formatTable3(summary: Summary): string {
  const header = ["models", "crops", "model", "top-1 error", "top-5 error"];
  const rows: string[][] = [];
  const computed = SCHEMES.filter((scheme) => summary.schemes[scheme] ?? summary.models[0]?.schemes[scheme]);
  for (const scheme of computed) {
    for (const model of summary.models) {
      const rate = model.schemes[scheme];
      rows.push(["1", scheme, modelName(model.file), percent(rate?.top1Error), percent(rate?.top5Error)]);
    }
  }
  if (summary.models.length > 1) {
    for (const scheme of computed) {
      const rate = summary.schemes[scheme];
      rows.push([
        String(summary.models.length),
        scheme,
        "ensemble",
        percent(rate?.top1Error),
        percent(rate?.top5Error),
      ]);
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
  return lines.join("\n");
}

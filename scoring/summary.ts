import type { Scheme } from "../model/crop-types.js";
import { SCHEMES } from "../model/crop-types.js";
import type { ModelInfo } from "../model/engine.js";
import type { CropCount } from "../model/crops.js";
import { schemesForCount } from "../model/predict.js";
import type { ResultRecord, SchemeErrorRates, SchemeTop5, Summary } from "./records.js";
import { isFailed } from "./records.js";
import { addIntervals, modelComparisons, positionErrors, schemeComparisons } from "./statistics.js";

interface Counts {
  top1Wrong: number;
  top5Wrong: number;
}

function newCounts(schemes: readonly Scheme[]): Map<Scheme, Counts> {
  return new Map(schemes.map((scheme) => [scheme, { top1Wrong: 0, top5Wrong: 0 }]));
}

function count(counts: Map<Scheme, Counts>, top5: SchemeTop5, label: number, key: string): void {
  for (const [scheme, tally] of counts) {
    const entries = top5[scheme];
    if (!entries || entries.length === 0) {
      throw new RangeError(`result for "${key}" has no top-5 for scheme ${scheme}, which the run computed`);
    }
    if (entries[0]?.[0] !== label) tally.top1Wrong++;
    if (!entries.slice(0, 5).some((entry) => entry[0] === label)) tally.top5Wrong++;
  }
}

function rates(counts: Map<Scheme, Counts>, labelled: number): SchemeErrorRates {
  const out: SchemeErrorRates = {};
  // 0/0 has no error rate; leaving the schemes out says so, where NaN would print as null.
  if (labelled === 0) return out;
  for (const [scheme, tally] of counts) {
    out[scheme] = { top1Error: tally.top1Wrong / labelled, top5Error: tally.top5Wrong / labelled };
  }
  return out;
}

/**
 * summary.json for a run (../shared/PROTOCOL.md): error rates over scored images that have a
 * label, as unrounded fractions, for each scheme the run computed; failed images counted and
 * listed. For an ensemble the top-level rates are the ensemble's and `models[i]` has model i's
 * (from each record's `models[i].top5`); for one model they are the same numbers.
 *
 * When no scored image has a label, `schemes` is empty: there is no error rate to report.
 */
export function summarize(records: Iterable<ResultRecord>, models: readonly ModelInfo[], crops: CropCount): Summary {
  // Comparisons and positions read the records again, so a one-shot iterable is kept.
  const list = Array.isArray(records) ? (records as readonly ResultRecord[]) : [...records];
  const schemes = schemesForCount(crops);
  const ensemble = newCounts(schemes);
  const perModel = models.map(() => newCounts(schemes));
  let images = 0;
  let scored = 0;
  let labelled = 0;
  const failedKeys: string[] = [];
  for (const record of list) {
    images++;
    if (isFailed(record)) {
      failedKeys.push(record.key);
      continue;
    }
    scored++;
    if (record.label === null) continue;
    labelled++;
    count(ensemble, record.top5, record.label, record.key);
    if (models.length > 1) {
      perModel.forEach((modelCounts, i) => {
        const own = record.models?.[i]?.top5;
        if (!own) throw new RangeError(`result for "${record.key}" has no top-5 for model ${i + 1} of the ensemble`);
        count(modelCounts, own, record.label as number, record.key);
      });
    }
  }
  const ensembleRates = rates(ensemble, labelled);
  const positions = crops === 144 ? positionErrors(list) : undefined;
  const comparisons = [
    ...schemeComparisons(list, schemes),
    ...modelComparisons(
      list,
      models.map((model) => model.file),
      schemes,
    ),
  ];
  return addIntervals({
    images,
    scored,
    failed: failedKeys.length,
    labelled,
    schemes: ensembleRates,
    models: models.map((model, i) => ({
      file: model.file,
      sha256: model.sha256,
      flavour: model.flavour,
      schemes: models.length > 1 ? rates(perModel[i] as Map<Scheme, Counts>, labelled) : rates(ensemble, labelled),
    })),
    failedKeys,
    ...(positions ? { positions } : {}),
    ...(labelled > 0 ? { comparisons } : {}),
  });
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

import { SCHEMES, type Scheme } from "../../model/image/crop-types.js";
import type { ErrorRates, ResultRecord, SchemeErrorRates, Summary } from "../records.js";
import { calibrationErrors, ECE_BINS, ENSEMBLE, NLL_FLOOR, type CalibrationBin } from "../statistics.js";
import { chartSvg, figure } from "./charts.js";
import { basename, cropsText, escapeHtml, intervalText, percent } from "./format.js";

/** One row: a model (or the ensemble) under one scheme, with its measures beyond the original labels. */
interface BeyondRow {
  readonly model: string;
  readonly label: string;
  readonly scheme: Scheme;
  readonly rates: ErrorRates;
}

function beyondRows(summary: Summary): BeyondRow[] {
  const rows: BeyondRow[] = [];
  const add = (model: string, label: string, rates: SchemeErrorRates): void => {
    for (const scheme of SCHEMES) {
      const r = rates[scheme];
      if (r && (r.real || r.calibration)) rows.push({ model, label, scheme, rates: r });
    }
  };
  for (const m of summary.models) add(m.file, basename(m.file), m.schemes);
  // One model's top-level rates are its own: listed once, as in the Table 3 section.
  if (summary.models.length !== 1) add(ENSEMBLE, `ensemble of ${summary.models.length}`, summary.schemes);
  return rows;
}

function beyondTable(rows: readonly BeyondRow[]): string {
  const cell = (cls: string, text: string): string => `<td class="${cls} num">${text}</td>`;
  const body = rows
    .map(({ model, label, scheme, rates: { real, calibration } }) =>
      [
        `<tr data-model="${escapeHtml(model)}" data-scheme="${scheme}">`,
        `<td class="model" title="${escapeHtml(model)}">${escapeHtml(label)}</td><td class="crops num">${scheme}</td>`,
        cell("real-top1", real ? percent(real.top1Error) : "–"),
        cell("top1-interval", real ? intervalText(real.top1Interval) : ""),
        cell("real-top5", real ? percent(real.top5Error) : "–"),
        cell("top5-interval", real ? intervalText(real.top5Interval) : ""),
        cell("real-left-out", real ? String(real.leftOut) : "–"),
        cell("nll", calibration ? calibration.nll.toFixed(4) : "–"),
        cell("ece", calibration ? percent(calibration.ece) : "–"),
        "</tr>",
      ].join(""),
    )
    .join("\n");
  return (
    `<div class="scroll"><table id="beyond"><thead><tr><th>Model</th><th>Crops</th><th>ReaL top-1 error</th><th>95% CI</th>` +
    `<th>ReaL top-5 error</th><th>95% CI</th><th>Left out<br><small>(empty ReaL list)</small></th>` +
    `<th>NLL<br><small>nats</small></th><th>ECE<br><small>15 bins</small></th></tr></thead>` +
    `<tbody>\n${body}\n</tbody></table></div>`
  );
}

/** A reliability diagram: each bin's top-1 accuracy as a bar over its confidence range, the diagonal, and a dot at (mean confidence, accuracy). */
function reliabilityChart(bins: readonly CalibrationBin[]): Promise<string> {
  const values = bins.map((b) => ({ ...b, mid: (b.lower + b.upper) / 2 })).filter((b) => b.images > 0);
  const axis = { type: "quantitative" as const, scale: { domain: [0, 1] } };
  return chartSvg({
    width: 240,
    height: 240,
    layer: [
      {
        data: { values },
        mark: { type: "bar", opacity: 0.75 },
        encoding: {
          x: { field: "lower", ...axis, title: "confidence (top-1 probability)" },
          x2: { field: "upper" },
          y: { field: "accuracy", ...axis, title: "top-1 accuracy" },
          // From 0, so the bar spans its bin's width and rises to its accuracy.
          y2: { datum: 0 },
          tooltip: [{ field: "images" }, { field: "confidence", format: ".3f" }, { field: "accuracy", format: ".3f" }],
        },
      },
      {
        data: { values: [{ x: 0, y: 0 }, { x: 1, y: 1 }] },
        mark: { type: "line", strokeDash: [4, 3], color: "#57606a" },
        encoding: { x: { field: "x", ...axis }, y: { field: "y", ...axis } },
      },
      {
        data: { values },
        mark: { type: "point", filled: true, color: "#cf222e", size: 30 },
        encoding: { x: { field: "confidence", ...axis }, y: { field: "accuracy", ...axis } },
      },
    ],
  });
}

/**
 * ReaL errors and calibration per model and scheme, and a reliability diagram per scheme of
 * the top-level (ensemble's) probabilities, from the records' bins; empty when the summary has
 * neither ReaL nor labels.
 */
export async function beyondSection(summary: Summary, records: readonly ResultRecord[]): Promise<string> {
  const rows = beyondRows(summary);
  if (rows.length === 0 && summary.calibrationMissing === undefined) return "";
  const notes: string[] = [];
  if (summary.builtInLabels) {
    notes.push(`Labels: built-in ILSVRC 2012 validation labels (${escapeHtml(summary.builtInLabels.file)}) for ${summary.builtInLabels.images} images.`);
  }
  if (summary.realLabels) {
    notes.push(
      `ReaL labels: ${escapeHtml(summary.realLabels.source)}, ${summary.realLabels.images} images with an entry; a prediction is right ` +
        `when it is in the image's list; images with an empty list are left out of both counts. CI: 95% Wilson score interval.`,
    );
  }
  if (summary.calibrationMissing !== undefined) notes.push(`No calibration: ${escapeHtml(summary.calibrationMissing)}.`);
  else {
    notes.push(
      `NLL: mean −ln p of the labelled class's averaged probability, p floored at ${NLL_FLOOR}. ` +
        `ECE: top-label, ${ECE_BINS} equal-width confidence bins, |accuracy − confidence| weighted by each bin's share.`,
    );
  }
  const calibration = summary.calibrationMissing === undefined ? calibrationErrors(records).schemes : {};
  const charts: string[] = [];
  for (const scheme of SCHEMES) {
    const detail = calibration[scheme];
    if (!detail) continue;
    const caption =
      `Reliability, ${cropsText(scheme)}: bars are each bin's top-1 accuracy; each dot sits at its bin's mean confidence ` +
      `(across) and accuracy (up), so a dot left of the dashed diagonal is underconfident, right of it overconfident. ` +
      `ECE ${percent(detail.ece)} over ${detail.images} images.`;
    charts.push(`<div>${figure(`chart-reliability-${scheme}`, await reliabilityChart(detail.bins), caption)}</div>`);
  }
  return (
    `<section id="beyond-section"><h2>ReaL labels and calibration</h2>` +
    notes.map((note) => `<p>${note}</p>`).join("") +
    (rows.length > 0 ? beyondTable(rows) : "") +
    (charts.length > 0 ? `<div class="columns">${charts.join("")}</div>` : "") +
    `</section>`
  );
}

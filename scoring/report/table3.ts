import { SCHEMES, type Scheme } from "../../model/image/crop-types.js";
import type { ErrorRates, Interval, SchemeErrorRates, Summary } from "../records.js";
import { ENSEMBLE, wilsonInterval } from "../statistics.js";
import { chartSvg, figure } from "./charts.js";
import { basename, cropsText, escapeHtml, intervalText, metricText, percent } from "./format.js";

/** A row of the Table 3 layout. */
interface Table3Row {
  readonly model: string;
  readonly label: string;
  readonly models: number;
  readonly scheme: Scheme;
  readonly rates: ErrorRates;
}

const METRICS = ["top1", "top5"] as const;

function errorOf(rates: ErrorRates, metric: "top1" | "top5"): number {
  return metric === "top1" ? rates.top1Error : rates.top5Error;
}

// The page fills every missing interval from the records' counts (addIntervals) before any
// section is drawn; [0, 1], "nothing known", only satisfies the optional type.
function intervalOf(rates: ErrorRates, metric: "top1" | "top5"): Interval {
  return (metric === "top1" ? rates.top1Interval : rates.top5Interval) ?? wilsonInterval(0, 0);
}

function table3Rows(summary: Summary): Table3Row[] {
  const rows: Table3Row[] = [];
  const add = (model: string, label: string, models: number, rates: SchemeErrorRates): void => {
    for (const scheme of SCHEMES) {
      const r = rates[scheme];
      if (r) rows.push({ model, label, models, scheme, rates: r });
    }
  };
  for (const m of summary.models) add(m.file, basename(m.file), 1, m.schemes);
  // With one model the top-level rates are that model's; listing them twice would read as two.
  if (summary.models.length !== 1) {
    const n = summary.models.length;
    add(ENSEMBLE, n === 0 ? "model" : `ensemble of ${n}`, Math.max(n, 1), summary.schemes);
  }
  return rows;
}

const rowName = (row: Table3Row): string => `${row.label} · ${cropsText(row.scheme)}`;

function table3Table(rows: readonly Table3Row[]): string {
  const base = rows[0]?.rates.top5Error;
  const body = rows
    .map((row) => {
      const cost = row.models * Number(row.scheme);
      const change = base === undefined ? 0 : row.rates.top5Error - base;
      const delta = base === undefined ? "" : `${change >= 0 ? "+" : ""}${(change * 100).toFixed(2)}`;
      return (
        `<tr data-model="${escapeHtml(row.model)}" data-scheme="${row.scheme}">` +
        `<td class="models num">${row.models}</td><td class="model" title="${escapeHtml(row.model)}">${escapeHtml(row.label)}</td>` +
        `<td class="crops num">${row.scheme}</td><td class="cost num">${cost}</td>` +
        `<td class="top1 num">${percent(row.rates.top1Error)}</td><td class="top1-interval num">${intervalText(intervalOf(row.rates, "top1"))}</td>` +
        `<td class="top5 num">${percent(row.rates.top5Error)}</td><td class="top5-interval num">${intervalText(intervalOf(row.rates, "top5"))}</td>` +
        `<td class="delta num">${delta}</td></tr>`
      );
    })
    .join("\n");
  return (
    `<div class="scroll"><table id="table3"><thead><tr><th>Models</th><th>Model</th><th>Crops</th>` +
    `<th>Cost<br><small>crops/image</small></th><th>Top-1 error</th><th>95% CI</th>` +
    `<th>Top-5 error</th><th>95% CI</th><th>Top-5 vs.<br>base <small>(points)</small></th></tr></thead>` +
    `<tbody>\n${body}\n</tbody></table></div>`
  );
}

/** Each row's top-1 and top-5 error as a point on its interval, one facet per metric. */
function table3Chart(rows: readonly Table3Row[]): Promise<string> {
  const values = rows.flatMap((row) =>
    METRICS.map((metric) => {
      const [lo, hi] = intervalOf(row.rates, metric);
      return { row: rowName(row), metric: metricText(metric), error: errorOf(row.rates, metric) * 100, lo: lo * 100, hi: hi * 100 };
    }),
  );
  const y = { field: "row", type: "nominal", sort: rows.map(rowName), title: null, axis: { labelLimit: 0 } } as const;
  return chartSvg({
    data: { values },
    facet: { column: { field: "metric", type: "nominal", title: null } },
    resolve: { scale: { x: "independent" } },
    spec: {
      width: 260,
      height: { step: 22 },
      layer: [
        {
          mark: { type: "rule", strokeWidth: 2 },
          encoding: {
            y,
            x: { field: "lo", type: "quantitative", title: "error, % (95% interval)", scale: { zero: false } },
            x2: { field: "hi" },
          },
        },
        {
          mark: { type: "point", filled: true, size: 50 },
          encoding: {
            y,
            x: { field: "error", type: "quantitative" },
            tooltip: [{ field: "row" }, { field: "error", format: ".2f" }],
          },
        },
      ],
    },
  });
}

/** Table 3 of the paper, models × crops, with each error's interval, as a table and a chart. */
export async function table3Section(summary: Summary): Promise<string> {
  const rows = table3Rows(summary);
  return (
    `<section id="table3-section"><h2>Table 3: models × crops</h2>` +
    `<p>Error over ${summary.labelled} labelled images; CI: 95% Wilson score interval. ` +
    `“Top-5 vs. base” is the change in top-5 error, in percentage points, from the first row.</p>` +
    table3Table(rows) +
    figure("chart-table3", await table3Chart(rows), "Top-1 and top-5 error of each row with its 95% interval.") +
    `</section>`
  );
}

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { SCHEMES, type Scheme } from "../../model/crop-types.js";
import type {
  ClassErrors,
  Comparison,
  ErrorRates,
  Interval,
  PositionErrors,
  ResultRecord,
  SchemeErrorRates,
  Summary,
} from "../records.js";
import { ENSEMBLE, ONE_CROP_POSITION, classErrors, wilsonInterval } from "../statistics.js";
import type { Location } from "../../storage/location.js";

/** The report's key, beside summary.json. */
export const REPORT_FILE = "report.html";

/** Options of renderReport and writeReport. */
export interface ReportOptions {
  /**
   * Class names by index for the per-class section. Default: the names in summary.perClass,
   * else the names the records' top-5 lists give each class.
   */
  readonly classNames?: readonly string[];
  /** How many of the worst classes to list. Default: 20. */
  readonly worstClasses?: number;
  /** The page's title. Default: "googlenet-eval report". */
  readonly title?: string;
}

/** Escapes text from data (keys, names, files) for HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const percent = (rate: number): string => `${(rate * 100).toFixed(2)}%`;
const intervalText = ([lo, hi]: Interval): string => `${percent(lo)} – ${percent(hi)}`;
const basename = (file: string): string => file.split(/[/\\]/).filter(Boolean).pop() ?? file;
const crops = (scheme: string): string => `${scheme} crop${scheme === "1" ? "" : "s"}`;

/** p to four decimals, trailing zeros dropped; below 0.0001, where four decimals would show 0, a bound. */
function pValueText(p: number): string {
  return p < 0.0001 ? "< 0.0001" : Number(p.toFixed(4)).toString();
}

/** "p = 0.0215", or "p < 0.0001". */
export function formatPValue(p: number): string {
  return p < 0.0001 ? `p ${pValueText(p)}` : `p = ${pValueText(p)}`;
}

function intervalOf(rates: ErrorRates, metric: "top1" | "top5", n: number): Interval {
  const given = metric === "top1" ? rates.top1Interval : rates.top5Interval;
  const rate = metric === "top1" ? rates.top1Error : rates.top5Error;
  // Older summaries carry no intervals; rates are exact fractions of n, so the count is recoverable.
  return given ?? wilsonInterval(Math.round(rate * n), n);
}

// Charts are compiled from vega-lite and rendered to SVG text in Node, so the page needs no
// script and no network; vega estimates text widths where node-canvas is absent.
async function chartSvg(spec: TopLevelSpec): Promise<string> {
  const runtime = vega.parse(compile(spec).spec);
  const view = new vega.View(runtime, { renderer: "none", logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function figure(id: string, svg: string, caption: string): string {
  return `<figure class="chart" id="${id}">${svg}<figcaption>${caption}</figcaption></figure>`;
}

/** A row of the Table 3 layout. */
interface Table3Row {
  readonly model: string;
  readonly label: string;
  readonly models: number;
  readonly scheme: Scheme;
  readonly rates: ErrorRates;
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

async function table3Section(summary: Summary): Promise<string> {
  const rows = table3Rows(summary);
  const n = summary.labelled;
  const base = rows[0]?.rates.top5Error;
  const body = rows
    .map((row) => {
      const cost = row.models * Number(row.scheme);
      const delta = base === undefined ? "" : `${row.rates.top5Error - base >= 0 ? "+" : ""}${((row.rates.top5Error - base) * 100).toFixed(2)}`;
      return (
        `<tr data-model="${escapeHtml(row.model)}" data-scheme="${row.scheme}">` +
        `<td class="models num">${row.models}</td><td class="model" title="${escapeHtml(row.model)}">${escapeHtml(row.label)}</td>` +
        `<td class="crops num">${row.scheme}</td><td class="cost num">${cost}</td>` +
        `<td class="top1 num">${percent(row.rates.top1Error)}</td><td class="top1-interval num">${intervalText(intervalOf(row.rates, "top1", n))}</td>` +
        `<td class="top5 num">${percent(row.rates.top5Error)}</td><td class="top5-interval num">${intervalText(intervalOf(row.rates, "top5", n))}</td>` +
        `<td class="delta num">${delta}</td></tr>`
      );
    })
    .join("\n");
  const table =
    `<div class="scroll"><table id="table3"><thead><tr><th>Models</th><th>Model</th><th>Crops</th>` +
    `<th>Cost<br><small>crops/image</small></th><th>Top-1 error</th><th>95% CI</th>` +
    `<th>Top-5 error</th><th>95% CI</th><th>Top-5 vs.<br>base <small>(points)</small></th></tr></thead>` +
    `<tbody>\n${body}\n</tbody></table></div>`;

  const values = rows.flatMap((row) =>
    (["top1", "top5"] as const).map((metric) => {
      const [lo, hi] = intervalOf(row.rates, metric, n);
      const error = metric === "top1" ? row.rates.top1Error : row.rates.top5Error;
      return { row: `${row.label} · ${crops(row.scheme)}`, metric: metric === "top1" ? "top-1" : "top-5", error: error * 100, lo: lo * 100, hi: hi * 100 };
    }),
  );
  const order = rows.map((row) => `${row.label} · ${crops(row.scheme)}`);
  const svg = await chartSvg({
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
            y: { field: "row", type: "nominal", sort: order, title: null, axis: { labelLimit: 0 } },
            x: { field: "lo", type: "quantitative", title: "error, % (95% interval)", scale: { zero: false } },
            x2: { field: "hi" },
          },
        },
        {
          mark: { type: "point", filled: true, size: 50 },
          encoding: {
            y: { field: "row", type: "nominal", sort: order, title: null, axis: { labelLimit: 0 } },
            x: { field: "error", type: "quantitative" },
            tooltip: [{ field: "row" }, { field: "error", format: ".2f" }],
          },
        },
      ],
    },
  });
  return (
    `<section id="table3-section"><h2>Table 3: models × crops</h2>` +
    `<p>Error over ${n} labelled images; CI: 95% Wilson score interval. ` +
    `“Top-5 vs. base” is the change in top-5 error, in percentage points, from the first row.</p>` +
    table +
    figure("chart-table3", svg, "Top-1 and top-5 error of each row with its 95% interval.") +
    `</section>`
  );
}

function modelName(name: string): string {
  return name === ENSEMBLE ? "the ensemble" : basename(name);
}

function comparisonSentence(c: Comparison): string {
  const metric = c.metric === "top1" ? "top-1" : "top-5";
  const verdict = c.pValue < 0.05 ? "unlikely to be chance" : "within what chance gives";
  const stats = `(${metric}, McNemar ${formatPValue(c.pValue)}${c.images === undefined ? "" : `, ${c.images} images`}) — ${verdict}`;
  if (c.scheme === undefined) {
    return `${escapeHtml(crops(c.a))} fixed ${c.aOnly} image${c.aOnly === 1 ? "" : "s"} and broke ${c.bOnly} compared with ${escapeHtml(crops(c.b))} ${stats}.`;
  }
  const a = escapeHtml(modelName(c.a));
  const b = escapeHtml(modelName(c.b));
  const at = `at ${escapeHtml(crops(c.scheme))}`;
  if (c.a === ENSEMBLE) {
    return `The ensemble fixed ${c.aOnly} image${c.aOnly === 1 ? "" : "s"} and broke ${c.bOnly} compared with ${b} alone, ${at} ${stats}.`;
  }
  return `${a} got ${c.aOnly} image${c.aOnly === 1 ? "" : "s"} right that ${b} missed, and missed ${c.bOnly} that ${b} got right, ${at} ${stats}.`;
}

function comparisonsSection(summary: Summary): string {
  const comparisons = summary.comparisons ?? [];
  if (comparisons.length === 0) {
    return `<section id="comparisons"><h2>Paired comparisons</h2><p>This summary holds no comparisons.</p></section>`;
  }
  const list = (items: Comparison[]): string =>
    `<ul>${items.map((c) => `<li class="comparison">${comparisonSentence(c)}</li>`).join("")}</ul>`;
  const schemes = comparisons.filter((c) => c.scheme === undefined);
  const models = comparisons.filter((c) => c.scheme !== undefined);
  // Every scheme repeats the model pairs; in words only the largest, the rest in the table.
  const largest = [...SCHEMES].reverse().find((s) => models.some((c) => c.scheme === s));
  const rows = comparisons
    .map(
      (c) =>
        `<tr><td>${escapeHtml(c.scheme === undefined ? crops(c.a) : modelName(c.a))}</td>` +
        `<td>${escapeHtml(c.scheme === undefined ? crops(c.b) : modelName(c.b))}</td>` +
        `<td class="num">${c.scheme ?? ""}</td><td>${c.metric === "top1" ? "top-1" : "top-5"}</td>` +
        `<td class="num">${c.aOnly}</td><td class="num">${c.bOnly}</td><td class="num">${pValueText(c.pValue)}</td></tr>`,
    )
    .join("\n");
  return (
    `<section id="comparisons"><h2>Paired comparisons</h2>` +
    `<p>Each comparison counts, on the same images, those only one side got right; McNemar’s exact test asks how ` +
    `likely so uneven a split is if both sides were equally good (two-sided).</p>` +
    (schemes.length > 0 ? `<h3>Crop schemes</h3>${list(schemes)}` : "") +
    (largest ? `<h3>Models, at ${escapeHtml(crops(largest))}</h3>${list(models.filter((c) => c.scheme === largest))}` : "") +
    `<h3>All ${comparisons.length} comparisons</h3><div class="scroll"><table id="comparisons-table">` +
    `<thead><tr><th>A</th><th>B</th><th>Crops</th><th>Metric</th><th>Only A right</th><th>Only B right</th><th>p</th></tr></thead>` +
    `<tbody>\n${rows}\n</tbody></table></div>` +
    `</section>`
  );
}

const squareLabel = { left: "left/top", center: "center", right: "right/bottom" } as const;

function positionName(p: PositionErrors): string {
  return `${p.scale} · ${squareLabel[p.square]} square · ${p.crop} crop · ${p.mirror ? "mirrored" : "unmirrored"}`;
}

async function positionsSection(positions: PositionErrors[] | undefined): Promise<string> {
  if (!positions || positions.length === 0) {
    return (
      `<section id="positions"><h2>Which crops matter</h2>` +
      `<p>Per-position errors are counted only in 144-crop runs; this run has none.</p></section>`
    );
  }
  const rowOrder = [...new Set(positions.map((p) => `${p.scale} · ${squareLabel[p.square]}`))];
  const cropOrder = [...new Set(positions.map((p) => p.crop))];
  const heatmap = async (metric: "top1" | "top5"): Promise<string> => {
    const values = positions.map((p, i) => ({
      one: i === ONE_CROP_POSITION,
      row: `${p.scale} · ${squareLabel[p.square]}`,
      crop: p.crop,
      mirror: p.mirror ? "mirrored" : "unmirrored",
      error: (metric === "top1" ? p.top1Error : p.top5Error) * 100,
    }));
    const errors = values.map((v) => v.error);
    const middle = (Math.min(...errors) + Math.max(...errors)) / 2;
    return chartSvg({
      data: { values },
      facet: { column: { field: "mirror", type: "nominal", sort: ["unmirrored", "mirrored"], title: null } },
      spec: {
        width: { step: 38 },
        height: { step: 24 },
        encoding: {
          y: { field: "row", type: "nominal", sort: rowOrder, title: "scale · square" },
          x: { field: "crop", type: "nominal", sort: cropOrder, title: "crop", axis: { labelAngle: 0 } },
        },
        layer: [
          {
            mark: "rect",
            encoding: {
              color: {
                field: "error",
                type: "quantitative",
                scale: { scheme: "orangered" },
                title: `${metric === "top1" ? "top-1" : "top-5"} error, %`,
              },
            },
          },
          {
            mark: { type: "text", fontSize: 9 },
            encoding: {
              text: { field: "error", type: "quantitative", format: ".1f" },
              color: { condition: { test: `datum.error > ${middle}`, value: "white" }, value: "black" },
            },
          },
          {
            transform: [{ filter: "datum.one" }],
            mark: { type: "rect", filled: false, stroke: "black", strokeWidth: 2 },
          },
        ],
      },
    });
  };
  const byTop5 = [...positions].sort((a, b) => a.top5Error - b.top5Error || a.top1Error - b.top1Error);
  const describe = (p: PositionErrors): string =>
    `<li>${escapeHtml(positionName(p))}: top-5 ${percent(p.top5Error)}, top-1 ${percent(p.top1Error)}</li>`;
  const one = positions[ONE_CROP_POSITION];
  return (
    `<section id="positions"><h2>Which crops matter: each of the 144 positions alone</h2>` +
    `<p>Error of each crop position used as the only crop (the ensemble’s probabilities at that position). ` +
    `Rows are scale and square (left/top for landscape/portrait images), columns the crop; mirrored crops sit ` +
    `beside unmirrored ones. The 1-crop scheme, outlined, is row “256 · center”, column “center”, unmirrored` +
    (one ? ` (top-5 ${percent(one.top5Error)}, top-1 ${percent(one.top1Error)})` : "") +
    `; the 10-crop scheme is row “256 · center”, the five 224 crops on both sides.</p>` +
    figure("chart-positions-top5", await heatmap("top5"), "Top-5 error (%) of each crop position alone.") +
    figure("chart-positions-top1", await heatmap("top1"), "Top-1 error (%) of each crop position alone.") +
    `<div class="columns"><div><h3>Best positions (top-5)</h3><ol>${byTop5.slice(0, 3).map(describe).join("")}</ol></div>` +
    `<div><h3>Worst positions (top-5)</h3><ol>${byTop5.slice(-3).reverse().map(describe).join("")}</ol></div></div>` +
    `</section>`
  );
}

function perClassRows(summary: Summary, records: readonly ResultRecord[], options: ReportOptions): ClassErrors[] {
  const computed = classErrors(records, options.classNames ? { classNames: options.classNames } : {});
  if (!summary.perClass) return computed;
  // The aggregate writes accuracy per class; the confusions, when it leaves them out, come from the records.
  const byClass = new Map(computed.map((c) => [c.class, c]));
  return summary.perClass.map((c) => ({
    ...c,
    name: options.classNames?.[c.class] ?? c.name ?? byClass.get(c.class)?.name ?? null,
    confusions: c.confusions ?? byClass.get(c.class)?.confusions ?? [],
  }));
}

async function perClassSection(summary: Summary, records: readonly ResultRecord[], options: ReportOptions): Promise<string> {
  const classes = perClassRows(summary, records, options).filter((c) => c.images > 0);
  if (classes.length === 0) {
    return `<section id="classes"><h2>Per-class accuracy</h2><p>No labelled images were scored.</p></section>`;
  }
  const worst = [...classes]
    .sort((a, b) => b.top1Error - a.top1Error || b.top5Error - a.top5Error || b.images - a.images || a.class - b.class)
    .slice(0, options.worstClasses ?? 20);
  const name = (index: number, text: string | null): string => escapeHtml(text ?? `class ${index}`);
  const rows = worst
    .map(
      (c) =>
        `<tr data-class="${c.class}"><td class="num">${c.class}</td><td>${name(c.class, c.name)}</td><td class="num">${c.images}</td>` +
        `<td class="num">${percent(c.top1Error)}</td><td class="num">${percent(c.top5Error)}</td>` +
        `<td>${(c.confusions ?? []).map((f) => `${name(f.class, f.name)} (${f.count})`).join(", ")}</td></tr>`,
    )
    .join("\n");
  const values = classes.flatMap((c) => [
    { metric: "top-1", error: c.top1Error * 100 },
    { metric: "top-5", error: c.top5Error * 100 },
  ]);
  const svg = await chartSvg({
    data: { values },
    facet: { column: { field: "metric", type: "nominal", title: null } },
    spec: {
      width: 240,
      height: 160,
      mark: "bar",
      encoding: {
        x: { field: "error", type: "quantitative", bin: { extent: [0, 100], step: 10 }, title: "error of the class, %" },
        y: { aggregate: "count", type: "quantitative", title: "classes" },
      },
    },
  });
  return (
    `<section id="classes"><h2>Per-class accuracy</h2>` +
    `<p>${classes.length} classes with labelled images. The ${worst.length} worst by top-1 error, with the classes ` +
    `their wrong images were most often taken for (count of images):</p>` +
    `<div class="scroll"><table id="worst-classes"><thead><tr><th>Class</th><th>Name</th><th>Images</th>` +
    `<th>Top-1 error</th><th>Top-5 error</th><th>Most frequent confusions</th></tr></thead><tbody>\n${rows}\n</tbody></table></div>` +
    figure("chart-classes", svg, `Distribution of per-class error over all ${classes.length} classes.`) +
    `</section>`
  );
}

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  return h > 0 ? `${h} h ${m} min ${s} s` : `${m} min ${s} s`;
}

function factsSection(summary: Summary): string {
  const run = summary.run ?? {};
  const fromRun = new Map((run.models ?? []).map((m) => [m.file, m]));
  const models = summary.models.length > 0 ? summary.models : (run.models ?? []);
  const modelRows = models
    .map((m) => {
      const flavour = m.flavour ?? fromRun.get(m.file)?.flavour ?? "";
      const sha = m.sha256 ?? fromRun.get(m.file)?.sha256 ?? "";
      return `<tr><td>${escapeHtml(m.file)}</td><td class="hash">${escapeHtml(sha)}</td><td>${escapeHtml(flavour)}</td></tr>`;
    })
    .join("");
  const facts: [string, string][] = [];
  if (run.engine !== undefined) facts.push(["Engine", escapeHtml(run.engine)]);
  if (run.backend !== undefined) facts.push(["Backend", escapeHtml(run.backend)]);
  if (run.startedAt !== undefined) facts.push(["Started", escapeHtml(run.startedAt)]);
  if (run.wallSeconds !== undefined) facts.push(["Wall time", duration(run.wallSeconds)]);
  if (run.cropsPerSecond !== undefined) facts.push(["Crops per second", run.cropsPerSecond.toFixed(1)]);
  facts.push(
    ["Images", String(summary.images)],
    ["Scored", String(summary.scored)],
    ["Labelled (scored)", String(summary.labelled)],
    ["Failed", String(summary.failed)],
  );
  const failed =
    summary.failedKeys.length === 0
      ? ""
      : `<h3>Failed images</h3><ul class="keys" id="failed-keys">${summary.failedKeys.map((k) => `<li><code>${escapeHtml(k)}</code></li>`).join("")}</ul>`;
  return (
    `<section id="facts"><h2>The run</h2>` +
    `<div class="scroll"><table id="models"><thead><tr><th>Model file</th><th>sha256</th><th>Flavour</th></tr></thead><tbody>${modelRows}</tbody></table></div>` +
    `<dl class="facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>` +
    failed +
    `</section>`
  );
}

const STYLE = `
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --rule: #d0d7de; --band: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0 auto; padding: 1rem; max-width: 74rem; }
h1 { font-size: 1.6rem; margin: 0.5rem 0; } h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid var(--rule); } h3 { font-size: 1.05rem; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.88rem; }
th, td { padding: 0.3rem 0.45rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--band); white-space: nowrap; } td.num { text-align: right; white-space: nowrap; } td.model { white-space: nowrap; }
td.top1-interval, td.top5-interval { font-size: 0.82rem; color: var(--muted); }
td.hash { font-family: ui-monospace, monospace; font-size: 0.8rem; word-break: break-all; min-width: 12rem; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.9rem; }
.columns { display: flex; flex-wrap: wrap; gap: 0 2rem; } .columns > div { flex: 1 1 18rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; } dt { color: var(--muted); } dd { margin: 0; }
ul.keys { max-height: 12rem; overflow: auto; border: 1px solid var(--rule); padding: 0.5rem 1.5rem; } code { word-break: break-all; }
@media (max-width: 40rem) { body { font-size: 15px; padding: 0.6rem; } th, td { padding: 0.25rem 0.4rem; } }
@media print {
  body { max-width: none; font-size: 10pt; padding: 0; } nav { display: none; }
  .scroll, ul.keys { overflow: visible; max-height: none; border: 0; }
  section, figure, table { break-inside: avoid; } h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}`;

/**
 * report.html for a run: ONE self-contained page (inline CSS, inline SVG charts, no script, no
 * external asset; a Content-Security-Policy forbids any load) with the Table 3 layout and its
 * intervals, the paired comparisons in words, the 144-position heatmaps, per-class accuracy and
 * the run's facts. Every text from data is escaped.
 */
export async function renderReport(summary: Summary, records: Iterable<ResultRecord>, options: ReportOptions = {}): Promise<string> {
  const all = [...records];
  const title = options.title ?? "googlenet-eval report";
  const sections = [
    await table3Section(summary),
    comparisonsSection(summary),
    await positionsSection(summary.positions),
    await perClassSection(summary, all, options),
    factsSection(summary),
  ];
  const models = summary.models.map((m) => basename(m.file)).join(", ") || "model";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(models)} · ${summary.scored} of ${summary.images} images scored, ${summary.labelled} labelled, ${summary.failed} failed.</p>
<nav><ul><li><a href="#table3-section">Table 3</a></li><li><a href="#comparisons">Comparisons</a></li><li><a href="#positions">Crop positions</a></li><li><a href="#classes">Classes</a></li><li><a href="#facts">The run</a></li></ul></nav>
</header>
<main>
${sections.join("\n")}
</main>
</body>
</html>
`;
}

/**
 * Renders the report and writes it as report.html in `location` (the run folder, beside
 * summary.json); returns where it went, for the terminal.
 */
export async function writeReport(
  location: Location,
  summary: Summary,
  records: Iterable<ResultRecord>,
  options: ReportOptions = {},
): Promise<string> {
  await location.write(REPORT_FILE, await renderReport(summary, records, options));
  return `${location.url.replace(/\/+$/, "")}/${REPORT_FILE}`;
}

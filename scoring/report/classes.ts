import type { ClassErrors, ResultRecord, Summary } from "../records.js";
import { classErrors } from "../statistics.js";
import { chartSvg, figure } from "./charts.js";
import { escapeHtml, percent } from "./format.js";
import type { ReportOptions } from "./options.js";

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

function worstTable(worst: readonly ClassErrors[]): string {
  const name = (index: number, text: string | null): string => escapeHtml(text ?? `class ${index}`);
  const rows = worst
    .map(
      (c) =>
        `<tr data-class="${c.class}"><td class="num">${c.class}</td><td>${name(c.class, c.name)}</td><td class="num">${c.images}</td>` +
        `<td class="num">${percent(c.top1Error)}</td><td class="num">${percent(c.top5Error)}</td>` +
        `<td>${(c.confusions ?? []).map((f) => `${name(f.class, f.name)} (${f.count})`).join(", ")}</td></tr>`,
    )
    .join("\n");
  return (
    `<div class="scroll"><table id="worst-classes"><thead><tr><th>Class</th><th>Name</th><th>Images</th>` +
    `<th>Top-1 error</th><th>Top-5 error</th><th>Most frequent confusions</th></tr></thead><tbody>\n${rows}\n</tbody></table></div>`
  );
}

/** How per-class error spreads over the classes: a histogram per metric in steps of 10%. */
function classesChart(classes: readonly ClassErrors[]): Promise<string> {
  const values = classes.flatMap((c) => [
    { metric: "top-1", error: c.top1Error * 100 },
    { metric: "top-5", error: c.top5Error * 100 },
  ]);
  return chartSvg({
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
}

/** Per-class accuracy: the worst classes with what they were taken for, and the spread over all. */
export async function classesSection(summary: Summary, records: readonly ResultRecord[], options: ReportOptions): Promise<string> {
  const classes = perClassRows(summary, records, options).filter((c) => c.images > 0);
  if (classes.length === 0) {
    return `<section id="classes"><h2>Per-class accuracy</h2><p>No labelled images were scored.</p></section>`;
  }
  const worst = [...classes]
    .sort((a, b) => b.top1Error - a.top1Error || b.top5Error - a.top5Error || b.images - a.images || a.class - b.class)
    .slice(0, options.worstClasses ?? 20);
  return (
    `<section id="classes"><h2>Per-class accuracy</h2>` +
    `<p>${classes.length} classes with labelled images. The ${worst.length} worst by top-1 error, with the classes ` +
    `their wrong images were most often taken for (count of images):</p>` +
    worstTable(worst) +
    figure("chart-classes", await classesChart(classes), `Distribution of per-class error over all ${classes.length} classes.`) +
    `</section>`
  );
}

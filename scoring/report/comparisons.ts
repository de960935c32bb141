import { SCHEMES } from "../../model/image/crop-types.js";
import type { Comparison, Summary } from "../records.js";
import { ENSEMBLE } from "../statistics.js";
import { basename, cropsText, escapeHtml, formatPValue, metricText, pValueText } from "./format.js";

function modelName(name: string): string {
  return name === ENSEMBLE ? "the ensemble" : basename(name);
}

const images = (n: number): string => `${n} image${n === 1 ? "" : "s"}`;

/** One comparison in words: who fixed and broke how many images, and whether chance explains it. */
function comparisonSentence(c: Comparison): string {
  const verdict = c.pValue < 0.05 ? "unlikely to be chance" : "within what chance gives";
  const stats = `(${metricText(c.metric)}, McNemar ${formatPValue(c.pValue)}${c.images === undefined ? "" : `, ${c.images} images`}) — ${verdict}`;
  if (c.scheme === undefined) {
    return `${escapeHtml(cropsText(c.a))} fixed ${images(c.aOnly)} and broke ${c.bOnly} compared with ${escapeHtml(cropsText(c.b))} ${stats}.`;
  }
  const a = escapeHtml(modelName(c.a));
  const b = escapeHtml(modelName(c.b));
  const at = `at ${escapeHtml(cropsText(c.scheme))}`;
  if (c.a === ENSEMBLE) {
    return `The ensemble fixed ${images(c.aOnly)} and broke ${c.bOnly} compared with ${b} alone, ${at} ${stats}.`;
  }
  return `${a} got ${images(c.aOnly)} right that ${b} missed, and missed ${c.bOnly} that ${b} got right, ${at} ${stats}.`;
}

function comparisonsTable(comparisons: readonly Comparison[]): string {
  const side = (c: Comparison, name: string): string => escapeHtml(c.scheme === undefined ? cropsText(name) : modelName(name));
  const rows = comparisons
    .map(
      (c) =>
        `<tr><td>${side(c, c.a)}</td><td>${side(c, c.b)}</td>` +
        `<td class="num">${c.scheme ?? ""}</td><td>${metricText(c.metric)}</td>` +
        `<td class="num">${c.aOnly}</td><td class="num">${c.bOnly}</td><td class="num">${pValueText(c.pValue)}</td></tr>`,
    )
    .join("\n");
  return (
    `<h3>All ${comparisons.length} comparisons</h3><div class="scroll"><table id="comparisons-table">` +
    `<thead><tr><th>A</th><th>B</th><th>Crops</th><th>Metric</th><th>Only A right</th><th>Only B right</th><th>p</th></tr></thead>` +
    `<tbody>\n${rows}\n</tbody></table></div>`
  );
}

/** The paired McNemar comparisons: scheme pairs and the largest scheme's model pairs in words, all in a table. */
export function comparisonsSection(summary: Summary): string {
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
  return (
    `<section id="comparisons"><h2>Paired comparisons</h2>` +
    `<p>Each comparison counts, on the same images, those only one side got right; McNemar’s exact test asks how ` +
    `likely so uneven a split is if both sides were equally good (two-sided).</p>` +
    (schemes.length > 0 ? `<h3>Crop schemes</h3>${list(schemes)}` : "") +
    (largest ? `<h3>Models, at ${escapeHtml(cropsText(largest))}</h3>${list(models.filter((c) => c.scheme === largest))}` : "") +
    comparisonsTable(comparisons) +
    `</section>`
  );
}

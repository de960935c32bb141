import type { Location } from "../../storage/location.js";
import type { ResultRecord, Summary } from "../records.js";
import { addIntervals } from "../statistics.js";
import { beyondSection } from "./beyond.js";
import { classesSection } from "./classes.js";
import { comparisonsSection } from "./comparisons.js";
import { basename, escapeHtml } from "./format.js";
import type { ReportOptions } from "./options.js";
import { labelCheckSection } from "./label-check.js";
import { positionsSection } from "./positions.js";
import { runFactsSection } from "./run-facts.js";
import { STYLE } from "./styles.js";
import { table3Section } from "./table3.js";

/** The report's key, beside summary.json. */
export const REPORT_FILE = "report.html";

/**
 * report.html for a run: ONE self-contained page (inline CSS, inline SVG charts, no script, no
 * external asset; a Content-Security-Policy forbids any load) with the Table 3 layout and its
 * intervals, the paired comparisons in words, the 144-position heatmaps, per-class accuracy and
 * the run's facts. Every text from data is escaped. An older summary's missing intervals are
 * computed from the records' error counts.
 */
export async function renderReport(summary: Summary, records: Iterable<ResultRecord>, options: ReportOptions = {}): Promise<string> {
  const all = [...records];
  const complete = addIntervals(summary, all);
  const title = options.title ?? "googlenet-eval report";
  const sections = [
    await table3Section(complete),
    await beyondSection(complete, all),
    labelCheckSection(options.labelCheck),
    comparisonsSection(complete),
    await positionsSection(complete.positions),
    await classesSection(complete, all, options),
    runFactsSection(complete),
  ];
  const models = complete.models.map((m) => basename(m.file)).join(", ") || "model";
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
<p>${escapeHtml(models)} · ${complete.scored} of ${complete.images} images scored, ${complete.labelled} labelled, ${complete.failed} failed.</p>
<nav><ul><li><a href="#table3-section">Table 3</a></li>${complete.realLabels || complete.calibrationMissing !== undefined || complete.labelled > 0 ? '<li><a href="#beyond-section">ReaL and calibration</a></li>' : ""}<li><a href="#comparisons">Comparisons</a></li><li><a href="#positions">Crop positions</a></li><li><a href="#classes">Classes</a></li><li><a href="#facts">The run</a></li></ul></nav>
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

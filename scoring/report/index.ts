/**
 * report.html: one self-contained page per run. page.ts assembles it from one file per section
 * (table3, comparisons, positions, classes, run-facts), with the charts, styles and text
 * formatting they share.
 */
export { escapeHtml, formatPValue } from "./format.js";
export type { ReportOptions } from "./options.js";
export { REPORT_FILE, renderReport, writeReport } from "./page.js";

import type { Interval } from "../records.js";

/** Escapes text from data (keys, names, files) for HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A fraction as a percentage with two decimals: "12.34%". */
export const percent = (rate: number): string => `${(rate * 100).toFixed(2)}%`;

/** An interval as two percentages: "1.00% – 9.99%". */
export const intervalText = ([lo, hi]: Interval): string => `${percent(lo)} – ${percent(hi)}`;

/** The last part of a path or URL: a model file's name. */
export const basename = (file: string): string => file.split(/[/\\]/).filter(Boolean).pop() ?? file;

/** "1 crop", "10 crops". */
export const cropsText = (scheme: string): string => `${scheme} crop${scheme === "1" ? "" : "s"}`;

/** "top-1" or "top-5". */
export const metricText = (metric: "top1" | "top5"): string => (metric === "top1" ? "top-1" : "top-5");

/** p to four decimals, trailing zeros dropped; below 0.0001, where four decimals would show 0, a bound. */
export function pValueText(p: number): string {
  return p < 0.0001 ? "< 0.0001" : Number(p.toFixed(4)).toString();
}

/** "p = 0.0215", or "p < 0.0001". */
export function formatPValue(p: number): string {
  return p < 0.0001 ? `p ${pValueText(p)}` : `p = ${pValueText(p)}`;
}

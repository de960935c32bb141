import type { Summary } from "../records.js";
import { escapeHtml } from "./format.js";

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  return h > 0 ? `${h} h ${m} min ${s} s` : `${m} min ${s} s`;
}

function modelsTable(summary: Summary): string {
  const run = summary.run ?? {};
  const fromRun = new Map((run.models ?? []).map((m) => [m.file, m]));
  const models = summary.models.length > 0 ? summary.models : (run.models ?? []);
  const rows = models
    .map((m) => {
      const flavour = m.flavour ?? fromRun.get(m.file)?.flavour ?? "";
      const sha = m.sha256 ?? fromRun.get(m.file)?.sha256 ?? "";
      return `<tr><td>${escapeHtml(m.file)}</td><td class="hash">${escapeHtml(sha)}</td><td>${escapeHtml(flavour)}</td></tr>`;
    })
    .join("");
  return `<div class="scroll"><table id="models"><thead><tr><th>Model file</th><th>sha256</th><th>Flavour</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

/** What the run was, as name and value: whatever run.json tells, then the counts. */
function facts(summary: Summary): [string, string][] {
  const run = summary.run ?? {};
  const out: [string, string][] = [];
  if (run.engine !== undefined) out.push(["Engine", escapeHtml(run.engine)]);
  if (run.backend !== undefined) out.push(["Backend", escapeHtml(run.backend)]);
  if (run.startedAt !== undefined) out.push(["Started", escapeHtml(run.startedAt)]);
  if (run.wallSeconds !== undefined) out.push(["Wall time", duration(run.wallSeconds)]);
  if (run.cropsPerSecond !== undefined) out.push(["Crops per second", run.cropsPerSecond.toFixed(1)]);
  out.push(
    ["Images", String(summary.images)],
    ["Scored", String(summary.scored)],
    ["Labelled (scored)", String(summary.labelled)],
    ["Failed", String(summary.failed)],
  );
  return out;
}

/** The run: its models with their hashes, engine, timing and counts, and every failed key as text. */
export function runFactsSection(summary: Summary): string {
  const failed =
    summary.failedKeys.length === 0
      ? ""
      : `<h3>Failed images</h3><ul class="keys" id="failed-keys">${summary.failedKeys.map((k) => `<li><code>${escapeHtml(k)}</code></li>`).join("")}</ul>`;
  return (
    `<section id="facts"><h2>The run</h2>` +
    modelsTable(summary) +
    `<dl class="facts">${facts(summary).map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>` +
    failed +
    `</section>`
  );
}

import { escapeHtml } from "./format.js";

/**
 * The label check's diagnosis of a queued run (plan's label-check.json), one paragraph; empty
 * when the run has none (a local score stops instead of reporting a failed check).
 */
export function labelCheckSection(diagnosis: string | undefined): string {
  if (diagnosis === undefined) return "";
  return `<section id="label-check"><h2>Label check</h2>
<p>${escapeHtml(diagnosis)}</p>
<p>Checked by plan on up to 200 labelled images at 1 crop before any batch was sent: a known remapping of the labels (off by one, folders sorted as strings) wins when a one-sided exact sign test of its top-1 hits against the labels as given has p &le; 1e-6 over at least 5 classes.</p>
</section>`;
}

import type { PositionErrors } from "../records.js";
import { ONE_CROP_POSITION } from "../statistics.js";
import { chartSvg, figure } from "./charts.js";
import { escapeHtml, metricText, percent } from "./format.js";

const squareLabel = { left: "left/top", center: "center", right: "right/bottom" } as const;

const rowOf = (p: PositionErrors): string => `${p.scale} · ${squareLabel[p.square]}`;

function positionName(p: PositionErrors): string {
  return `${rowOf(p)} square · ${p.crop} crop · ${p.mirror ? "mirrored" : "unmirrored"}`;
}

/**
 * A heatmap of one metric over the 144 positions: rows scale · square, columns crop, mirrored
 * beside unmirrored, each cell labelled with its error, the 1-crop position outlined.
 */
function heatmap(positions: readonly PositionErrors[], metric: "top1" | "top5"): Promise<string> {
  const values = positions.map((p, i) => ({
    one: i === ONE_CROP_POSITION,
    row: rowOf(p),
    crop: p.crop,
    mirror: p.mirror ? "mirrored" : "unmirrored",
    error: (metric === "top1" ? p.top1Error : p.top5Error) * 100,
  }));
  const errors = values.map((v) => v.error);
  // Labels on the darker half of the colour scale are white.
  const middle = (Math.min(...errors) + Math.max(...errors)) / 2;
  return chartSvg({
    data: { values },
    facet: { column: { field: "mirror", type: "nominal", sort: ["unmirrored", "mirrored"], title: null } },
    spec: {
      width: { step: 38 },
      height: { step: 24 },
      encoding: {
        y: { field: "row", type: "nominal", sort: [...new Set(positions.map(rowOf))], title: "scale · square" },
        x: { field: "crop", type: "nominal", sort: [...new Set(positions.map((p) => p.crop))], title: "crop", axis: { labelAngle: 0 } },
      },
      layer: [
        {
          mark: "rect",
          encoding: {
            color: { field: "error", type: "quantitative", scale: { scheme: "orangered" }, title: `${metricText(metric)} error, %` },
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
}

function bestAndWorst(positions: readonly PositionErrors[]): string {
  const byTop5 = [...positions].sort((a, b) => a.top5Error - b.top5Error || a.top1Error - b.top1Error);
  const describe = (p: PositionErrors): string =>
    `<li>${escapeHtml(positionName(p))}: top-5 ${percent(p.top5Error)}, top-1 ${percent(p.top1Error)}</li>`;
  return (
    `<div class="columns"><div><h3>Best positions (top-5)</h3><ol>${byTop5.slice(0, 3).map(describe).join("")}</ol></div>` +
    `<div><h3>Worst positions (top-5)</h3><ol>${byTop5.slice(-3).reverse().map(describe).join("")}</ol></div></div>`
  );
}

/** Which crops matter: the error of each of the 144 positions used alone, as heatmaps and the extremes. */
export async function positionsSection(positions: readonly PositionErrors[] | undefined): Promise<string> {
  if (!positions || positions.length === 0) {
    return (
      `<section id="positions"><h2>Which crops matter</h2>` +
      `<p>Per-position errors are counted only in 144-crop runs; this run has none.</p></section>`
    );
  }
  const one = positions[ONE_CROP_POSITION];
  return (
    `<section id="positions"><h2>Which crops matter: each of the 144 positions alone</h2>` +
    `<p>Error of each crop position used as the only crop (the ensemble’s probabilities at that position). ` +
    `Rows are scale and square (left/top for landscape/portrait images), columns the crop; mirrored crops sit ` +
    `beside unmirrored ones. The 1-crop scheme, outlined, is row “256 · center”, column “center”, unmirrored` +
    (one ? ` (top-5 ${percent(one.top5Error)}, top-1 ${percent(one.top1Error)})` : "") +
    `; the 10-crop scheme is row “256 · center”, the five 224 crops on both sides.</p>` +
    figure("chart-positions-top5", await heatmap(positions, "top5"), "Top-5 error (%) of each crop position alone.") +
    figure("chart-positions-top1", await heatmap(positions, "top1"), "Top-1 error (%) of each crop position alone.") +
    bestAndWorst(positions) +
    `</section>`
  );
}

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

/**
 * A vega-lite spec compiled and rendered to SVG text in Node, so the page needs no script and
 * no network; vega estimates text widths where node-canvas is absent.
 */
export async function chartSvg(spec: TopLevelSpec): Promise<string> {
  const runtime = vega.parse(compile(spec).spec);
  const view = new vega.View(runtime, { renderer: "none", logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** A chart in its figure, with an id the page and its tests find it by. */
export function figure(id: string, svg: string, caption: string): string {
  return `<figure class="chart" id="${id}">${svg}<figcaption>${caption}</figcaption></figure>`;
}

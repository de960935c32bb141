/** The page's only stylesheet, inline: readable on a phone, tables scroll in their box, and print without scroll boxes. */
export const STYLE = `
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

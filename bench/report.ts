import { loadavg } from "node:os";
import type { Measurement } from "./measure.js";

/** Where a bench run writes: progress lines as it goes, a table and one JSON line at the end. */
export class Report {
  readonly rows: string[][] = [];
  readonly notes: string[] = [];

  log(line: string): void {
    process.stdout.write(`${line}\n`);
  }

  loadAt(): string {
    return loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  }

  /** One measurement: a progress line now and a row of the final table. */
  add(what: string, m: Measurement, extra = ""): void {
    this.rows.push([what, fixed(m.cropsPerSec), fixed(m.imagesPerSec, 3), fixed(m.cropsPerSec > 0 ? 1000 / m.cropsPerSec : undefined, 2), fixed(m.peakRssMB, 0), extra]);
    this.log(
      `  ${what}: ${fixed(m.cropsPerSec)} crops/s${m.imagesPerSec ? `, ${fixed(m.imagesPerSec, 3)} images/s` : ""}, ` +
        `peak RSS ${fixed(m.peakRssMB, 0)} MB ${extra} (load ${this.loadAt()})`,
    );
  }

  table(): void {
    this.log("");
    this.log(table(["measurement", "crops/s", "images/s", "ms/crop", "peak RSS MB", "note"], this.rows));
    this.log("");
  }
}

export const fixed = (value: number | undefined, digits = 1): string => (value === undefined ? "-" : value.toFixed(digits));

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

export function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

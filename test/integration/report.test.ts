import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportCommand } from "../../handlers/report-command.js";
import type { ErrorRates, Summary } from "../../scoring/records.js";
import { RESULTS_FILE, SUMMARY_FILE, serializeSummary } from "../../scoring/results.js";
import { writeRunFacts } from "../../scoring/run-facts.js";
import { ONE_CROP_POSITION } from "../../scoring/statistics.js";
import { LocalLocation } from "../../storage/location.js";
import { SIMULATED_RUN_FACTS, simulateRun, summarizeRun, type SimulatedRun } from "../helpers/simulated-run.js";

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
// On a developer's machine without Chromium the browser suite is skipped and says so; under CI
// (.ci/run installs Chromium and sets CI) it runs, and a missing browser fails it.
const UNDER_CI = Boolean(process.env.CI);
const BROWSER_TITLE =
  HAVE_CHROMIUM || UNDER_CI
    ? "report.html in a real browser"
    : `report.html in a real browser (SKIPPED: ${CHROMIUM} is absent; install it with apt-get install -y chromium)`;
// A key a careless page would turn into markup; it must show as text.
const HOSTILE_KEY = `bad/<img src=x onerror="alert('x')">&amp;.JPEG`;

let userDataDir: string;
let context: BrowserContext | undefined;
const folders: string[] = [];

beforeAll(async () => {
  if (!HAVE_CHROMIUM && UNDER_CI) {
    throw new Error(`CI is set and ${CHROMIUM} is missing: the report suite must run under CI (.ci/run installs chromium)`);
  }
  if (!HAVE_CHROMIUM) return;
  userDataDir = await mkdtemp(join(tmpdir(), "report-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await context?.close();
  for (const folder of [...folders, userDataDir]) if (folder) await rm(folder, { recursive: true, force: true });
});

/** A run folder as `score` leaves it: results.jsonl, summary.json and run.json. */
async function runFolder(run: SimulatedRun, summary: Summary): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), "report-run-"));
  folders.push(folder);
  const location = new LocalLocation(folder);
  await location.write(RESULTS_FILE, run.records.map((r) => `${JSON.stringify(r)}\n`).join(""));
  await location.write(SUMMARY_FILE, serializeSummary(summary));
  await writeRunFacts(location, SIMULATED_RUN_FACTS);
  return folder;
}

/** Parses "12.34%" and "1.00% – 9.99%" as the fractions a person reads. */
function percents(text: string): number[] {
  return [...text.matchAll(/(-?\d+(?:\.\d+)?)%/g)].map((m) => Number(m[1]) / 100);
}

const variants = [
  {
    name: "144 crops, 2 models and their ensemble",
    options: { images: 60, unlabelled: 2, failedKeys: [HOSTILE_KEY, "val/empty.JPEG", "val/truncated.JPEG"], models: 2, crops: 144 as const, classes: 25, seed: 11 },
    perClass: false,
    charts: ["chart-table3", "chart-positions-top5", "chart-positions-top1", "chart-classes"],
  },
  {
    name: "10 crops, 1 model, per-class accuracy from the aggregate",
    options: { images: 30, failedKeys: ["val/empty.JPEG"], models: 1, crops: 10 as const, classes: 12, seed: 5 },
    perClass: true,
    charts: ["chart-table3", "chart-classes"],
  },
];

describe.skipIf(!HAVE_CHROMIUM && !UNDER_CI)(BROWSER_TITLE, () => {
  describe.each(variants)("$name", ({ options, perClass, charts }) => {
    let summary: Summary;
    let page: Page;
    let exitCode: number;
    let printed: string[];
    const requests: string[] = [];
    const consoleErrors: string[] = [];
    let reportUrl: string;

    beforeAll(async () => {
      // Prepare: a realistic run folder, summarized by summarize() itself.
      const run = await simulateRun(options);
      summary = summarizeRun(run, { perClass });
      const folder = await runFolder(run, summary);
      printed = [];
      // Act: rebuild the report as `googlenet-eval report --out <folder>` does, then open it.
      const started = Date.now();
      exitCode = await reportCommand(["--out", folder], { out: (line) => printed.push(line), err: (line) => printed.push(line) });
      console.log(`report for "${options.images} images" rendered in ${Date.now() - started} ms`);
      reportUrl = pathToFileURL(join(folder, "report.html")).href;
      page = await context!.newPage();
      page.on("request", (request) => requests.push(request.url()));
      page.on("console", (message) => {
        if (message.type() === "error") consoleErrors.push(message.text());
      });
      page.on("pageerror", (error) => consoleErrors.push(error.message));
      page.on("dialog", (dialog) => {
        consoleErrors.push(`dialog: ${dialog.message()}`);
        void dialog.dismiss();
      });
      await page.goto(reportUrl, { waitUntil: "load" });
    });

    it("is written by the report command, which prints its path", () => {
      expect(exitCode).toBe(0);
      expect(printed).toHaveLength(1);
      expect(printed[0]).toMatch(/report-run-[^/]+\/report\.html$/);
    });

    it("loads nothing but itself and logs no errors", () => {
      expect(requests).toEqual([reportUrl]);
      expect(consoleErrors).toEqual([]);
    });

    it("shows Table 3 with summary.json's error rates and intervals", async () => {
      // Act
      const rows = await page.$$eval("#table3 tbody tr", (trs) =>
        trs.map((tr) => ({
          model: tr.getAttribute("data-model"),
          scheme: tr.getAttribute("data-scheme"),
          cost: tr.querySelector("td.cost")?.textContent ?? "",
          top1: tr.querySelector("td.top1")?.textContent ?? "",
          top1Interval: tr.querySelector("td.top1-interval")?.textContent ?? "",
          top5: tr.querySelector("td.top5")?.textContent ?? "",
          top5Interval: tr.querySelector("td.top5-interval")?.textContent ?? "",
        })),
      );
      // Assess: one row per model and scheme, plus the ensemble's when there are several models.
      const schemes = Object.keys(summary.schemes);
      const models = summary.models.length;
      expect(rows).toHaveLength(schemes.length * (models > 1 ? models + 1 : models));
      for (const row of rows) {
        const rates: ErrorRates | undefined =
          row.model === "ensemble" ? summary.schemes[row.scheme as "1"] : summary.models.find((m) => m.file === row.model)?.schemes[row.scheme as "1"];
        expect(rates, `row ${row.model} ${row.scheme}`).toBeDefined();
        // Two decimals of a percentage: within half of 0.01% of the stored fraction.
        const close = (shown: number[], stored: number[]) => {
          expect(shown).toHaveLength(stored.length);
          shown.forEach((v, i) => expect(Math.abs(v - stored[i]!)).toBeLessThanOrEqual(0.00005 + 1e-12));
        };
        close(percents(row.top1), [rates!.top1Error]);
        close(percents(row.top5), [rates!.top5Error]);
        close(percents(row.top1Interval), rates!.top1Interval!);
        close(percents(row.top5Interval), rates!.top5Interval!);
        expect(Number(row.cost)).toBe(Number(row.scheme) * (row.model === "ensemble" ? models : 1));
      }
    });

    it("renders every chart as SVG with marks and a visible size", async () => {
      // Act
      const figures = await page.$$eval("figure.chart", (nodes) =>
        nodes.map((figure) => {
          const svg = figure.querySelector("svg");
          const box = svg?.getBoundingClientRect();
          return {
            id: figure.id,
            width: box?.width ?? 0,
            height: box?.height ?? 0,
            marks: svg?.querySelectorAll("g.role-mark > *").length ?? 0,
          };
        }),
      );
      // Assess
      expect(figures.map((f) => f.id)).toEqual(charts);
      for (const f of figures) {
        expect(f.width, f.id).toBeGreaterThan(100);
        expect(f.height, f.id).toBeGreaterThan(100);
        expect(f.marks, f.id).toBeGreaterThan(0);
      }
    });

    it("shows each of the 144 positions' error in the heatmaps, or says the run has none", async () => {
      // Act: the value labels of the cells, one text mark per position.
      const labels = async (id: string) => page.$$eval(`#${id} g.mark-text.role-mark text`, (texts) => texts.map((t) => t.textContent ?? ""));
      const top5 = await labels("chart-positions-top5");
      const top1 = await labels("chart-positions-top1");
      const rects = await page.$$eval("#chart-positions-top5 g.mark-rect.role-mark path", (paths) => paths.length);
      const text = await page.textContent("#positions");
      // Assess: a run without 144 crops has no positions, and says so rather than drawing empty charts.
      if (options.crops !== 144) {
        expect(summary.positions).toBeUndefined();
        expect([top5.length, top1.length, rects]).toEqual([0, 0, 0]);
        expect(text).toContain("Per-position errors are counted only in 144-crop runs");
        return;
      }
      // The same values summary.json holds (as a multiset: facets reorder the cells).
      const expected = (metric: "top1Error" | "top5Error") => summary.positions!.map((p) => (p[metric] * 100).toFixed(1)).sort();
      expect(top5.sort()).toEqual(expected("top5Error"));
      expect(top1.sort()).toEqual(expected("top1Error"));
      // 144 cells and the outline of the 1-crop position.
      expect(rects).toBe(145);
      const one = summary.positions![ONE_CROP_POSITION]!;
      expect(text).toContain(`(top-5 ${(one.top5Error * 100).toFixed(2)}%, top-1 ${(one.top1Error * 100).toFixed(2)}%)`);
    });

    it("says what the comparisons mean in words", async () => {
      // Prepare
      const [a, b] = options.crops === 144 ? ["144", "1"] : ["10", "1"];
      const c = summary.comparisons!.find((x) => x.a === a && x.b === b && x.metric === "top5" && x.scheme === undefined)!;
      // Act
      const sentences = await page.$$eval("#comparisons li.comparison", (lis) => lis.map((li) => li.textContent ?? ""));
      // Assess
      const images = (n: number) => `${n} image${n === 1 ? "" : "s"}`;
      expect(sentences).toContainEqual(
        expect.stringContaining(`${a} crops fixed ${images(c.aOnly)} and broke ${c.bOnly} compared with 1 crop (top-5, McNemar p`),
      );
      if (options.models > 1) expect(sentences).toContainEqual(expect.stringContaining("The ensemble fixed"));
    });

    it("lists the worst classes with their confusions", async () => {
      // Act
      const rows = await page.$$eval("#worst-classes tbody tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent ?? "")));
      // Assess: the worst first, and a wrong class names what it was taken for.
      expect(rows).toHaveLength(Math.min(20, options.classes));
      const errors = rows.map((r) => percents(r[3]!)[0]!);
      expect(errors).toEqual([...errors].sort((x, y) => y - x));
      expect(errors[0]).toBeGreaterThan(0);
      expect(rows[0]![5]).toMatch(/\(\d+\)/);
    });

    it("shows the run's facts and the failed keys as text", async () => {
      // Act
      const keys = await page.$$eval("#failed-keys li", (lis) => lis.map((li) => li.textContent));
      const injected = await page.$$eval("img", (imgs) => imgs.length);
      const facts = await page.textContent("#facts");
      // Assess
      expect(keys).toEqual(summary.failedKeys);
      expect(injected).toBe(0);
      for (const model of summary.models) expect(facts).toContain(model.sha256);
      expect(facts).toContain("onnxruntime");
      expect(facts).toContain("12 min 34 s");
    });

    it("fits a phone's width, scrolling tables inside their box, and prints without scroll boxes", async () => {
      // Act
      await page.setViewportSize({ width: 390, height: 800 });
      const pageWidth = await page.$eval("html", (html) => html.scrollWidth);
      await page.emulateMedia({ media: "print" });
      const printOverflow = await page.$eval(".scroll", (el) => el.ownerDocument.defaultView!.getComputedStyle(el).overflowX);
      await page.emulateMedia({ media: "screen" });
      await page.setViewportSize({ width: 1100, height: 900 });
      const shot = join(folders.at(-1)!, "..", `report-${options.crops}-crops-${Date.now()}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`screenshot: ${shot}`);
      // Assess
      expect(pageWidth).toBeLessThanOrEqual(390);
      expect(printOverflow).toBe("visible");
      expect((await readFile(shot)).length).toBeGreaterThan(10_000);
    });
  });
});

describe("googlenet-eval report, on bad input", () => {
  it.each([
    { name: "no folder", argv: [], code: 2, message: /report takes one run folder, got 0/ },
    { name: "an unknown option", argv: ["--open", "x"], code: 2, message: /Unknown option '--open'.*; report takes --out DIR and --help/ },
    { name: "a folder without a run", argv: ["--out", "EMPTY"], code: 1, message: /no summary\.json and results\.jsonl in .*report-empty-/ },
  ])("$name: exits $code and says why", async ({ argv, code, message }) => {
    // Prepare
    const empty = await mkdtemp(join(tmpdir(), "report-empty-"));
    folders.push(empty);
    const lines: string[] = [];
    // Act
    const exit = await reportCommand(argv.map((a) => (a === "EMPTY" ? empty : a)), { out: (l) => lines.push(l), err: (l) => lines.push(l) });
    // Assess
    expect(exit).toBe(code);
    expect(lines.join("\n")).toMatch(message);
  });

  it("names the line of a broken results.jsonl", async () => {
    // Prepare
    const run = await simulateRun({ images: 3, models: 1, crops: 10 });
    const folder = await runFolder(run, summarizeRun(run));
    await new LocalLocation(folder).write("results.jsonl", `${JSON.stringify(run.records[0])}\n{"key": "b", \n`);
    const lines: string[] = [];
    // Act
    const exit = await reportCommand(["--out", folder], { out: (l) => lines.push(l), err: (l) => lines.push(l) });
    // Assess
    expect(exit).toBe(1);
    expect(lines.join("\n")).toMatch(/results\.jsonl:2: not a result record/);
  });
});

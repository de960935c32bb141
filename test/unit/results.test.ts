import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ResultRecord, Summary } from "../../scoring/records.js";
import { StorageError } from "../../storage/errors.js";
import {
  parseResultRecords,
  parseResultsText,
  readResumeState,
  RESULTS_FILE,
  ResultsWriter,
  SUMMARY_FILE,
} from "../../scoring/results.js";
import { LocalLocation } from "../../storage/location.js";

function record(key: string): ResultRecord {
  return { key, label: 1, width: 10, height: 20, top5: { "1": [[1, 0.9, "goldfish"]] } };
}

const SUMMARY: Summary = { images: 0, scored: 0, failed: 0, labelled: 0, schemes: {}, models: [], failedKeys: [] };

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "results-test-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function lines(folder = dir): Promise<string[]> {
  return (await readFile(join(folder, RESULTS_FILE), "utf8")).split("\n").filter((line) => line !== "");
}

describe("ResultsWriter", () => {
  it("appends one line per record as it goes", async () => {
    // Prepare
    const out = join(dir, "not", "yet", "there");
    const writer = await ResultsWriter.open(out);

    // Act
    await writer.append(record("b.jpg"));
    await writer.append({ key: "a.jpg", error: "a.jpg: empty file (0 bytes)" });

    // Assess: on disk before finish, as a killed run would leave it
    expect((await lines(out)).map((line) => JSON.parse(line).key)).toEqual(["b.jpg", "a.jpg"]);
    await writer.close();
  });

  it("finishes with results in input order and summary.json", async () => {
    // Prepare
    const writer = await ResultsWriter.open(dir);
    await writer.append(record("c.jpg"));
    await writer.append(record("a.jpg"));
    await writer.append(record("b.jpg"));

    // Act
    await writer.finish(["a.jpg", "b.jpg", "c.jpg"], { ...SUMMARY, images: 3 });

    // Assess
    expect((await lines()).map((line) => JSON.parse(line).key)).toEqual(["a.jpg", "b.jpg", "c.jpg"]);
    expect(JSON.parse(await readFile(join(dir, SUMMARY_FILE), "utf8"))).toEqual({ ...SUMMARY, images: 3 });
    await expect(writer.append(record("d.jpg"))).rejects.toThrow(/closed/);
  });

  it("resumes: keeps complete lines, drops a truncated last line, and appends after them", async () => {
    // Prepare: two complete lines and half of a third, as SIGKILL mid-write leaves them
    const full = JSON.stringify(record("c.jpg"));
    await writeFile(
      join(dir, RESULTS_FILE),
      `${JSON.stringify(record("a.jpg"))}\n${JSON.stringify({ key: "b.jpg", error: "bad" })}\n${full.slice(0, 25)}`,
    );

    // Act
    const writer = await ResultsWriter.open(dir);
    await writer.append(record("c.jpg"));
    await writer.close();

    // Assess
    expect(writer.previous.dropped).toBe(1);
    expect([...writer.previous.lines.keys()]).toEqual(["a.jpg", "b.jpg"]);
    expect(writer.isDone("a.jpg")).toBe(true);
    expect(writer.isDone("b.jpg")).toBe(true); // a failure is final: decoding is deterministic
    expect(writer.isDone("c.jpg")).toBe(false);
    expect((await lines()).map((line) => JSON.parse(line).key)).toEqual(["a.jpg", "b.jpg", "c.jpg"]);
  });

  it("reads a previous run without changing its file, then opens on what it read", async () => {
    // Prepare: one complete line and half of another, as SIGKILL leaves them
    const text = `${JSON.stringify(record("a.jpg"))}\n${JSON.stringify(record("b.jpg")).slice(0, 20)}`;
    await writeFile(join(dir, RESULTS_FILE), text);
    const location = new LocalLocation(dir);

    // Act
    const state = await readResumeState(location);
    const untouched = await readFile(join(dir, RESULTS_FILE), "utf8");
    const writer = await ResultsWriter.open(location, state);
    await writer.append(record("b.jpg"));
    await writer.close();

    // Assess
    expect(untouched).toBe(text);
    expect([...state.lines.keys()]).toEqual(["a.jpg"]);
    expect(state.dropped).toBe(1);
    expect(writer.previous).toBe(state);
    expect((await lines()).map((line) => JSON.parse(line).key)).toEqual(["a.jpg", "b.jpg"]);
  });

  it("reads no previous run from a folder that does not exist, and creates nothing", async () => {
    // Act
    const state = await readResumeState(new LocalLocation(join(dir, "absent")));

    // Assess
    expect(state).toEqual({ lines: new Map(), dropped: 0 });
    await expect(readFile(join(dir, "absent", RESULTS_FILE))).rejects.toThrow(/ENOENT/);
  });

  it("leaves out keys no longer in the input when it finishes", async () => {
    // Prepare
    await writeFile(join(dir, RESULTS_FILE), `${JSON.stringify(record("gone.jpg"))}\n`);
    const writer = await ResultsWriter.open(dir);
    await writer.append(record("kept.jpg"));

    // Act
    await writer.finish(["kept.jpg"], SUMMARY);

    // Assess
    expect([...writer.records(["kept.jpg", "gone.jpg"])].map((r) => r.key)).toEqual(["kept.jpg", "gone.jpg"]);
    expect((await lines()).map((line) => JSON.parse(line).key)).toEqual(["kept.jpg"]);
  });
});

describe("parseResultsText", () => {
  it.each([
    ["an empty file", "", [], 0],
    ["blank lines", "\n\n", [], 0],
    ["a line without a key", '{"error":"x"}\n', [], 1],
    ["garbage", "{not json\n", [], 1],
    ["a repeated key (the later wins)", '{"key":"a","error":"1"}\n{"key":"a","error":"2"}\n', ["a"], 0],
  ] as const)("%s", (_name, text, keys, dropped) => {
    // Act
    const state = parseResultsText(text);

    // Assess
    expect([...state.lines.keys()]).toEqual(keys);
    expect(state.dropped).toBe(dropped);
  });
});

describe("parseResultRecords", () => {
  it("reads every record in file order, blank lines skipped, repeated keys kept", () => {
    // Prepare
    const text = `${JSON.stringify(record("b.jpg"))}\n\n${JSON.stringify({ key: "a.jpg", error: "x" })}\n${JSON.stringify(record("b.jpg"))}\n`;
    // Act
    const records = parseResultRecords(text, "run/results.jsonl");
    // Assess
    expect(records.map((r) => r.key)).toEqual(["b.jpg", "a.jpg", "b.jpg"]);
    expect(records[0]).toEqual(record("b.jpg"));
  });

  it.each([
    ["garbage", "{not json", /run\/results\.jsonl:3: not a result record: .*JSON/],
    ["a line without a key", '{"error":"x"}', /run\/results\.jsonl:3: not a result record: no "key"/],
    ["a JSON null", "null", /run\/results\.jsonl:3: not a result record: no "key"/],
  ])("refuses %s, naming the file and line", (_name, bad, message) => {
    // Prepare: the bad line is the third, after a blank one.
    const text = `${JSON.stringify(record("a.jpg"))}\n\n${bad}\n`;
    // Act / Assess
    expect(() => parseResultRecords(text, "run/results.jsonl")).toThrow(StorageError);
    expect(() => parseResultRecords(text, "run/results.jsonl")).toThrow(message);
  });
});

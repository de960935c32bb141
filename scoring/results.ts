import type { FileHandle } from "node:fs/promises";
import { mkdir, open } from "node:fs/promises";
import { dirname } from "node:path";
import { StorageError } from "../storage/errors.js";
import type { ResultRecord, Summary } from "./records.js";
import { LocalLocation } from "../storage/location.js";

export const RESULTS_FILE = "results.jsonl";
export const SUMMARY_FILE = "summary.json";

/** What a previous run left in results.jsonl. */
export interface ResumeState {
  /** The JSON line of every key already done, failed ones included (a decode failure is final). */
  readonly lines: ReadonlyMap<string, string>;
  /** Lines dropped: a truncated last line from a killed run, or anything else unreadable. */
  readonly dropped: number;
}

/** One non-blank line of a results JSONL text: its 1-based number, its text, and its record or why it is none. */
export type ResultLine = { readonly line: number; readonly text: string } & (
  | { readonly record: ResultRecord; readonly error?: undefined }
  | { readonly record?: undefined; readonly error: Error }
);

/**
 * Every non-blank line of a results JSONL text (results.jsonl, a batch file), parsed: a record
 * is a JSON object with a string `key`. The one reader of the format; callers choose whether a
 * bad line is dropped (resume) or refused (aggregate, report).
 */
export function* resultLines(text: string): Generator<ResultLine> {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === "") continue;
    try {
      const value = JSON.parse(line) as Partial<ResultRecord> | null;
      if (typeof value?.key !== "string") throw new TypeError('no "key"');
      yield { line: i + 1, text: line, record: value as ResultRecord };
    } catch (error) {
      yield { line: i + 1, text: line, error: error as Error };
    }
  }
}

/** The records of a results JSONL text, in file order; a line that is not one is refused with `where`:line. */
export function parseResultRecords(text: string, where: string): ResultRecord[] {
  const records: ResultRecord[] = [];
  for (const { line, record, error } of resultLines(text)) {
    if (error) throw new StorageError(`${where}:${line}: not a result record: ${error.message}`, { cause: error });
    records.push(record);
  }
  return records;
}

/** Parses the text of a results.jsonl to resume from, keeping the last line of each key and dropping bad ones. */
export function parseResultsText(text: string): ResumeState {
  const lines = new Map<string, string>();
  let dropped = 0;
  for (const { text: line, record } of resultLines(text)) {
    if (record) lines.set(record.key, line);
    else dropped++;
  }
  return { lines, dropped };
}

/** summary.json's bytes: two-space JSON and a final newline, the same wherever a run is summarized. */
export function serializeSummary(summary: Summary): string {
  return `${JSON.stringify(summary, null, 2)}\n`;
}

/** What results.jsonl in `location` holds, read without changing anything (empty when there is none). */
export async function readResumeState(location: LocalLocation): Promise<ResumeState> {
  const existing = await location.readIfExists(RESULTS_FILE);
  return parseResultsText(existing?.toString("utf8") ?? "");
}

/**
 * results.jsonl in a LOCAL out folder, written so a killed run loses at most the image it was
 * writing: one line is appended per image as it finishes, and opening the folder again resumes
 * from what is there. `finish` rewrites the file in input order and writes summary.json.
 */
export class ResultsWriter {
  readonly location: LocalLocation;
  /** Keys done before this run started: the scorer skips them. */
  readonly previous: ResumeState;
  private readonly lines: Map<string, string>;
  private handle: FileHandle | undefined;

  private constructor(location: LocalLocation, previous: ResumeState, handle: FileHandle) {
    this.location = location;
    this.previous = previous;
    this.lines = new Map(previous.lines);
    this.handle = handle;
  }

  /**
   * Opens (creating) the out folder and reads any results.jsonl there. The file is rewritten
   * with only its good lines before appending, so a half line from a kill cannot glue itself
   * to the next record.
   *
   * @param previous what `readResumeState` found, when the caller read it first (to check the
   *   run before changing any file); default: read here.
   */
  static async open(folder: string | LocalLocation, previous?: ResumeState): Promise<ResultsWriter> {
    const location = typeof folder === "string" ? new LocalLocation(folder) : folder;
    previous ??= await readResumeState(location);
    await mkdir(dirname(location.pathOf(RESULTS_FILE)), { recursive: true });
    if (previous.lines.size > 0 || previous.dropped > 0) {
      await location.write(RESULTS_FILE, [...previous.lines.values()].map((line) => `${line}\n`).join(""));
    }
    let handle: FileHandle;
    try {
      handle = await open(location.pathOf(RESULTS_FILE), "a");
    } catch (error) {
      throw new StorageError(`cannot open ${location.pathOf(RESULTS_FILE)} for appending: ${(error as Error).message}`, {
        cause: error,
      });
    }
    return new ResultsWriter(location, previous, handle);
  }

  /** Whether a previous run already wrote this key. */
  isDone(key: string): boolean {
    return this.previous.lines.has(key);
  }

  /** Appends one record as a single write, so a kill leaves at most one partial line. */
  async append(record: ResultRecord): Promise<void> {
    if (!this.handle) throw new StorageError(`results writer for ${this.location.url} is already closed`);
    const line = JSON.stringify(record);
    await this.handle.write(`${line}\n`);
    this.lines.set(record.key, line);
  }

  /** The records for `keys`, in that order, parsed one at a time (keys without a record are skipped). */
  *records(keys: Iterable<string>): Generator<ResultRecord> {
    for (const key of keys) {
      const line = this.lines.get(key);
      if (line !== undefined) yield JSON.parse(line) as ResultRecord;
    }
  }

  /**
   * Rewrites results.jsonl with the records of `keys` in that order (the input listing's), and
   * writes summary.json. Records for keys no longer in the input are left out, so the files
   * always describe the input as listed.
   */
  async finish(keys: readonly string[], summary: Summary): Promise<void> {
    await this.close();
    const body: string[] = [];
    for (const key of keys) {
      const line = this.lines.get(key);
      if (line !== undefined) body.push(`${line}\n`);
    }
    await this.location.write(RESULTS_FILE, body.join(""));
    await this.location.write(SUMMARY_FILE, serializeSummary(summary));
  }

  /** Closes the append handle. Safe to call twice. */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

import type { FileHandle } from "node:fs/promises";
import { mkdir, open } from "node:fs/promises";
import { dirname } from "node:path";
import { StorageError } from "../model/errors.js";
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

/** Parses the text of a results.jsonl, keeping the last line of each key. */
export function parseResultsText(text: string): ResumeState {
  const lines = new Map<string, string>();
  let dropped = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const record = JSON.parse(line) as Partial<ResultRecord>;
      if (typeof record.key !== "string") throw new TypeError("no key");
      lines.set(record.key, line);
    } catch {
      dropped++;
    }
  }
  return { lines, dropped };
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
    await this.location.write(SUMMARY_FILE, `${JSON.stringify(summary, null, 2)}\n`);
  }

  /** Closes the append handle. Safe to call twice. */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

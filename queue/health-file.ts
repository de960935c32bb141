import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** What the worker loop writes on every turn: the time it last made progress. */
export interface ProgressRecord {
  /** ISO-8601 time of the last turn of the receive loop. */
  readonly time: string;
  /** The writing process, so a reader can tell a restarted worker from a stale file. */
  readonly pid: number;
}

/**
 * Records that the worker loop made progress: writes `{ time, pid }` to `path` atomically (a
 * temporary file in the same folder, then rename), so the health check never reads half a file.
 * Called on every turn of the receive loop, including idle long-polls, so its age stays below
 * one turn plus one long-poll while the loop runs.
 */
export async function recordProgress(path: string, now: Date = new Date()): Promise<void> {
  const record: ProgressRecord = { time: now.toISOString(), pid: process.pid };
  const folder = dirname(path);
  await mkdir(folder, { recursive: true });
  // Same folder: rename is atomic only within one file system.
  const temporary = join(folder, `.${basename(path)}.${process.pid}.tmp`);
  await writeFile(temporary, `${JSON.stringify(record)}\n`, "utf8");
  await rename(temporary, path);
}

/**
 * Seconds since the worker loop last recorded progress in `path`, or `undefined` when there is
 * no such file yet (a worker still starting). A file that does not hold a progress record
 * throws, naming the file: that is a bug, not a slow loop.
 */
export async function progressAgeSeconds(path: string, now: Date = new Date()): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  let time: number;
  try {
    time = Date.parse((JSON.parse(text) as Partial<ProgressRecord>).time ?? "");
  } catch {
    time = Number.NaN;
  }
  if (Number.isNaN(time)) throw new Error(`${path} holds no progress record (expected {"time": ISO-8601, "pid": n})`);
  return Math.max(0, (now.getTime() - time) / 1000);
}

import { spawn, type ChildProcess } from "node:child_process";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/** The repository root, where `node --import tsx handlers/cli.ts` runs. */
const ROOT = resolve(import.meta.dirname, "../..");

/** A `googlenet-eval` subcommand running as its own process (in its own process group). */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every stdout line so far, as printed. */
  readonly lines: string[];
  /** stdout lines that are JSON objects (the worker's log), parsed. */
  readonly events: Record<string, unknown>[];
  readonly stderr: string[];
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** Resolves with the first event matching `test`, checking events already seen too. */
  waitForEvent(test: (event: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGKILL to the whole process group: no handler runs, nothing is cleaned up. */
  killGroup(signal?: NodeJS.Signals): void;
}

/**
 * Spawns `node --import tsx handlers/cli.ts ...args` detached, so the test can signal its whole
 * process group, as a Spot reclaim or an OOM kill would.
 *
 * @param options.cwd the working directory, for relative paths in `args`. Default: the
 *   repository root.
 */
export function spawnCli(args: readonly string[], env: Record<string, string>, options: { cwd?: string } = {}): CliProcess {
  // By absolute URL and path, because from another working directory `tsx` does not resolve.
  const tsx = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
  const child = spawn(process.execPath, ["--import", tsx, join(ROOT, "handlers/cli.ts"), ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (child.pid === undefined) throw new Error(`could not start googlenet-eval ${args.join(" ")}`);
  const pid = child.pid;
  const lines: string[] = [];
  const events: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const waiters: {
    test: (event: Record<string, unknown>) => boolean;
    resolve: (event: Record<string, unknown>) => void;
    reject: (error: Error) => void;
  }[] = [];
  let partial = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    partial += chunk;
    const complete = partial.split("\n");
    partial = complete.pop() ?? "";
    for (const line of complete) {
      lines.push(line);
      let event: Record<string, unknown> | undefined;
      try {
        const parsed: unknown = JSON.parse(line);
        if (typeof parsed === "object" && parsed !== null) event = parsed as Record<string, unknown>;
      } catch {
        event = undefined;
      }
      if (event === undefined) continue;
      events.push(event);
      for (const waiter of [...waiters]) {
        if (waiter.test(event)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(event);
        }
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => stderr.push(chunk));
  // A process that ended without the awaited event will never print it: fail now, not at a
  // test timeout minutes later with nothing to read.
  let closed = false;
  const whyNoEvent = (reason: string) => `${reason}; stdout:\n${lines.join("\n")}\nstderr:\n${stderr.join("")}`;
  child.on("close", (code, signal) => {
    closed = true;
    for (const waiter of waiters.splice(0)) waiter.reject(new Error(whyNoEvent(`pid ${pid} ended (${code ?? signal}) without the awaited event`)));
  });
  const exited = new Promise<number | string>((resolveExit) => {
    child.on("exit", (code, signal) => resolveExit(code ?? signal ?? "unknown"));
  });
  return {
    child,
    pid,
    lines,
    events,
    stderr,
    exited,
    waitForEvent(test, timeoutMs = 120_000) {
      const seen = events.find(test);
      if (seen !== undefined) return Promise.resolve(seen);
      if (closed) return Promise.reject(new Error(whyNoEvent(`pid ${pid} had ended without the awaited event`)));
      return new Promise((resolveEvent, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(whyNoEvent(`no matching event from pid ${pid} within ${timeoutMs} ms`)));
        }, timeoutMs);
        waiters.push({
          test,
          resolve: (event) => {
            clearTimeout(timer);
            resolveEvent(event);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
      });
    },
    killGroup(signal = "SIGKILL") {
      try {
        process.kill(-pid, signal);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
      }
    },
  };
}

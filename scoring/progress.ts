import cliProgress from "cli-progress";

/** Progress of a scoring run, shown on stderr. */
export interface Progress {
  /** One image finished (scored or failed). */
  tick(failed: boolean): void;
  /** Final line; stops timers. Safe to call twice. */
  stop(): void;
}

export interface ProgressOptions {
  /** Images this run will score (already-done ones excluded). */
  readonly total: number;
  /** Where to write. Default: process.stderr. */
  readonly stream?: NodeJS.WriteStream;
  /** Force the TTY bar or the plain lines. Default: the stream's own `isTTY`. */
  readonly tty?: boolean;
  /** Seconds between plain lines when not on a TTY. Default: 30. */
  readonly intervalSeconds?: number;
  /** Clock, replaceable in tests. Default: `Date.now`. */
  readonly now?: () => number;
}

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

/** The text of a plain progress line: done/total, rate, ETA, failures. */
export function progressLine(done: number, total: number, failed: number, elapsedSeconds: number): string {
  const rate = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
  const eta = rate > 0 ? (total - done) / rate : Number.POSITIVE_INFINITY;
  const percent = total > 0 ? ((100 * done) / total).toFixed(1) : "100.0";
  return `${done}/${total} images (${percent}%), ${rate.toFixed(2)} images/s, ETA ${formatSeconds(eta)}, ${failed} failed`;
}

/**
 * A bar with images/s and ETA on a TTY; on anything else (CI logs, files) a plain line every
 * `intervalSeconds`, because carriage-return redraws turn a log file into one huge line.
 */
export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? Date.now;
  const tty = options.tty ?? stream.isTTY === true;
  const started = now();
  const elapsed = (): number => (now() - started) / 1000;
  let done = 0;
  let failed = 0;
  let stopped = false;

  if (tty) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: "{bar} {value}/{total} | {rate} images/s | ETA {eta_formatted} | {failed} failed",
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(options.total, 0, { rate: "0.00", failed: 0 });
    return {
      tick(isFailed: boolean): void {
        done++;
        if (isFailed) failed++;
        const seconds = elapsed();
        bar.update(done, { rate: (seconds > 0 ? done / seconds : 0).toFixed(2), failed });
      },
      stop(): void {
        if (stopped) return;
        stopped = true;
        bar.stop();
      },
    };
  }

  const interval = (options.intervalSeconds ?? 30) * 1000;
  let lastLine = started;
  let printedAt = -1;
  const print = (): void => {
    printedAt = done;
    stream.write(`${progressLine(done, options.total, failed, elapsed())}\n`);
  };
  stream.write(`scoring ${options.total} images\n`);
  return {
    tick(isFailed: boolean): void {
      done++;
      if (isFailed) failed++;
      if (now() - lastLine >= interval) {
        lastLine = now();
        print();
      }
    },
    stop(): void {
      if (stopped) return;
      stopped = true;
      // The last periodic line may already say it all.
      if (printedAt !== done) print();
    },
  };
}

import { pathToFileURL } from "node:url";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { progressAgeSeconds } from "../queue/health-file.js";

/**
 * The container health check: `node dist/handlers/health-check.js` (the ECS task definition
 * and the Dockerfile's HEALTHCHECK run it). Healthy while the worker loop keeps rewriting its
 * health file (queue/health-file.ts recordProgress); a loop that hangs lets the file age
 * past the limit and ECS replaces the task.
 */
export const HEALTH_ENV = {
  /** The file the worker loop rewrites (the same variable the worker reads). */
  file: "HEALTH_FILE",
  /** Oldest acceptable age of that file, in seconds. */
  maxAge: "HEALTH_MAX_AGE_SECONDS",
} as const;

/** Default largest age: six idle 20 s long-polls, or a turn that takes two minutes. */
export const DEFAULT_HEALTH_MAX_AGE_SECONDS = 120;

export interface HealthSettings {
  readonly file: string;
  readonly maxAgeSeconds: number;
}

const Settings = z.object({
  file: z.string({ required_error: `${HEALTH_ENV.file} is required: the file the worker loop rewrites` }).min(1, `${HEALTH_ENV.file} is empty`),
  maxAgeSeconds: z
    .string()
    .regex(/^[1-9]\d*$/, `${HEALTH_ENV.maxAge} (or --max-age) must be a positive whole number of seconds`)
    .transform(Number)
    .default(String(DEFAULT_HEALTH_MAX_AGE_SECONDS)),
});

/** `--max-age S` (what the task definition passes) overrides HEALTH_MAX_AGE_SECONDS. */
export function parseHealthSettings(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): HealthSettings {
  const flag = argv.indexOf("--max-age");
  const maxAge = flag >= 0 ? argv[flag + 1] : env[HEALTH_ENV.maxAge];
  const result = Settings.safeParse({
    file: env[HEALTH_ENV.file]?.trim() || undefined,
    maxAgeSeconds: maxAge?.trim() || undefined,
  });
  if (!result.success) throw new ConfigurationError(result.error.issues.map((issue) => issue.message).join("; "));
  return result.data;
}

/** The verdict as an exit code and one line for the health-check log. */
export async function checkHealth(settings: HealthSettings, now: Date = new Date()): Promise<{ code: 0 | 1; line: string }> {
  const age = await progressAgeSeconds(settings.file, now);
  // A worker still loading its synsets and GPU has written nothing yet; ECS's startPeriod
  // ignores failures during start-up, so "missing" only counts against a task past it.
  if (age === undefined) return { code: 1, line: `unhealthy: ${settings.file} does not exist (worker loop has not started)` };
  if (age > settings.maxAgeSeconds) {
    return { code: 1, line: `unhealthy: worker loop last made progress ${Math.round(age)} s ago (limit ${settings.maxAgeSeconds} s, ${settings.file})` };
  }
  return { code: 0, line: `healthy: worker loop made progress ${Math.round(age)} s ago` };
}

/** Entry point: prints one line, returns the exit code. */
export async function healthCheckMain(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const { code, line } = await checkHealth(parseHealthSettings(argv, env));
    (code === 0 ? process.stdout : process.stderr).write(`${line}\n`);
    return code;
  } catch (error) {
    process.stderr.write(`unhealthy: ${(error as Error).message}\n`);
    return 1;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  process.exitCode = await healthCheckMain(process.argv.slice(2));
}

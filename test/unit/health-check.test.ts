import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkHealth, DEFAULT_HEALTH_MAX_AGE_SECONDS, HEALTH_ENV, parseHealthSettings } from "../../handlers/health-check.js";
import { projectRoot } from "../../infra/project-root.js";
import { ConfigurationError } from "../../model/errors.js";
import { recordProgress } from "../../queue/health-file.js";

let folder: string;
let file: string;
const T0 = new Date("2026-03-01T10:00:00.000Z");
const after = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

beforeEach(() => {
  folder = mkdtempSync(join(tmpdir(), "health-check-"));
  file = join(folder, "health.json");
});

afterEach(() => {
  rmSync(folder, { recursive: true, force: true });
});

describe("parseHealthSettings", () => {
  it("reads the file from HEALTH_FILE and defaults the age limit", () => {
    expect(parseHealthSettings([], { [HEALTH_ENV.file]: file })).toEqual({ file, maxAgeSeconds: DEFAULT_HEALTH_MAX_AGE_SECONDS });
  });

  it("takes --max-age over HEALTH_MAX_AGE_SECONDS", () => {
    const env = { [HEALTH_ENV.file]: file, [HEALTH_ENV.maxAge]: "60" };
    expect(parseHealthSettings([], env).maxAgeSeconds).toBe(60);
    expect(parseHealthSettings(["--max-age", "960"], env).maxAgeSeconds).toBe(960);
  });

  it.each([
    { env: {}, says: "HEALTH_FILE is required" },
    { env: { HEALTH_FILE: "/tmp/h.json", HEALTH_MAX_AGE_SECONDS: "soon" }, says: "HEALTH_MAX_AGE_SECONDS (or --max-age) must be a positive whole number" },
  ])("fails naming the variable: $says", ({ env, says }) => {
    expect(() => parseHealthSettings([], env)).toThrow(ConfigurationError);
    expect(() => parseHealthSettings([], env)).toThrow(says);
  });
});

describe("checkHealth on a real file", () => {
  it("is healthy while the loop's last record is younger than the limit", async () => {
    // Prepare
    await recordProgress(file, T0);

    // Act
    const verdict = await checkHealth({ file, maxAgeSeconds: 120 }, after(119));

    // Assess
    expect(verdict).toEqual({ code: 0, line: "healthy: worker loop made progress 119 s ago" });
  });

  it("is unhealthy once the loop stopped making progress, saying how long ago", async () => {
    // Prepare
    await recordProgress(file, T0);

    // Act
    const verdict = await checkHealth({ file, maxAgeSeconds: 120 }, after(300));

    // Assess
    expect(verdict.code).toBe(1);
    expect(verdict.line).toBe(`unhealthy: worker loop last made progress 300 s ago (limit 120 s, ${file})`);
  });

  it("is unhealthy while the file does not exist (ECS's startPeriod covers start-up)", async () => {
    const verdict = await checkHealth({ file, maxAgeSeconds: 120 }, T0);
    expect(verdict).toEqual({ code: 1, line: `unhealthy: ${file} does not exist (worker loop has not started)` });
  });
});

describe("the health-check entry point, run as the container runs it", () => {
  const run = (env: Record<string, string>, args: string[] = []) =>
    spawnSync(process.execPath, ["--import", "tsx", join(projectRoot(), "handlers", "health-check.ts"), ...args], {
      env: { PATH: process.env.PATH ?? "", ...env },
      encoding: "utf8",
      timeout: 60_000,
    });

  it("exits 0 for a fresh record and 1 with one line of reason for a stale one", async () => {
    // Prepare
    await recordProgress(file);

    // Act
    const fresh = run({ [HEALTH_ENV.file]: file });
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const staleNow = run({ [HEALTH_ENV.file]: file }, ["--max-age", "1"]);

    // Assess
    expect(fresh.status).toBe(0);
    expect(fresh.stdout).toMatch(/^healthy: worker loop made progress \d+ s ago\n$/);
    expect(staleNow.status).toBe(1);
    expect(staleNow.stderr).toMatch(/^unhealthy: worker loop last made progress \d+ s ago \(limit 1 s, .*health\.json\)\n$/);
  });

  it("exits 1 naming the variable when HEALTH_FILE is unset", () => {
    const result = run({});
    expect(result.status).toBe(1);
    expect(result.stderr).toBe("unhealthy: HEALTH_FILE is required: the file the worker loop rewrites\n");
  });
});

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { progressAgeSeconds, recordProgress } from "../../queue/health-file.js";

let folder: string;

beforeEach(() => {
  folder = mkdtempSync(join(tmpdir(), "health-file-"));
});

afterEach(() => {
  rmSync(folder, { recursive: true, force: true });
});

describe("recordProgress", () => {
  it("writes the time and pid as one JSON line, creating the folder, and leaves no temporary file", async () => {
    // Prepare
    const path = join(folder, "nested", "health.json");
    const now = new Date("2026-03-01T10:00:00.000Z");

    // Act
    await recordProgress(path, now);

    // Assess
    expect(JSON.parse(readFileSync(path, "utf8"))).toEqual({ time: "2026-03-01T10:00:00.000Z", pid: process.pid });
    expect(readdirSync(join(folder, "nested"))).toEqual(["health.json"]);
  });

  it("replaces the previous record on every turn", async () => {
    // Prepare
    const path = join(folder, "health.json");
    await recordProgress(path, new Date("2026-03-01T10:00:00.000Z"));

    // Act
    await recordProgress(path, new Date("2026-03-01T10:00:20.000Z"));

    // Assess
    expect(await progressAgeSeconds(path, new Date("2026-03-01T10:00:25.000Z"))).toBe(5);
  });
});

describe("progressAgeSeconds", () => {
  it("is undefined while the loop has written nothing", async () => {
    expect(await progressAgeSeconds(join(folder, "absent.json"))).toBeUndefined();
  });

  it("measures from the recorded time, never negative", async () => {
    // Prepare
    const path = join(folder, "health.json");
    await recordProgress(path, new Date("2026-03-01T10:00:00.000Z"));

    // Act
    const later = await progressAgeSeconds(path, new Date("2026-03-01T10:02:30.500Z"));
    const earlier = await progressAgeSeconds(path, new Date("2026-03-01T09:59:59.000Z"));

    // Assess
    expect(later).toBe(150.5);
    expect(earlier).toBe(0);
  });

  it("throws, naming the file, when it holds something else", async () => {
    // Prepare
    const path = join(folder, "health.json");
    writeFileSync(path, "not json");

    // Act / Assess
    await expect(progressAgeSeconds(path)).rejects.toThrow(`${path} holds no progress record`);
  });
});

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Measurement, Task } from "./measure.js";

const MEASURE = fileURLToPath(new URL(`./measure.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url));

/**
 * Runs one measurement in its own process (so peak RSS is that measurement's alone) and
 * returns the JSON it prints last. `env` adds variables to the child's environment, for
 * settings that only take effect at process start (MALLOC_ARENA_MAX).
 */
export function run(task: Task, env: Record<string, string> = {}): Promise<Measurement> {
  return new Promise((resolve, reject) => {
    const args = MEASURE.endsWith(".ts") ? ["--import", "tsx", MEASURE] : [MEASURE];
    const child = spawn(process.execPath, [...args, JSON.stringify(task)], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      const last = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) reject(new Error(`measurement ${JSON.stringify(task)} exited with ${code}`));
      else resolve(JSON.parse(last) as Measurement);
    });
  });
}

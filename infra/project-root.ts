import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigurationError } from "../model/errors.js";

/**
 * The repository root (the folder holding package.json and the Dockerfile). Found by walking up
 * from this file because it runs both as infra/*.ts (through tsx) and as dist/infra/*.js.
 */
export function projectRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "Dockerfile"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new ConfigurationError(`no folder with package.json and Dockerfile above ${from}; run cdk from the repository`);
    dir = parent;
  }
}

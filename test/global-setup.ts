import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * One fresh cache folder per suite run (GOOGLENET_EVAL_CACHE_DIR, inherited by the test workers
 * and the CLI processes they spawn): the run starts cold, as CI on a clean machine does, and
 * shares passed graph-edit probes between its files, as a user's runs do; nothing leaks into
 * the developer's ~/.cache or from one run into the next.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const saved = process.env.GOOGLENET_EVAL_CACHE_DIR;
  const folder = await mkdtemp(join(tmpdir(), "googlenet-eval-test-cache-"));
  process.env.GOOGLENET_EVAL_CACHE_DIR = folder;
  return async () => {
    if (saved === undefined) delete process.env.GOOGLENET_EVAL_CACHE_DIR;
    else process.env.GOOGLENET_EVAL_CACHE_DIR = saved;
    await rm(folder, { recursive: true, force: true });
  };
}

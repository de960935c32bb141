import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // A fresh GOOGLENET_EVAL_CACHE_DIR per run: passed graph-edit probes shared within it only.
    globalSetup: ["test/global-setup.ts"],
    // Model tests run real GoogLeNet passes on two cores; give them room rather than flake.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    // Each file loads its own models; running files in parallel on two cores only thrashes.
    fileParallelism: false,
    pool: "forks",
  },
});

import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnCli } from "../helpers/cli-process.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

/**
 * The CLI as its own process (`node --import tsx handlers/cli.ts`), for what only a real process
 * shows: exit codes, the streams, and settings checked against a queue read at start.
 */
const REPO = resolve(import.meta.dirname, "../..");

async function finished(args: string[], env: Record<string, string> = {}): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const cli = spawnCli(args, env);
  const code = await cli.exited;
  return { code, stdout: cli.lines.join("\n"), stderr: cli.stderr.join("") };
}

let emulator: Emulator;
const savedSynsets = process.env.GOOGLENET_EVAL_SYNSETS;

beforeAll(async () => {
  emulator = await startEmulator();
  // spawnCli passes this process's environment on: no class-name override reaches the children.
  delete process.env.GOOGLENET_EVAL_SYNSETS;
});

afterAll(async () => {
  if (savedSynsets !== undefined) process.env.GOOGLENET_EVAL_SYNSETS = savedSynsets;
  await emulator.stop();
});

describe("googlenet-eval as a process", () => {
  it("with no command: usage on stderr, nothing on stdout, exit 2", async () => {
    // Act
    const ran = await finished([]);
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stdout).toBe("");
    expect(ran.stderr).toMatch(/(^|\n)googlenet-eval: no command given\n\nusage: googlenet-eval <command> \[options\]\n[\s\S]*\n$/);
  });

  it("--version prints package.json's version and exits 0", async () => {
    // Prepare
    const { version } = JSON.parse(await readFile(resolve(REPO, "package.json"), "utf8")) as { version: string };
    // Act
    const ran = await finished(["--version"]);
    // Assess
    expect(ran.code).toBe(0);
    expect(ran.stdout).toBe(`googlenet-eval ${version}`);
  });
});

describe("a tfjs backend without --engine tfjs", () => {
  it.each([
    { backend: "cpu", flags: ["--backend", "cpu"] },
    { backend: "wasm", flags: ["--backend", "wasm", "--engine", "auto"] },
  ])(
    "score $flags: exit 2 naming both flags and what to write, before any model is read",
    async ({ backend, flags }) => {
      // Prepare: the model does not exist, so an error about it would mean the flags got through.
      const args = ["score", REPO, "--model", resolve(REPO, "no-such-model.onnx"), ...flags];
      // Act
      const ran = await finished(args);
      // Assess
      expect(ran.code).toBe(2);
      expect(ran.stdout).toBe("");
      expect(ran.stderr).toMatch(
        new RegExp(
          `(^|\\n)googlenet-eval score: --backend ${backend} is a tfjs backend, but --engine auto \\(the default\\) picks the engine itself and may pick onnxruntime; ` +
            `give --engine tfjs with it, or leave out --backend\\n$`,
        ),
      );
      expect(ran.stderr).not.toMatch(/no-such-model/);
    },
  );

  it("worker with TFJS_BACKEND and a drop folder on engine auto: exit 2 naming the flags and variables", async () => {
    // Act
    const ran = await finished(["worker", "--queue", "http://127.0.0.1:9/000000000000/work", "--model", "m.onnx", "--drop-out", "out"], { TFJS_BACKEND: "wasm" });
    // Assess
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(
      /(^|\n)googlenet-eval worker: --backend \/ TFJS_BACKEND wasm is a tfjs backend, but --engine \/ ENGINE auto \(the default\) picks the engine itself and may pick onnxruntime; give --engine \/ ENGINE tfjs with it, or leave out --backend \/ TFJS_BACKEND\n$/,
    );
  });
});

describe("googlenet-eval worker against a queue", () => {
  it("refuses a --heartbeat the queue's own visibility timeout cannot hold: exit 2, the flag and the range, no stack", async () => {
    // Prepare
    const queue = emulator.createQueue("cli-heartbeat", { visibilityTimeoutSeconds: 10, maxReceiveCount: 5 });
    // Act
    const ran = await finished(["worker", "--queue", queue.queueUrl, "--heartbeat", "30", "--until-empty"], emulator.env);
    // Assess
    expect(ran.code).toBe(2);
    // (The AWS SDK may warn about the Node version first.)
    expect(ran.stderr).toMatch(
      /(^|\n)googlenet-eval worker: --heartbeat must be from 1 to the visibility timeout minus 1: .*visibility timeout \(10s\).*from 1 to 9 seconds\n$/,
    );
    expect(ran.stderr).not.toMatch(/^\s+at /m);
  });

  it("starts with no synsets file and no GOOGLENET_EVAL_SYNSETS", async () => {
    // Prepare
    const queue = emulator.createQueue("cli-no-synsets", { visibilityTimeoutSeconds: 10, maxReceiveCount: 5 });
    // Act
    const ran = await finished(["worker", "--queue", queue.queueUrl, "--until-empty", "--wait", "0"], emulator.env);
    // Assess
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toMatch(/"event":"worker-started"/);
  });
});

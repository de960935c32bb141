import { describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { parseWorkerArgs, workerOptionsFrom } from "../../handlers/worker-command.js";
import { resolveWorkerTiming } from "../../queue/worker.js";
import type { Synsets } from "../../model/synsets.js";

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/batches";
const SYNSETS: Synsets = { source: "test", wnids: ["n00000001"], names: ["first"], indexOf: () => undefined };

describe("parseWorkerArgs", () => {
  it("takes every setting from the environment the ECS task definition sets", () => {
    // Prepare
    const env = {
      QUEUE_URL: QUEUE,
      DEFAULT_MODEL: "s3://models/bvlc-googlenet.onnx",
      DEFAULT_CROPS: "10",
      DROP_OUTPUT: "s3://photos/results",
      DROP_INPUT: "s3://photos/drop/",
      GOOGLENET_EVAL_SYNSETS: "s3://models/synset_words.txt",
      VISIBILITY_TIMEOUT_SECONDS: "900",
      BATCH_DEADLINE_SECONDS: "1200",
      STOP_TIMEOUT_SECONDS: "120",
      REQUIRE_GPU: "true",
      ENGINE: "tfjs",
      TFJS_BACKEND: "tensorflow",
      THREADS: "4",
      CROPS_PER_CALL: "64",
      HEALTH_FILE: "/tmp/worker-health.json",
    };
    // Act
    const settings = parseWorkerArgs([], env);
    const options = workerOptionsFrom(settings!, SYNSETS);
    // Assess
    expect(settings?.requireGpu).toBe(true);
    expect(options).toEqual({
      queueUrl: QUEUE,
      classNames: ["first"],
      untilEmpty: false,
      onStop: "fit",
      engineSettings: { threads: 4, backend: "tensorflow", requireGpu: true },
      visibilityTimeoutSeconds: 900,
      deadlineSeconds: 1200,
      stopTimeoutSeconds: 120,
      cropsPerCall: 64,
      healthFile: "/tmp/worker-health.json",
      dropInput: "s3://photos/drop/",
      drop: { model: "s3://models/bvlc-googlenet.onnx", engine: "tfjs", crops: 10, out: "s3://photos/results" },
    });
  });

  it("lets flags override the environment, and leaves timing the flags do not give to the queue", () => {
    // Act
    const settings = parseWorkerArgs(
      ["--queue", QUEUE, "--synsets", "s.txt", "--visibility-timeout", "6", "--until-empty", "--on-stop", "finish"],
      { QUEUE_URL: "https://elsewhere.example/q", VISIBILITY_TIMEOUT_SECONDS: "900" },
    );
    const options = workerOptionsFrom(settings!, SYNSETS);
    // Assess
    expect(options).toMatchObject({ queueUrl: QUEUE, visibilityTimeoutSeconds: 6, untilEmpty: true, onStop: "finish" });
    expect(options.heartbeatSeconds).toBeUndefined();
    expect(options.deadlineSeconds).toBeUndefined();
    expect(options.drop).toBeUndefined();
    expect(settings?.requireGpu).toBe(false);
  });

  it.each([
    ["no queue", [], { GOOGLENET_EVAL_SYNSETS: "s.txt" }, /--queue URL \(or QUEUE_URL\) is required/],
    ["a bad crop count", ["--queue", QUEUE, "--synsets", "s", "--crops", "12"], {}, /DEFAULT_CROPS must be one of: 1, 10, 144/],
    ["a model without a drop output", ["--queue", QUEUE, "--synsets", "s"], { DEFAULT_MODEL: "m.onnx" }, /needs both --model \(DEFAULT_MODEL\) and --drop-out \(DROP_OUTPUT\)/],
    ["a drop input without a model", ["--queue", QUEUE, "--synsets", "s", "--drop-input", "s3://b/drop/"], {}, /--drop-input \(DROP_INPUT\) needs --model/],
    ["a drop input that is not S3", ["--queue", QUEUE, "--synsets", "s", "--drop-input", "/tmp/drop"], {}, /--drop-input \/ DROP_INPUT must be s3:\/\/bucket\/prefix\//],
    ["an unknown engine", ["--queue", QUEUE, "--synsets", "s", "--engine", "tfj"], {}, /tfjs, onnxruntime, auto/],
    ["an unknown backend", ["--queue", QUEUE, "--synsets", "s"], { TFJS_BACKEND: "gpu" }, /--backend \/ TFJS_BACKEND must be one of: auto, tensorflow, wasm, cpu/],
    ["REQUIRE_GPU that is not a boolean", ["--queue", QUEUE, "--synsets", "s"], { REQUIRE_GPU: "maybe" }, /REQUIRE_GPU must be true or false/],
    ["a heartbeat of 0", ["--queue", QUEUE, "--synsets", "s", "--heartbeat", "0"], {}, /^--heartbeat must be from 1 to the visibility timeout minus 1$/],
    ["an unknown stop mode", ["--queue", QUEUE, "--synsets", "s", "--on-stop", "later"], {}, /--on-stop must be one of: fit, finish, abandon/],
    ["a long poll over 20 s", ["--queue", QUEUE, "--synsets", "s", "--wait", "21"], {}, /--wait must be a whole number of seconds from 0 to 20/],
    ["a heartbeat as long as the visibility timeout", ["--queue", QUEUE, "--heartbeat", "30"], { VISIBILITY_TIMEOUT_SECONDS: "30" }, /^--heartbeat must be from 1 to the visibility timeout minus 1 \(1 to 29 here\)$/],
    ["a deadline of 0", ["--queue", QUEUE, "--deadline", "0"], {}, /--deadline \/ BATCH_DEADLINE_SECONDS must be a whole number of seconds from 1 to 43200/],
    ["a visibility timeout of 1 s", ["--queue", QUEUE], { VISIBILITY_TIMEOUT_SECONDS: "1" }, /--visibility-timeout \/ VISIBILITY_TIMEOUT_SECONDS must be a whole number of seconds from 2 to 43200/],
    ["a stop timeout past 12 hours", ["--queue", QUEUE, "--stop-timeout", "43201"], {}, /--stop-timeout \/ STOP_TIMEOUT_SECONDS must be a whole number of seconds from 1 to 43200/],
    ["0 threads", ["--queue", QUEUE], { THREADS: "0" }, /--threads \/ THREADS must be a positive integer/],
    ["0 crops per call", ["--queue", QUEUE, "--crops-per-call", "0"], {}, /--crops-per-call \/ CROPS_PER_CALL must be a positive integer/],
    ["an empty model cache", ["--queue", QUEUE, "--model-cache", "0"], {}, /--model-cache must be a positive integer/],
    ["an unknown flag", ["--queue", QUEUE, "--nope"], {}, /--nope/],
  ])("refuses %s, naming the flag or variable", (_name, argv, env, pattern) => {
    // Act / Assess
    expect(() => parseWorkerArgs(argv, env)).toThrow(ConfigurationError);
    expect(() => parseWorkerArgs(argv, env)).toThrow(pattern);
  });
});

describe("the worker's input byte cap", () => {
  it("comes from --max-input-bytes or MAX_INPUT_BYTES, reaches the worker options, and is absent (default 50 MiB) otherwise", () => {
    const env = { QUEUE_URL: QUEUE };
    expect(workerOptionsFrom(parseWorkerArgs(["--max-input-bytes", "2048"], env)!, SYNSETS).inputMaxBytes).toBe(2048);
    expect(workerOptionsFrom(parseWorkerArgs([], { ...env, MAX_INPUT_BYTES: "4096" })!, SYNSETS).inputMaxBytes).toBe(4096);
    expect(workerOptionsFrom(parseWorkerArgs([], env)!, SYNSETS).inputMaxBytes).toBeUndefined();
    expect(() => parseWorkerArgs([], { ...env, MAX_INPUT_BYTES: "0" })).toThrow(/--max-input-bytes \/ MAX_INPUT_BYTES/);
  });
});

describe("the worker's stop mode", () => {
  it("takes the old --finish-on-stop as --on-stop finish, with one deprecation line", () => {
    // Prepare
    const lines: string[] = [];
    // Act
    const settings = parseWorkerArgs(["--queue", QUEUE, "--finish-on-stop"], {}, (line) => lines.push(line));
    // Assess
    expect(settings?.onStop).toBe("finish");
    expect(lines).toEqual(["googlenet-eval worker: --finish-on-stop is deprecated and goes in 0.2.0; use --on-stop finish\n"]);
  });

  it("says nothing for --on-stop finish", () => {
    // Prepare
    const lines: string[] = [];
    // Act
    const settings = parseWorkerArgs(["--queue", QUEUE, "--on-stop", "finish"], {}, (line) => lines.push(line));
    // Assess
    expect(settings?.onStop).toBe("finish");
    expect(lines).toEqual([]);
  });
});

describe("the drop folder's pixel limit", () => {
  const DROP = { QUEUE_URL: QUEUE, DEFAULT_MODEL: "s3://models/m.onnx", DROP_OUTPUT: "s3://photos/results" };

  it("comes from --drop-max-pixels or DROP_MAX_PIXELS into the drop settings, and is absent (the drop job's 60 million) otherwise", () => {
    // Act
    const fromFlag = workerOptionsFrom(parseWorkerArgs(["--drop-max-pixels", "12000000"], { ...DROP, DROP_MAX_PIXELS: "5" })!, SYNSETS);
    const fromEnv = workerOptionsFrom(parseWorkerArgs([], { ...DROP, DROP_MAX_PIXELS: "24000000" })!, SYNSETS);
    const unset = workerOptionsFrom(parseWorkerArgs([], DROP)!, SYNSETS);
    // Assess
    expect(fromFlag.drop?.maxPixels).toBe(12_000_000);
    expect(fromEnv.drop?.maxPixels).toBe(24_000_000);
    expect(unset.drop).toBeDefined();
    expect(unset.drop).not.toHaveProperty("maxPixels");
  });

  it.each([
    ["0", DROP, /--drop-max-pixels \/ DROP_MAX_PIXELS must be a positive integer/],
    ["12.5", DROP, /--drop-max-pixels \/ DROP_MAX_PIXELS must be a positive integer/],
    ["1000", { QUEUE_URL: QUEUE }, /--drop-max-pixels \(DROP_MAX_PIXELS\) is a drop-folder setting: it needs --model and --drop-out/],
  ])("refuses DROP_MAX_PIXELS=%s with %j", (value, env, pattern) => {
    // Act
    const act = () => parseWorkerArgs([], { ...env, DROP_MAX_PIXELS: value });
    // Assess
    expect(act).toThrow(ConfigurationError);
    expect(act).toThrow(pattern);
  });
});

describe("a tfjs backend and the drop folder's engine", () => {
  const DROP = { QUEUE_URL: QUEUE, DEFAULT_MODEL: "s3://models/m.onnx", DROP_OUTPUT: "s3://photos/results" };

  it("refuses a backend with engine auto for the drop folder, naming both settings and the way out", () => {
    // Act
    const act = () => parseWorkerArgs([], { ...DROP, TFJS_BACKEND: "wasm" });
    // Assess
    expect(act).toThrow(ConfigurationError);
    expect(act).toThrow(
      "--backend / TFJS_BACKEND wasm is a tfjs backend, but --engine / ENGINE auto (the default) picks the engine itself and may pick onnxruntime; " +
        "give --engine / ENGINE tfjs with it, or leave out --backend / TFJS_BACKEND",
    );
  });

  it.each([
    ["engine tfjs", { ...DROP, TFJS_BACKEND: "wasm", ENGINE: "tfjs" }],
    ["backend auto", { ...DROP, TFJS_BACKEND: "auto" }],
    ["no drop folder (batches run their manifest's engine)", { QUEUE_URL: QUEUE, TFJS_BACKEND: "cpu" }],
  ])("takes a backend with %s", (_name, env) => {
    // Act / Assess
    expect(parseWorkerArgs([], env)?.backend).toBe(env.TFJS_BACKEND);
  });
});

describe("the worker's class names", () => {
  it.each([
    ["the built-in ImageNet list without --synsets or the variable", [], {}, "built-in", /data\/synset_words\.txt$/],
    ["the variable's file", [], { GOOGLENET_EVAL_SYNSETS: "s3://models/other.txt" }, "env", /^s3:\/\/models\/other\.txt$/],
    ["--synsets over the variable", ["--synsets", "mine.txt"], { GOOGLENET_EVAL_SYNSETS: "s3://models/other.txt" }, "flag", /^mine\.txt$/],
  ])("come from %s", (_name, flags, env, from, url) => {
    // Act
    const settings = parseWorkerArgs(["--queue", QUEUE, ...flags], env);
    // Assess
    expect(settings?.synsets.from).toBe(from);
    expect(settings?.synsets.url).toMatch(url);
  });
});

describe("resolveWorkerTiming", () => {
  it("takes the queue's visibility timeout and fits the heartbeat to it", () => {
    // Act
    const production = resolveWorkerTiming({ queueUrl: QUEUE, classNames: [] }, 600);
    const short = resolveWorkerTiming({ queueUrl: QUEUE, classNames: [] }, 15);
    // Assess: the smaller of 120 s and a fifth of the timeout, at least 1 s.
    expect(production).toEqual({ waitTimeSeconds: 20, visibilityTimeoutSeconds: 600, heartbeatSeconds: 120, deadlineSeconds: 900, stopTimeoutSeconds: 30 });
    expect(short).toMatchObject({ visibilityTimeoutSeconds: 15, heartbeatSeconds: 3 });
  });

  it("refuses a heartbeat that could not keep a message hidden, as a settings error with the valid range", () => {
    // Act / Assess
    const act = () => resolveWorkerTiming({ queueUrl: QUEUE, classNames: [], heartbeatSeconds: 15 }, 15);
    expect(act).toThrow(ConfigurationError);
    expect(act).toThrow(/give a heartbeat from 1 to 14 seconds/);
  });
});

import { describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { parseWorkerArgs, workerOptionsFrom } from "../../handlers/worker-command.js";
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
      GOOGLENET_EVAL_SYNSETS: "s3://models/synset_words.txt",
      VISIBILITY_TIMEOUT_SECONDS: "900",
    };
    // Act
    const settings = parseWorkerArgs([], env);
    const options = workerOptionsFrom(settings!, SYNSETS);
    // Assess
    expect(options).toMatchObject({
      queueUrl: QUEUE,
      visibilityTimeoutSeconds: 900,
      heartbeatSeconds: 120,
      onStop: "abandon",
      untilEmpty: false,
      drop: { model: "s3://models/bvlc-googlenet.onnx", crops: 10, out: "s3://photos/results" },
      classNames: ["first"],
    });
  });

  it("lets flags override the environment and derives a heartbeat that fits a short timeout", () => {
    // Act
    const settings = parseWorkerArgs(
      ["--queue", QUEUE, "--synsets", "s.txt", "--visibility-timeout", "6", "--until-empty", "--finish-on-stop"],
      { QUEUE_URL: "https://elsewhere.example/q", VISIBILITY_TIMEOUT_SECONDS: "900" },
    );
    const options = workerOptionsFrom(settings!, SYNSETS);
    // Assess
    expect(options).toMatchObject({ queueUrl: QUEUE, visibilityTimeoutSeconds: 6, heartbeatSeconds: 1, untilEmpty: true, onStop: "finish" });
    expect(options.drop).toBeUndefined();
  });

  it.each([
    ["no queue", [], { GOOGLENET_EVAL_SYNSETS: "s.txt" }, /--queue URL \(or QUEUE_URL\) is required/],
    ["no synsets", ["--queue", QUEUE], {}, /GOOGLENET_EVAL_SYNSETS/],
    ["a bad crop count", ["--queue", QUEUE, "--synsets", "s", "--crops", "12"], {}, /DEFAULT_CROPS must be one of: 1, 10, 144/],
    ["a model without a drop output", ["--queue", QUEUE, "--synsets", "s"], { DEFAULT_MODEL: "m.onnx" }, /needs both --model \(DEFAULT_MODEL\) and --drop-out \(DROP_OUTPUT\)/],
    ["an unknown engine", ["--queue", QUEUE, "--synsets", "s", "--engine", "tfj"], {}, /tfjs, onnxruntime, auto/],
    ["an unknown flag", ["--queue", QUEUE, "--nope"], {}, /--nope/],
  ])("refuses %s, naming the flag or variable", (_name, argv, env, pattern) => {
    // Act / Assess
    expect(() => parseWorkerArgs(argv, env)).toThrow(ConfigurationError);
    expect(() => parseWorkerArgs(argv, env)).toThrow(pattern);
  });
});

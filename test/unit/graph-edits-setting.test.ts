import { describe, expect, it } from "vitest";
import { GRAPH_EDITS_ENV, graphEditsSetting } from "../../handlers/graph-edits.js";
import { parseWorkerArgs, WORKER_ENV, workerOptionsFrom } from "../../handlers/worker-command.js";
import { ConfigurationError } from "../../model/errors.js";
import type { Synsets } from "../../model/synsets.js";

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/batches";
const SYNSETS: Synsets = { source: "test", wnids: ["n00000001"], names: ["first"], indexOf: () => undefined };

describe("graphEditsSetting", () => {
  it.each([
    ["nothing given", undefined, {}, true],
    ["an empty variable", undefined, { [GRAPH_EDITS_ENV]: " " }, true],
    ["the variable on", undefined, { [GRAPH_EDITS_ENV]: "on" }, true],
    ["--no-graph-edits", true, {}, false],
    ["the variable off", undefined, { [GRAPH_EDITS_ENV]: "off" }, false],
    ["the variable FALSE", undefined, { [GRAPH_EDITS_ENV]: "FALSE" }, false],
    ["the variable 0", undefined, { [GRAPH_EDITS_ENV]: "0" }, false],
    ["--no-graph-edits over the variable on", true, { [GRAPH_EDITS_ENV]: "on" }, false],
  ] as const)("%s -> edits %s", (_, flag, env, expected) => {
    expect(graphEditsSetting(flag, env)).toBe(expected);
  });

  it("refuses any other value, naming the variable and the choices", () => {
    expect(() => graphEditsSetting(undefined, { [GRAPH_EDITS_ENV]: "maybe" })).toThrow(ConfigurationError);
    expect(() => graphEditsSetting(undefined, { [GRAPH_EDITS_ENV]: "maybe" })).toThrow("GOOGLENET_EVAL_GRAPH_EDITS must be on or off");
  });
});

describe("the worker's graph-edits setting", () => {
  it.each([
    ["--no-graph-edits", ["--no-graph-edits"], {}],
    [`${GRAPH_EDITS_ENV}=off`, [], { [GRAPH_EDITS_ENV]: "off" }],
  ])("%s reaches the engine settings as graphEdits: false", (_, argv, env) => {
    // Act
    const settings = parseWorkerArgs(["--queue", QUEUE, ...argv], env);
    const options = workerOptionsFrom(settings!, SYNSETS);

    // Assess
    expect(WORKER_ENV.graphEdits).toBe(GRAPH_EDITS_ENV);
    expect(options.engineSettings).toEqual({ graphEdits: false });
  });

  it("leaves the engine's default (edits on, probed) when neither is given", () => {
    const options = workerOptionsFrom(parseWorkerArgs(["--queue", QUEUE], {})!, SYNSETS);
    expect(options.engineSettings).toEqual({});
  });

  it("refuses a bad value at start-up as a usage error naming the variable", () => {
    expect(() => parseWorkerArgs(["--queue", QUEUE], { [GRAPH_EDITS_ENV]: "sometimes" })).toThrow(/GOOGLENET_EVAL_GRAPH_EDITS must be on or off/);
  });
});

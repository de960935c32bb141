import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnCli } from "../helpers/cli-process.js";

/**
 * `googlenet-eval score` as its own process on one real photo at one crop: the flag and the
 * environment variables reach onnxruntime, whose one line on stderr says which graph edits run
 * and whether the probe ran or passed earlier (the probe cache).
 */
const SHARED = resolve(import.meta.dirname, "../../../shared");
const MODEL = join(SHARED, "models/bvlc-googlenet.onnx");
const PHOTO = "n01440764_tench.JPEG";

let work: string;
let photos: string;
const savedSynsets = process.env.GOOGLENET_EVAL_SYNSETS;
const savedEdits = process.env.GOOGLENET_EVAL_GRAPH_EDITS;
const savedProbeCache = process.env.GOOGLENET_EVAL_PROBE_CACHE;

beforeAll(async () => {
  // spawnCli passes this process's environment on: neither variable may leak into the children.
  delete process.env.GOOGLENET_EVAL_SYNSETS;
  delete process.env.GOOGLENET_EVAL_GRAPH_EDITS;
  delete process.env.GOOGLENET_EVAL_PROBE_CACHE;
  work = await mkdtemp(join(tmpdir(), "graph-edits-cli-"));
  photos = join(work, "photos");
  await mkdir(photos);
  await copyFile(join(SHARED, "imagenet/samples", PHOTO), join(photos, PHOTO));
});

afterAll(async () => {
  if (savedSynsets !== undefined) process.env.GOOGLENET_EVAL_SYNSETS = savedSynsets;
  if (savedEdits !== undefined) process.env.GOOGLENET_EVAL_GRAPH_EDITS = savedEdits;
  if (savedProbeCache !== undefined) process.env.GOOGLENET_EVAL_PROBE_CACHE = savedProbeCache;
  await rm(work, { recursive: true, force: true });
});

async function score(name: string, flags: string[], env: Record<string, string>): Promise<{ code: number | string; stderr: string }> {
  const args = ["score", photos, "--model", MODEL, "--engine", "onnxruntime", "--crops", "1", "--threads", "2", "--out", join(work, name), ...flags];
  const cli = spawnCli(args, env);
  const code = await cli.exited;
  return { code, stderr: cli.stderr.join("") };
}

const PROBED = /^googlenet-eval: onnxruntime graph edits for .*bvlc-googlenet\.onnx: on: LRN rewrite \(2 LRNs\).*; probe: 13 dead-leaves crops: .*\(within 1e-5\)$/m;

describe("googlenet-eval score and onnxruntime's graph edits", () => {
  it("runs them by default, checked by the probe, one line naming them; the pass is remembered in the cache folder, unless the cache is off", async () => {
    // Prepare: a cache folder of this test's own, empty.
    const cache = { GOOGLENET_EVAL_CACHE_DIR: join(work, "cache") };

    // Act
    const first = await score("default", [], cache);
    const off = await score("cache-off", [], { ...cache, GOOGLENET_EVAL_PROBE_CACHE: "off" });
    const again = await score("again", [], cache);

    // Assess
    for (const run of [first, off, again]) expect(run.code, run.stderr).toBe(0);
    expect(first.stderr).toMatch(PROBED);
    expect(off.stderr).toMatch(PROBED);
    expect(again.stderr).toMatch(
      new RegExp(`^googlenet-eval: onnxruntime graph edits for .*bvlc-googlenet\\.onnx: on: LRN rewrite \\(2 LRNs\\).*; probe: passed earlier for this model and onnxruntime \\S+ \\(cache file ${join(work, "cache", "onnxruntime-probe")}/\\w+\\.json\\): 13 dead-leaves crops: .*\\(within 1e-5\\)$`, "m"),
    );
  });

  it.each([
    ["--no-graph-edits", ["--no-graph-edits"], {}],
    ["GOOGLENET_EVAL_GRAPH_EDITS=off", [], { GOOGLENET_EVAL_GRAPH_EDITS: "off" }],
  ])("turns them off with %s: the file runs as stored", async (name, flags, env) => {
    // Act
    const run = await score(name.replace(/\W+/g, "-"), flags, env);
    // Assess
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^googlenet-eval: onnxruntime graph edits for .*bvlc-googlenet\.onnx: off \(turned off by the graphEdits setting: the graph runs as stored\)$/m);
    expect(run.stderr).not.toMatch(/: on: LRN rewrite/);
  });

  it.each(["GOOGLENET_EVAL_GRAPH_EDITS", "GOOGLENET_EVAL_PROBE_CACHE"])("refuses a bad %s with exit 2, naming it, before loading anything", async (variable) => {
    const run = await score("bad", [], { [variable]: "perhaps" });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`${variable} must be on or off`));
    expect(run.stderr).not.toMatch(/graph edits for/);
  });
});

import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { createOrtEngine } from "../../model/ort/engine.js";
import { openProbeCache, probeCacheFolder, probeKey, type ProbeHost, type ProbeKey } from "../../model/ort/graph-edits/probe-cache.js";
import type { ModelProto } from "../../model/ort/graph-edits/proto-graph.js";
import { preprocessFor } from "../../model/preprocess.js";
import { MODELS, SAMPLES, realCrops } from "../helpers/real-crops.js";

/**
 * The record of passed graph-edit probes (model/ort/graph-edits/probe-cache.ts): where it lives,
 * what its key holds, and what the engine does with it on the real BVLC GoogLeNet.
 */
const BVLC = `${MODELS}/bvlc-googlenet.onnx`;
const HOST: ProbeHost = { onnxruntime: "1.30.0", platform: "linux", arch: "x64", cpu: "Some CPU @ 2.00GHz" };

let folder: string;
beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), "probe-cache-"));
});
afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

describe("probeCacheFolder", () => {
  it.each([
    ["nothing set: ~/.cache/googlenet-eval", {}, join(homedir(), ".cache", "googlenet-eval")],
    ["XDG_CACHE_HOME", { XDG_CACHE_HOME: "/var/cache/me" }, "/var/cache/me/googlenet-eval"],
    ["a relative XDG_CACHE_HOME is ignored (XDG spec)", { XDG_CACHE_HOME: "cache" }, join(homedir(), ".cache", "googlenet-eval")],
    ["GOOGLENET_EVAL_CACHE_DIR over XDG_CACHE_HOME", { GOOGLENET_EVAL_CACHE_DIR: "/srv/ge", XDG_CACHE_HOME: "/var/cache/me" }, "/srv/ge"],
    ["an empty GOOGLENET_EVAL_CACHE_DIR counts as unset", { GOOGLENET_EVAL_CACHE_DIR: " ", XDG_CACHE_HOME: "/var/cache/me" }, "/var/cache/me/googlenet-eval"],
    ["GOOGLENET_EVAL_PROBE_CACHE=on", { GOOGLENET_EVAL_PROBE_CACHE: "on", GOOGLENET_EVAL_CACHE_DIR: "/srv/ge" }, "/srv/ge"],
    ["GOOGLENET_EVAL_PROBE_CACHE=OFF: no cache", { GOOGLENET_EVAL_PROBE_CACHE: "OFF", GOOGLENET_EVAL_CACHE_DIR: "/srv/ge" }, undefined],
  ])("%s", (_, env, expected) => {
    expect(probeCacheFolder(env)).toBe(expected);
  });

  it("refuses another GOOGLENET_EVAL_PROBE_CACHE, naming it and the choices", () => {
    expect(() => probeCacheFolder({ GOOGLENET_EVAL_PROBE_CACHE: "sometimes" })).toThrow(ConfigurationError);
    expect(() => probeCacheFolder({ GOOGLENET_EVAL_PROBE_CACHE: "sometimes" })).toThrow(/^GOOGLENET_EVAL_PROBE_CACHE must be on or off, got "sometimes"$/);
  });
});

describe("openProbeCache", () => {
  const model = new Uint8Array([1, 2, 3]);
  const edited = "a".repeat(64);
  const session = { intraOpNumThreads: 2, graphOptimizationLevel: "all" } as const;
  const edits = { lrnRewrite: true, blockedLrnSteps: true };
  const key = probeKey(model, edited, session, edits, HOST);

  it("finds a recorded pass under the same key, with the probe's words and the file", async () => {
    // Prepare
    const lines: string[] = [];
    const cache = openProbeCache(join(folder, "same"), (line) => lines.push(line));
    await cache.record(key, "13 dead-leaves crops: largest relative difference 2.1e-6");

    // Act
    const found = await openProbeCache(join(folder, "same"), (line) => lines.push(line)).find(probeKey(model, edited, session, edits, HOST));

    // Assess
    expect(found?.result).toBe("13 dead-leaves crops: largest relative difference 2.1e-6");
    expect(found?.file).toMatch(new RegExp(`^${join(folder, "same", "onnxruntime-probe")}/[0-9a-f]{32}\\.json$`));
    expect(JSON.parse(await readFile(found?.file as string, "utf8")).key).toEqual(key);
    expect(lines).toEqual([]);
  });

  describe.each<[string, ProbeKey]>([
    ["another model file", probeKey(new Uint8Array([1, 2, 4]), edited, session, edits, HOST)],
    ["another onnxruntime", probeKey(model, edited, session, edits, { ...HOST, onnxruntime: "1.31.0" })],
    ["another edited graph (edit code changed, or another blocked layout)", probeKey(model, "b".repeat(64), session, edits, HOST)],
    ["another CPU", probeKey(model, edited, session, edits, { ...HOST, cpu: "Other CPU" })],
    ["another architecture", probeKey(model, edited, session, edits, { ...HOST, arch: "arm64" })],
    ["other session options", probeKey(model, edited, { ...session, intraOpNumThreads: 1 }, edits, HOST)],
    ["other edit options", probeKey(model, edited, session, { ...edits, blockedLrnSteps: false }, HOST)],
    ["a record of an older probe", { ...key, version: key.version - 1 }],
  ])("a key with %s", (_, other) => {
    it("misses a pass recorded under the first key, without a line", async () => {
      // Prepare
      const lines: string[] = [];
      const cache = openProbeCache(join(folder, "variants"), (line) => lines.push(line));
      await cache.record(key, "passed");

      // Act
      const found = await cache.find(other);

      // Assess
      expect(found).toBeUndefined();
      expect(await cache.find(key)).toBeDefined();
      expect(lines).toEqual([]);
    });
  });

  it.each([
    ["half a file", (text: string) => text.slice(0, text.length / 2), /ignored \(not JSON: /],
    ["another kind of JSON", () => "[1, 2, 3]\n", /ignored \(not a probe record\)/],
    ["another key inside", (text: string) => text.replace(/"onnxruntime": "[^"]*"/, '"onnxruntime": "0.0.1"'), /ignored \(its key is not this load's\)/],
  ])("ignores a record file holding %s, with one line naming it, and records over it", async (_, damage, why) => {
    // Prepare
    const lines: string[] = [];
    const cache = openProbeCache(join(folder, "damaged"), (line) => lines.push(line));
    await cache.record(key, "passed");
    const file = (await cache.find(key))?.file as string;
    await writeFile(file, damage(await readFile(file, "utf8")));

    // Act
    const found = await cache.find(key);
    await cache.record(key, "passed again");

    // Assess
    expect(found).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^googlenet-eval: probe cache file ${file} ignored \\(`));
    expect(lines[0]).toMatch(why);
    expect(lines[0]).toMatch(/; probing$/);
    expect((await cache.find(key))?.result).toBe("passed again");
  });

  it("never fails on a folder it cannot write: one line per folder, then nothing", async () => {
    // Prepare: a regular file where the folder would be (root writes anywhere chmod allows).
    const blocker = join(folder, "a-file");
    await writeFile(blocker, "not a folder");
    const lines: string[] = [];
    const cache = openProbeCache(join(blocker, "cache"), (line) => lines.push(line));

    // Act
    await cache.record(key, "passed");
    await cache.record(probeKey(model, "c".repeat(64), session, edits, HOST), "passed");
    const found = await cache.find(key);

    // Assess
    expect(found).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^googlenet-eval: probe cache ${join(blocker, "cache")} cannot be written \\(.*ENOTDIR.*\\); each load probes the graph edits$`));
  });
});

describe("createOrtEngine with a probe cache, BVLC GoogLeNet", () => {
  let bytes: Buffer;
  let crops: Float32Array;
  let cacheFolder: string;
  const create = vi.spyOn(ort.InferenceSession, "create");
  const PHOTOS = [`${SAMPLES}/n01440764_tench.JPEG`, `${SAMPLES}/n01518878_ostrich.JPEG`];

  beforeAll(async () => {
    bytes = await readFile(BVLC);
    crops = (await realCrops(PHOTOS, preprocessFor("bvlc"))).nchw;
    cacheFolder = join(folder, "engine");
  });
  afterEach(() => create.mockClear());
  afterAll(() => create.mockRestore());

  /** A load with its lines, its time, whether onnxruntime was handed the file as stored (only the probe does that), and its scores. */
  async function load(options: { editedGraphHook?: (model: ModelProto) => void } = {}) {
    const lines: string[] = [];
    const started = performance.now();
    const engine = await createOrtEngine(bytes, { source: BVLC, flavour: "bvlc", threads: 2, probeCache: cacheFolder, log: (line) => lines.push(line), ...options });
    const seconds = (performance.now() - started) / 1000;
    const storedLoaded = create.mock.calls.some((call) => call[0] === bytes);
    create.mockClear();
    const scores = await engine.classify(crops, PHOTOS.length);
    await engine.dispose();
    return { lines, seconds, storedLoaded, scores };
  }

  const records = async () => (await readdir(join(cacheFolder, "onnxruntime-probe")).catch(() => [])).filter((name) => name.endsWith(".json"));

  it("probes the first load and records the pass; the next load skips the probe, says so, and scores bit for bit the same", async () => {
    // Act
    const first = await load();
    const recorded = await records();
    const second = await load();

    // Assess
    console.log(`load with the probe ${first.seconds.toFixed(2)} s, with the recorded pass ${second.seconds.toFixed(2)} s`);
    expect(first.lines).toHaveLength(1);
    expect(first.lines[0]).toMatch(/; probe: 13 dead-leaves crops: largest relative difference \S+ from the graph as stored \(within 1e-5\)$/);
    expect(first.storedLoaded).toBe(true);
    expect(recorded).toHaveLength(1);
    const file = join(cacheFolder, "onnxruntime-probe", recorded[0] as string);
    expect(second.lines).toHaveLength(1);
    expect(second.lines[0]).toContain(`: on: LRN rewrite (2 LRNs)`);
    expect(second.lines[0]).toContain(`; probe: passed earlier for this model and onnxruntime ${ort.env.versions.node} (cache file ${file}): `);
    expect(second.lines[0]).toMatch(/\(cache file \S+\): 13 dead-leaves crops: largest relative difference \S+ from the graph as stored \(within 1e-5\)$/);
    expect(second.storedLoaded).toBe(false);
    expect(Buffer.from(second.scores.buffer).equals(Buffer.from(first.scores.buffer))).toBe(true);
  });

  it("does not let the recorded pass vouch for another edited graph: the probe runs, catches it, and records nothing", async () => {
    // Prepare: the pass of the test above is recorded; this load's edited graph has one weight doubled.
    const before = await records();
    const doubled = (model: ModelProto) => {
      const tensor = model.graph?.initializer?.find((candidate) => /^pool1_norm1.*\/block_rows\/filter$/.test(candidate.name ?? ""));
      const raw = tensor?.rawData;
      if (!raw) throw new Error("no block-row filter in the edited graph");
      const filter = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
      const first = filter.findIndex((value) => value !== 0);
      filter[first] = (filter[first] as number) * 2;
    };

    // Act
    const corrupted = await load({ editedGraphHook: doubled });

    // Assess
    expect(before).toHaveLength(1);
    if (process.arch !== "x64") return;
    expect(corrupted.storedLoaded).toBe(true);
    expect(corrupted.lines).toHaveLength(1);
    expect(corrupted.lines[0]).toMatch(/; off: blocked LRN steps, block-row window sums, stem in parts \(13 dead-leaves crops: .*\(over 1e-5\) with them\); probe: LRN rewrite alone: /);
    expect(await records()).toEqual(before);
  });

  it("ignores a damaged record of this very load with a line, probes, and records the pass again", async () => {
    // Prepare
    const [name] = await records();
    const file = join(cacheFolder, "onnxruntime-probe", name as string);
    await writeFile(file, "{ \"kind\": ");

    // Act
    const run = await load();

    // Assess
    expect(run.storedLoaded).toBe(true);
    expect(run.lines).toHaveLength(2);
    expect(run.lines[0]).toMatch(new RegExp(`^googlenet-eval: probe cache file ${file} ignored \\(not JSON: .*\\); probing$`));
    expect(run.lines[1]).toMatch(/; probe: 13 dead-leaves crops: /);
    expect(JSON.parse(await readFile(file, "utf8")).result).toMatch(/^13 dead-leaves crops: /);
  });
});

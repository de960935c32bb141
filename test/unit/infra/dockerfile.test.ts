import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { IMAGE_TARGETS } from "../../../infra/googlenet-eval-stack.js";
import { projectRoot } from "../../../infra/project-root.js";
import { HEALTH_CHECK_COMMAND, HEALTH_FILE } from "../../../infra/worker-task.js";

/**
 * The worker image cannot be built here (no Docker), so its Dockerfile is held to what a build
 * relies on, as text: the targets the stack names, pinned inputs, checked downloads, a
 * non-root user, and the health check the task definition runs.
 */
const root = projectRoot();
const text = readFileSync(join(root, "Dockerfile"), "utf8");

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Instructions with continuation lines joined and comments dropped; heredoc bodies kept raw. */
function instructions(source: string): Instruction[] {
  const lines = source.split("\n");
  const found: Instruction[] = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i] ?? "";
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const heredoc = /<<'?(\w+)'?/.exec(line);
    if (heredoc) {
      const end = lines.indexOf(heredoc[1] ?? "", i + 1);
      line = lines.slice(i, end + 1).join("\n");
      i = end;
    } else {
      while (line.endsWith("\\") && i + 1 < lines.length) {
        i++;
        const next = lines[i] ?? "";
        if (next.trimStart().startsWith("#")) continue;
        line = `${line.slice(0, -1)} ${next.trim()}`;
      }
    }
    const [keyword = "", ...rest] = line.trim().split(/\s+/);
    found.push({ keyword: keyword.toUpperCase(), args: rest.join(" ") });
  }
  return found;
}

const all = instructions(text);
/** Stage name -> its instructions. */
const stages = new Map<string, Instruction[]>();
let current: Instruction[] = [];
for (const instruction of all) {
  if (instruction.keyword === "FROM") {
    current = [instruction];
    stages.set(/ AS (\S+)$/i.exec(instruction.args)?.[1] ?? "", current);
  } else current.push(instruction);
}
/** ARG defaults anywhere in the file. */
const argDefaults = new Map(all.filter((i) => i.keyword === "ARG" && i.args.includes("=")).map((i) => [i.args.split("=")[0] ?? "", i.args.slice(i.args.indexOf("=") + 1)]));

describe("the Dockerfile", () => {
  it("has a target for every image the stack builds, the default GPU engine last", () => {
    for (const target of Object.values(IMAGE_TARGETS)) expect([...stages.keys()]).toContain(target);
    expect([...stages.keys()].at(-1)).toBe(IMAGE_TARGETS.tfjs);
  });

  it("starts from one Ubuntu LTS base pinned by digest; every other FROM is a stage of this file", () => {
    const base = argDefaults.get("BASE_IMAGE") ?? "";
    expect(base).toMatch(/^ubuntu:24\.04@sha256:[0-9a-f]{64}$/);
    for (const from of all.filter((i) => i.keyword === "FROM")) {
      const image = from.args.split(/\s+/)[0] ?? "";
      expect(image === "${BASE_IMAGE}" || stages.has(image), from.args).toBe(true);
    }
    expect(text).not.toMatch(/nvidia\/cuda:/);
  });

  it("checks every download against a sha256 given as a build argument, and refuses an empty one", () => {
    const fetches = [...text.matchAll(/fetch-verified\s+"?(\S+?)"?\s+"?\$\{?(\w+)\}?"?\s/g)];
    expect(fetches.length).toBeGreaterThanOrEqual(3);
    const loops = [...text.matchAll(/"\$\w+\/\S+\.tar\.xz \$(\w+)"/g)].map((m) => m[1] ?? "");
    expect(loops.length).toBe(12);
    // Inside the loops the call is `fetch-verified "$1" "$2" ...`, whose sums are the loop entries'.
    for (const name of [...fetches.map((m) => m[2] ?? ""), ...loops].filter((n) => !/^\d$/.test(n))) {
      expect(argDefaults.get(name) ?? "", name).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(text).toContain('if [ -z "$sum" ]; then');
    expect(text).toMatch(/sha256sum -c -/);
    // curl appears only inside fetch-verified (and its install).
    const curls = all.filter((i) => /\bcurl\s+-/.test(i.args));
    expect(curls.map((i) => i.keyword)).toEqual(["COPY"]);
  });

  it("builds tfjs-node-gpu's binding from source against the checked libtensorflow, never a prebuilt download", () => {
    const tfjs = (stages.get("deps-gpu-tfjs") ?? []).map((i) => i.args).join("\n");
    expect(tfjs).toContain("libtensorflow-gpu-linux-x86_64-2.9.1.tar.gz");
    expect(tfjs).toContain("npm_config_build_from_source=true");
    expect(tfjs.indexOf("fetch-verified")).toBeLessThan(tfjs.indexOf("npm rebuild @tensorflow/tfjs-node-gpu"));
  });

  it("adds onnxruntime's CUDA provider of the same version as package-lock.json's onnxruntime-node", () => {
    const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, { version?: string }> };
    expect(argDefaults.get("ORT_VERSION")).toBe(lock.packages["node_modules/onnxruntime-node"]?.version);
    expect((stages.get(IMAGE_TARGETS.onnxruntime) ?? []).map((i) => i.args).join("\n")).toContain("node_modules/onnxruntime-node/bin/napi-v6/linux/x64/");
  });

  it("keeps CUDA and tfjs-node-gpu out of the CPU image, and the driver's compute library in the GPU images", () => {
    const cpu = (stages.get(IMAGE_TARGETS.cpu) ?? []).map((i) => i.args).join("\n");
    expect(cpu).not.toMatch(/cuda|deps-gpu-tfjs/);
    expect((stages.get("deps-cpu") ?? []).map((i) => i.args).join("\n")).toContain("rm -rf node_modules/@tensorflow/tfjs-node node_modules/@tensorflow/tfjs-node-gpu");
    for (const gpu of [IMAGE_TARGETS.tfjs, IMAGE_TARGETS.onnxruntime]) {
      expect((stages.get(gpu) ?? []).map((i) => i.args).join("\n"), gpu).toContain("NVIDIA_DRIVER_CAPABILITIES=compute,utility");
    }
  });

  it("runs every target as a non-root user with a writable HOME and CUDA kernel cache", () => {
    for (const target of Object.values(IMAGE_TARGETS)) {
      const users = (stages.get(target) ?? []).filter((i) => i.keyword === "USER");
      expect(users.at(-1)?.args, target).toBe("10001:10001");
    }
    const runtime = (stages.get("runtime") ?? []).map((i) => i.args).join("\n");
    expect(runtime).toMatch(/HOME=\/home\/worker/);
    expect(runtime).toMatch(/--home-dir \/home\/worker --create-home/);
    expect(runtime).toMatch(/CUDA_CACHE_PATH=\/tmp\/cuda-cache/);
  });

  it("has the task definition's health check and health file", () => {
    const healthcheck = all.find((i) => i.keyword === "HEALTHCHECK")?.args ?? "";
    expect(healthcheck).toContain(`CMD ${JSON.stringify(HEALTH_CHECK_COMMAND).replace(/,/g, ", ")}`);
    expect(healthcheck).toMatch(/--interval=30s --timeout=10s --start-period=300s --retries=3/);
    expect(text).toContain(`HEALTH_FILE=${HEALTH_FILE}`);
  });
});

describe(".dockerignore", () => {
  const ignore = readFileSync(join(root, ".dockerignore"), "utf8").split("\n").map((l) => l.trim());

  it("keeps .npmrc in the context (onnxruntime-node-install=skip) and node_modules and tests out", () => {
    expect(ignore).not.toContain(".npmrc");
    expect(ignore).toContain("**/node_modules");
    expect(ignore).toContain("test");
  });
});

describe("the image's files", () => {
  it("ships the built-in ImageNet class list beside dist/, and the build context keeps it", () => {
    // Prepare
    const ignored = readFileSync(join(root, ".dockerignore"), "utf8").split("\n").map((line) => line.trim());

    // Assess: model/synsets.ts looks for data/synset_words.txt next to dist/.
    expect(instructions(text).some(({ keyword, args }) => keyword === "COPY" && /\/src\/data \.\/data$/.test(args))).toBe(true);
    expect(ignored).not.toContain("data");
    expect(ignored).not.toContain("data/");
  });
});

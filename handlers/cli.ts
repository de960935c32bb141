#!/usr/bin/env node
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ConfigurationError, GoogLeNetEvalError } from "../model/errors.js";
import { codeVersion } from "../queue/manifest.js";
import { flagHint, type FlagHint } from "./flags.js";

/** A subcommand: takes the arguments after its name, returns the process exit code. */
export type Command = (argv: string[]) => Promise<number>;

/** A subcommand's line in the usage, its entry point, and the flags of settings its errors name. */
export interface CommandEntry {
  readonly summary: string;
  readonly run: Command;
  readonly hints?: readonly FlagHint[];
}

const PREPROCESS: FlagHint = { setting: /\bpreprocess\b/, flag: "--preprocess bvlc|torchvision" };
const OUT: FlagHint = { setting: /\boutput (folder|prefix)\b/, flag: "--out" };
const LABEL_CHECK: FlagHint = { setting: /\blabel check off\b/, flag: "--no-label-check" };

/**
 * The subcommands. Adding one is one line here plus its own file; each prints its own --help.
 * Each command's module is imported when it runs: together they pull in onnxruntime, sharp, the
 * AWS SDK and vega, about 1.5 s of CPU that `--version`, usage and a worker need not pay.
 */
export const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  crops: { summary: "print the 144-crop plan for an image size", run: async (argv) => (await import("./crops-command.js")).cropsCommand(argv) },
  score: {
    summary: "score a folder of images with one model or an ensemble",
    run: async (argv) => (await import("./score-command.js")).scoreCommand(argv),
    hints: [PREPROCESS, OUT, LABEL_CHECK, { setting: /\bname one backend\b/, flag: "--backend" }, { setting: /\bonnxruntime engine\b/, flag: "--engine onnxruntime" }],
  },
  plan: {
    summary: "plan a distributed run: manifest and one queue message per batch",
    run: async (argv) => (await import("./plan-command.js")).planCommand(argv),
    hints: [
      PREPROCESS,
      OUT,
      LABEL_CHECK,
      { setting: /\breplac(e|ing)\b/, flag: "--replace" },
      { setting: /\bonnxruntime engine\b/, flag: "--engine onnxruntime" },
      { setting: /\bimages per batch\b/, flag: "--images-per-batch" },
      { setting: /\bfewer crops\b/, flag: "--crops" },
      { setting: /\blonger deadline\b/, flag: "--deadline" },
    ],
  },
  worker: { summary: "score batches and drop-folder images from an SQS queue", run: async (argv) => (await import("./worker-command.js")).workerCommand(argv) },
  aggregate: {
    summary: "collect a planned run's batches into results.jsonl and summary.json",
    run: async (argv) => (await import("./aggregate-command.js")).aggregateCommand(argv),
  },
  report: { summary: "(re)write report.html for a finished run folder or S3 prefix", run: async (argv) => (await import("./report-command.js")).reportCommand(argv) },
};

/** Exit code for bad flags or settings, as for a shell built-in's usage error. */
export const EXIT_USAGE = 2;

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  const lines = Object.entries(COMMANDS).map(([name, { summary }]) => `  ${name.padEnd(width)}  ${summary}`);
  return [
    "usage: googlenet-eval <command> [options]",
    "       googlenet-eval --version",
    "",
    "commands:",
    ...lines,
    "",
    "Run `googlenet-eval <command> --help` for a command's options.",
  ].join("\n");
}

/** The message as one line that ends with a newline, with the flags of the settings it names. */
function errorLine(message: string, hints: readonly FlagHint[]): string {
  return `${message.trimEnd()}${flagHint(message, hints)}\n`;
}

/** Runs the CLI on `argv` (without node and script) and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(`googlenet-eval: no command given\n\n${usage()}\n`);
    return EXIT_USAGE;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (name === "--version" || name === "-v" || name === "version") {
    process.stdout.write(`googlenet-eval ${codeVersion()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`unknown command "${name}"; use one of: ${Object.keys(COMMANDS).join(", ")}\n\n${usage()}\n`);
    return EXIT_USAGE;
  }
  const hints = command.hints ?? [];
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof ConfigurationError) {
      process.stderr.write(`googlenet-eval ${name}: ${errorLine(error.message, hints)}`);
      return EXIT_USAGE;
    }
    if (error instanceof GoogLeNetEvalError) {
      process.stderr.write(`googlenet-eval ${name}: ${error.name}: ${errorLine(error.message, hints)}`);
      return 1;
    }
    throw error;
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    // The npm bin is a symlink to this file, so compare real paths.
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`googlenet-eval: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}

import { parseArgs, type ParseArgsConfig } from "node:util";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { ENGINE_CHOICES } from "../model/load.js";

/**
 * node:util parseArgs for a subcommand, its errors (unknown flag, missing value) turned into the
 * ConfigurationError every command reports with exit code 2 and a pointer to its --help.
 */
export function parseFlags<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    // parseArgs explains some errors over several lines; a usage error is one line.
    const message = (error as Error).message.replace(/\s*\n\s*/g, " ");
    throw new ConfigurationError(`${message}; see googlenet-eval ${command} --help`, { cause: error });
  }
}

/** The release that drops the old spellings. */
export const OLD_SPELLINGS_UNTIL = "0.2.0";

/** The one-line warning for an old spelling, as the commands print it on stderr. */
export function deprecationLine(command: string, old: string, now: string): string {
  return `googlenet-eval ${command}: ${old} is deprecated and goes in ${OLD_SPELLINGS_UNTIL}; use ${now}\n`;
}

/** Where deprecation lines go. Default: process.stderr. */
export type Warn = (line: string) => void;
const toStderr: Warn = (line) => process.stderr.write(line);

/**
 * Folds old flag spellings into the new ones: `renames` maps an old option name to its new name
 * (both without dashes). An old one given alone counts as the new one, with one warning line;
 * both given is a usage error, since they are one setting.
 */
export function takeOldSpellings<V extends Record<string, unknown>>(
  command: string,
  values: V,
  renames: Readonly<Record<string, string>>,
  warn: Warn = toStderr,
): V {
  const merged: Record<string, unknown> = { ...values };
  for (const [old, now] of Object.entries(renames)) {
    if (merged[old] === undefined) continue;
    if (merged[now] !== undefined) {
      throw new ConfigurationError(`--${old} and --${now} are the same setting; give only --${now}`);
    }
    warn(deprecationLine(command, `--${old}`, `--${now}`));
    merged[now] = merged[old];
    delete merged[old];
  }
  return merged as V;
}

/** A flag that takes one of `choices`; the message lists them. */
export const choiceFlag = <T extends string>(flag: string, choices: readonly T[]) =>
  z.string().refine((value): value is T => (choices as readonly string[]).includes(value), {
    message: `${flag} must be one of: ${choices.join(", ")}`,
  });

/**
 * A flag that takes a whole number from `min` to `max` (no upper bound when `max` is omitted);
 * the message names the flag and the range.
 */
export const wholeNumberFlag = (flag: string, min: number, max: number = Number.MAX_SAFE_INTEGER, unit = "") => {
  const range =
    max === Number.MAX_SAFE_INTEGER
      ? min === 1
        ? `a positive integer${unit}`
        : `a whole number${unit}, ${min} or more`
      : `a whole number${unit} from ${min} to ${max}`;
  const message = `${flag} must be ${range}`;
  return z
    .string()
    .regex(/^\d+$/, message)
    .transform(Number)
    .refine((value) => Number.isSafeInteger(value) && value >= min && value <= max, message);
};

/** An optional flag that takes a positive integer. */
export const positiveIntFlag = (flag: string) => wholeNumberFlag(flag, 1).optional();

/** `--engine tfjs|onnxruntime|auto`, default auto. */
export const engineFlag = (flag = "--engine") => choiceFlag(flag, ENGINE_CHOICES).default("auto");

/**
 * Why a tfjs backend may not go with engine auto, in the command's own flag names; undefined when
 * the pair is fine. The command refuses it before anything loads: auto may pick onnxruntime, and
 * a user writing `--backend cpu` may mean onnxruntime on the CPU rather than tfjs's slowest
 * backend (model/load.ts refuses the pair too, in words without flags).
 */
export function backendWithoutTfjs(
  engine: string,
  backend: string | undefined,
  flags: { readonly engine: string; readonly backend: string } = { engine: "--engine", backend: "--backend" },
): string | undefined {
  if (engine !== "auto" || backend === undefined || backend === "auto") return undefined;
  return (
    `${flags.backend} ${backend} is a tfjs backend, but ${flags.engine} auto (the default) picks the engine itself and may pick onnxruntime; ` +
    `give ${flags.engine} tfjs with it, or leave out ${flags.backend}`
  );
}

/** Every zod issue of a failed parse, as one usage error. */
export function usageError(error: z.ZodError): ConfigurationError {
  return new ConfigurationError(error.issues.map((issue) => issue.message).join("; "));
}

/**
 * A setting as the layers below name it in their messages (they know no flags, STYLE.md), and
 * the flag that sets it on this command.
 */
export interface FlagHint {
  readonly setting: RegExp;
  readonly flag: string;
}

/** The flags of the settings an error message names, as a suffix for the message; "" for none. */
export function flagHint(message: string, hints: readonly FlagHint[]): string {
  const flags = hints.filter((hint) => hint.setting.test(message) && !message.includes(hint.flag.split(" ")[0] as string)).map((hint) => hint.flag);
  return flags.length === 0 ? "" : ` (on the command line: ${[...new Set(flags)].join(", ")})`;
}

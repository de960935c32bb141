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
    throw new ConfigurationError(`${(error as Error).message}; see googlenet-eval ${command} --help`, { cause: error });
  }
}

/** A flag that takes one of `choices`; the message lists them. */
export const choiceFlag = <T extends string>(flag: string, choices: readonly T[]) =>
  z.string().refine((value): value is T => (choices as readonly string[]).includes(value), {
    message: `${flag} must be one of: ${choices.join(", ")}`,
  });

/** An optional flag that takes a positive integer. */
export const positiveIntFlag = (flag: string) =>
  z
    .string()
    .regex(/^[1-9]\d*$/, `${flag} must be a positive integer`)
    .transform(Number)
    .optional();

/** `--engine tfjs|onnxruntime|auto`, default auto. */
export const engineFlag = (flag = "--engine") => choiceFlag(flag, ENGINE_CHOICES).default("auto");

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

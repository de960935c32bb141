import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigurationError } from "../model/errors.js";

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

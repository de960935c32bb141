import type { S3Client } from "@aws-sdk/client-s3";
import { stat } from "node:fs/promises";
import { ConfigurationError } from "../model/errors.js";
import { builtInSynsetsPath, parseSynsets, type Synsets } from "../model/synsets.js";
import { isS3Url, parseS3Url } from "../storage/location.js";
import { openLocation, readUrl } from "../storage/open-location.js";

/** Environment variable naming a synset_words.txt when --synsets is not given. */
export const SYNSETS_ENV = "GOOGLENET_EVAL_SYNSETS";

/** Where a command's class names come from. */
export interface SynsetsSource {
  /** A path or s3:// URL of a synset_words.txt. */
  readonly url: string;
  /** Who named it: the flag, the environment variable, or nobody (the list shipped with the package). */
  readonly from: "flag" | "env" | "built-in";
}

/**
 * --synsets, else $GOOGLENET_EVAL_SYNSETS, else the 1000 ImageNet classes shipped with the
 * package: the flag and the variable are overrides for other label sets.
 */
export function synsetsSource(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): SynsetsSource {
  if (flag !== undefined) {
    if (flag.trim() === "") throw new ConfigurationError("--synsets must name a file (a path or s3:// URL)");
    return { url: flag, from: "flag" };
  }
  const fromEnv = env[SYNSETS_ENV]?.trim();
  if (fromEnv) return { url: fromEnv, from: "env" };
  return { url: builtInSynsetsPath(), from: "built-in" };
}

/** The source as a log line says it. */
export function describeSynsets(source: SynsetsSource): string {
  return source.from === "built-in" ? `the 1000 ImageNet classes (built in: ${source.url})` : source.url;
}

/** Whether a path or s3:// URL names an existing file (object). */
async function fileExists(url: string): Promise<boolean> {
  if (isS3Url(url)) {
    const { bucket, key } = parseS3Url(url);
    return key !== "" && (await openLocation(`s3://${bucket}`).exists(key));
  }
  try {
    return (await stat(url)).isFile();
  } catch {
    return false;
  }
}

/**
 * Refuses an override that names nothing, naming where it came from, before anything is read
 * or written.
 */
export async function checkSynsetsSource(source: SynsetsSource): Promise<void> {
  if (source.from === "built-in" || (await fileExists(source.url))) return;
  const where = source.from === "env" ? `${SYNSETS_ENV}=${source.url}` : `--synsets ${source.url}`;
  throw new ConfigurationError(`${where}: no such file (leave it out for the built-in ImageNet classes)`);
}

/** Class names from a synset_words.txt given as a path or s3:// URL. */
export async function readSynsetsUrl(url: string, s3?: S3Client): Promise<Synsets> {
  return parseSynsets((await readUrl(url, s3)).toString("utf8"), url);
}

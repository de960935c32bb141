import { readFile } from "node:fs/promises";
import type { S3Client } from "@aws-sdk/client-s3";
import { MissingObjectError, StorageError } from "./errors.js";
import { LocalLocation, isS3Url, parseS3Url, type Location } from "./location.js";
import { defaultS3Client } from "./aws-clients.js";
import { S3Location } from "./s3-location.js";

/*
 * Opening what a user named, local or S3: the one place that knows both kinds of Location, so
 * neither of them imports the other.
 */

/**
 * The Location a user named: `s3://bucket/prefix` (through `clients.s3`, default the client
 * built from the environment) or a local folder path.
 */
export function openLocation(url: string, clients: { s3?: S3Client } = {}): Location {
  return isS3Url(url) ? new S3Location(url, clients.s3) : new LocalLocation(url);
}

/**
 * Reads one file named by a local path or an s3:// URL (a model, a label file, synset_words.txt).
 */
export async function readUrl(url: string, client?: S3Client): Promise<Buffer> {
  if (isS3Url(url)) {
    const { bucket, key } = parseS3Url(url);
    if (key === "" || key.endsWith("/")) {
      throw new StorageError(`"${url}" names a prefix, not a file; give s3://bucket/path/to/file`);
    }
    const bytes = await new S3Location(`s3://${bucket}`, client ?? defaultS3Client()).readIfExists(key);
    if (bytes === undefined) throw new MissingObjectError(`cannot read ${url}: no such key`);
    return bytes;
  }
  try {
    return await readFile(url);
  } catch (error) {
    throw new StorageError(`cannot read ${url}: ${(error as Error).message}`, { cause: error });
  }
}

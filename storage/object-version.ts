import { stat } from "node:fs/promises";
import { HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { StorageError } from "./errors.js";
import { defaultS3Client } from "./aws-clients.js";
import { isS3Url, parseS3Url } from "./location.js";

/**
 * What identifies the stored bytes of one file (path or s3:// URL) without reading them: S3's
 * ETag, size and modification time from a HEAD, a local file's size, modification time and
 * inode. Two different answers mean the file was replaced; undefined means there is no such
 * file now (a 404 or ENOENT; what that means is for the reader of the file to say). A HEAD is
 * one small request, so a worker can ask before every message whether what it cached is still
 * what is stored, where re-reading a 28 MB model each time would cost more than the work.
 */
export async function objectVersion(url: string, client?: S3Client): Promise<string | undefined> {
  if (isS3Url(url)) {
    const { bucket, key } = parseS3Url(url);
    try {
      const head = await (client ?? defaultS3Client()).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return `${head.ETag ?? ""}:${head.ContentLength ?? ""}:${head.LastModified?.toISOString() ?? ""}`;
    } catch (error) {
      if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
      throw new StorageError(`cannot stat ${url}: ${(error as Error).message}`, { cause: error });
    }
  }
  try {
    const info = await stat(url);
    return `${info.size}:${info.mtimeMs}:${info.ino}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new StorageError(`cannot stat ${url}: ${(error as Error).message}`, { cause: error });
  }
}

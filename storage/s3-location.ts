import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { MissingObjectError, ObjectChangedError, ObjectTooLargeError, StorageError } from "./errors.js";
import { defaultS3Client } from "./aws-clients.js";
import { assertSafeKey, parseS3Url, type Location, type ReadOptions } from "./location.js";

/**
 * Part size for uploads. S3 needs at least 5 MiB per part; staying well under the 11 MiB request
 * limit of the test emulator keeps the same code path valid there and on AWS.
 */
export const UPLOAD_PART_BYTES = 8 * 1024 * 1024;

/** DeleteObjects takes at most 1000 keys per request. */
const DELETE_PAGE_KEYS = 1000;

function errorName(error: unknown): string | undefined {
  return (error as { name?: string } | undefined)?.name;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/**
 * Only S3's NoSuchKey says the object is gone. Any other 404 (NoSuchBucket above all: a bucket
 * deleted after `plan`) is a storage fault, or every image of a run would become an error record.
 */
function isNoSuchKey(error: unknown): boolean {
  return errorName(error) === "NoSuchKey";
}

export interface S3LocationOptions {
  /** Keys per ListObjectsV2 page. Default: the server's (1000 on S3). */
  readonly pageSize?: number;
}

/** A Location over `s3://bucket/prefix`; keys are relative to the prefix and cannot leave it. */
export class S3Location implements Location {
  readonly url: string;
  readonly bucket: string;
  /** The prefix without a trailing slash ("" for the whole bucket). */
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly options: S3LocationOptions;

  constructor(url: string, client: S3Client = defaultS3Client(), options: S3LocationOptions = {}) {
    const { bucket, key } = parseS3Url(url);
    this.bucket = bucket;
    this.prefix = key.replace(/\/+$/, "");
    if (this.prefix !== "") assertSafeKey(this.prefix);
    this.url = this.prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${this.prefix}`;
    this.client = client;
    this.options = options;
  }

  /** The full S3 key of a key relative to this location. */
  objectKey(key: string): string {
    assertSafeKey(key);
    return this.prefix === "" ? key : `${this.prefix}/${key}`;
  }

  async *list(): AsyncIterable<string> {
    const listPrefix = this.prefix === "" ? "" : `${this.prefix}/`;
    const keys: string[] = [];
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: listPrefix,
            ContinuationToken: token,
            MaxKeys: this.options.pageSize,
          }),
        );
      } catch (error) {
        throw new StorageError(`cannot list ${this.url}: ${(error as Error).message}`, { cause: error });
      }
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        // Console-made "folders" are zero-byte keys ending in "/"; they are not objects to score.
        if (key === undefined || key.endsWith("/")) continue;
        keys.push(key.slice(listPrefix.length));
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    // Same order as LocalLocation, whatever order the server pages in.
    keys.sort();
    yield* keys;
  }

  async read(key: string, options: ReadOptions = {}): Promise<Buffer> {
    const bytes = options.maxBytes === undefined ? await this.readIfExists(key) : await this.readCappedIfExists(key, options.maxBytes);
    if (bytes === undefined) {
      throw new MissingObjectError(`cannot read s3://${this.bucket}/${this.objectKey(key)}: no such key`);
    }
    return bytes;
  }

  async readIfExists(key: string): Promise<Buffer | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      if (response.Body === undefined) return Buffer.alloc(0);
      return Buffer.from(await response.Body.transformToByteArray());
    } catch (error) {
      if (isNoSuchKey(error)) return undefined;
      throw new StorageError(`cannot read s3://${this.bucket}/${objectKey}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /**
   * A GET whose Content-Length is checked before the body is read, and whose body is counted
   * while reading (the object can be replaced between the two): never more than `maxBytes` + one
   * chunk in memory.
   */
  private async readCappedIfExists(key: string, maxBytes: number): Promise<Buffer | undefined> {
    const objectKey = this.objectKey(key);
    const url = `s3://${this.bucket}/${objectKey}`;
    let body: AsyncIterable<Uint8Array> & { destroy?: () => void };
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      body = response.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
      if (body === undefined) return Buffer.alloc(0);
      if ((response.ContentLength ?? 0) > maxBytes) {
        body.destroy?.();
        throw new ObjectTooLargeError(`${url}: ${response.ContentLength} bytes, more than the limit of ${maxBytes}`, maxBytes);
      }
      const chunks: Uint8Array[] = [];
      let total = 0;
      for await (const chunk of body) {
        total += chunk.length;
        if (total > maxBytes) {
          body.destroy?.();
          throw new ObjectTooLargeError(`${url}: more than the limit of ${maxBytes} bytes`, maxBytes);
        }
        chunks.push(chunk);
      }
      return Buffer.concat(chunks, total);
    } catch (error) {
      if (error instanceof ObjectTooLargeError) throw error;
      if (isNoSuchKey(error)) return undefined;
      throw new StorageError(`cannot read ${url}: ${(error as Error).message}`, { cause: error });
    }
  }

  async write(key: string, body: string | Uint8Array): Promise<void> {
    const objectKey = this.objectKey(key);
    try {
      // Upload sends one PutObject for a small body and a multipart upload for a large one.
      await new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key: objectKey, Body: typeof body === "string" ? Buffer.from(body) : body },
        partSize: UPLOAD_PART_BYTES,
        queueSize: 2,
        leavePartsOnError: false,
      }).done();
    } catch (error) {
      throw new StorageError(`cannot write s3://${this.bucket}/${objectKey}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async exists(key: string): Promise<boolean> {
    const objectKey = this.objectKey(key);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return true;
    } catch (error) {
      // A HEAD answer has no body, so a missing key and a missing bucket are the same bare 404.
      if (httpStatus(error) === 404 && (await this.bucketExists(objectKey))) return false;
      throw new StorageError(`cannot stat s3://${this.bucket}/${objectKey}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** Whether the bucket answers HeadBucket; a fault other than its absence is a StorageError. */
  private async bucketExists(objectKey: string): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return true;
    } catch (error) {
      if (httpStatus(error) === 404) return false;
      throw new StorageError(`cannot stat bucket ${this.bucket} (for key ${objectKey}): ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async clear(keep: readonly string[] = []): Promise<number> {
    const keys: string[] = [];
    for await (const key of this.list()) if (!keep.includes(key)) keys.push(key);
    for (let start = 0; start < keys.length; start += DELETE_PAGE_KEYS) {
      const page = keys.slice(start, start + DELETE_PAGE_KEYS).map((key) => ({ Key: this.objectKey(key) }));
      let response;
      try {
        response = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: page, Quiet: true } }),
        );
      } catch (error) {
        throw new StorageError(`cannot delete objects under ${this.url}: ${(error as Error).message}`, { cause: error });
      }
      // DeleteObjects answers 200 even when some keys failed; those are listed in Errors.
      const failed = response.Errors ?? [];
      if (failed.length > 0) {
        const detail = failed.slice(0, 5).map((entry) => `${entry.Key ?? "?"} (${entry.Code ?? "?"}: ${entry.Message ?? ""})`);
        throw new StorageError(
          `cannot delete ${failed.length} objects under ${this.url}: ${detail.join(", ")}${failed.length > 5 ? ", ..." : ""}`,
        );
      }
    }
    return keys.length;
  }

  /** The location one level up (the bucket's root for a top-level prefix), through the same client. */
  parent(): S3Location {
    const slash = this.prefix.lastIndexOf("/");
    const up = slash === -1 ? "" : this.prefix.slice(0, slash);
    return new S3Location(`s3://${this.bucket}/${up}`, this.client, this.options);
  }

  /** The object's ETag and size (a HEAD), or undefined when there is no such key. */
  async head(key: string): Promise<{ etag: string; size: number } | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { etag: head.ETag ?? "", size: head.ContentLength ?? 0 };
    } catch (error) {
      if (httpStatus(error) === 404 && (await this.bucketExists(objectKey))) return undefined;
      throw new StorageError(`cannot stat s3://${this.bucket}/${objectKey}: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * The body of a GET of the whole object or of bytes [start, end), streamed. With `ifMatch`
   * (the ETag an index was built from), an object replaced since answers 412: an
   * ObjectChangedError, since offsets into the old bytes would slice the new ones wrongly.
   */
  async stream(key: string, options: { ifMatch?: string; start?: number; end?: number } = {}): Promise<AsyncIterable<Uint8Array>> {
    const objectKey = this.objectKey(key);
    const url = `s3://${this.bucket}/${objectKey}`;
    const range = options.start !== undefined && options.end !== undefined ? `bytes=${options.start}-${options.end - 1}` : undefined;
    try {
      const response = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, ...(range ? { Range: range } : {}), ...(options.ifMatch ? { IfMatch: options.ifMatch } : {}) }),
      );
      return (response.Body ?? []) as AsyncIterable<Uint8Array>;
    } catch (error) {
      if (httpStatus(error) === 412) {
        throw new ObjectChangedError(`${url} changed since its index was built (ETag no longer ${options.ifMatch}): plan the run again`, { cause: error });
      }
      if (isNoSuchKey(error)) throw new MissingObjectError(`cannot read ${url}: no such key`, { cause: error });
      throw new StorageError(`cannot read ${url}${range ? ` (${range})` : ""}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Bytes [start, end) of an object in one ranged GET, read whole; see `stream` for `ifMatch`. */
  async readRange(key: string, start: number, end: number, options: { ifMatch?: string } = {}): Promise<Buffer> {
    const body = await this.stream(key, { ...options, start, end });
    const chunks: Uint8Array[] = [];
    let total = 0;
    try {
      for await (const chunk of body) {
        chunks.push(chunk);
        total += chunk.length;
      }
    } catch (error) {
      throw new StorageError(`cannot read s3://${this.bucket}/${this.objectKey(key)} (bytes ${start}-${end - 1}): ${(error as Error).message}`, { cause: error });
    }
    if (total !== end - start) {
      throw new StorageError(`cannot read s3://${this.bucket}/${this.objectKey(key)} (bytes ${start}-${end - 1}): got ${total} bytes, asked for ${end - start}`);
    }
    return Buffer.concat(chunks, total);
  }

  child(key: string): Location {
    return new S3Location(`s3://${this.bucket}/${this.objectKey(key)}`, this.client, this.options);
  }
}

import { parseBatchMessage, type BatchMessage } from "./manifest.js";
import { parseS3EventMessage, type S3ObjectEvent } from "./s3-events.js";
import { parseS3Url } from "../storage/location.js";

/** The S3 prefix whose drop events a worker honours, as `--drop-input s3://bucket/prefix/` names it. */
export interface DropInput {
  readonly bucket: string;
  /** Key prefix, "" for the whole bucket, otherwise ending in "/". */
  readonly prefix: string;
}

/** Parses `s3://bucket/prefix/` (the trailing slash is added when missing: a prefix is a folder). */
export function parseDropInput(url: string): DropInput {
  const { bucket, key } = parseS3Url(url);
  return { bucket, prefix: key === "" || key.endsWith("/") ? key : `${key}/` };
}

/** What a received message asks for. `poison` carries why it can never be worked on. */
export type WorkItem =
  | { readonly kind: "batch"; readonly batch: BatchMessage }
  | { readonly kind: "drop"; readonly objects: readonly S3ObjectEvent[] }
  | { readonly kind: "test" }
  | { readonly kind: "poison"; readonly reason: string };

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The first object outside the watched prefix, described; undefined when all are inside. */
function outsideDropInput(objects: readonly S3ObjectEvent[], input: DropInput): string | undefined {
  const stray = objects.find((object) => object.bucket !== input.bucket || !object.key.startsWith(input.prefix));
  return stray === undefined
    ? undefined
    : `event for s3://${stray.bucket}/${stray.key}, outside the watched drop input s3://${input.bucket}/${input.prefix}`;
}

/**
 * Reads a message body. Anything that can never succeed, however often it is received, is
 * poison: a body that is not JSON, JSON of no known shape, a malformed batch or S3 event, a key
 * that does not decode, or an event for a bucket or prefix this worker was not told to watch.
 */
export function classifyMessage(body: string | undefined, dropInput: DropInput | undefined): WorkItem {
  let json: unknown;
  try {
    json = JSON.parse(body ?? "");
  } catch (error) {
    return { kind: "poison", reason: `body is not JSON: ${messageOf(error)}` };
  }
  try {
    const batch = parseBatchMessage(json);
    if (batch !== undefined) return { kind: "batch", batch };
    const event = parseS3EventMessage(json);
    if (event === undefined) return { kind: "poison", reason: "unknown message type (neither a batch nor an S3 event)" };
    if (event.kind === "test") return { kind: "test" };
    if (dropInput === undefined) {
      return { kind: "poison", reason: "S3 event received, but this worker watches no drop folder (no drop input set)" };
    }
    const outside = outsideDropInput(event.objects, dropInput);
    if (outside !== undefined) return { kind: "poison", reason: outside };
    return { kind: "drop", objects: event.objects };
  } catch (error) {
    // A ZodError for a malformed event, a URIError for a key that does not decode.
    const what = error instanceof URIError ? "an object key does not decode" : "malformed message";
    return { kind: "poison", reason: `${what}: ${messageOf(error).replace(/\s+/g, " ").slice(0, 500)}` };
  }
}

import { z } from "zod";
import { assertSafeKey } from "../storage/location.js";
import { IMAGE_EXTENSIONS, isImageKey } from "../storage/image-keys.js";

/**
 * The drop folder's messages: S3 event notifications as AWS delivers them to SQS (directly, or
 * wrapped in an SNS envelope when the bucket notifies a topic).
 */


/** One object named by an S3 event record, its key already decoded. */
export interface S3ObjectEvent {
  readonly eventName: string;
  readonly bucket: string;
  readonly key: string;
  readonly size: number | undefined;
}

export type S3EventMessage =
  /** `s3:TestEvent`, sent once when a notification is configured: acknowledge and drop it. */
  | { readonly kind: "test"; readonly bucket: string | undefined }
  | { readonly kind: "objects"; readonly objects: readonly S3ObjectEvent[] };

const testEventSchema = z.object({
  Service: z.literal("Amazon S3"),
  Event: z.literal("s3:TestEvent"),
  Bucket: z.string().optional(),
});

const recordSchema = z.object({
  eventSource: z.literal("aws:s3"),
  eventName: z.string(),
  s3: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({ key: z.string().min(1), size: z.number().optional() }),
  }),
});

const eventSchema = z.object({ Records: z.array(z.unknown()).min(1) });

const snsEnvelopeSchema = z.object({ Type: z.literal("Notification"), Message: z.string() });

/**
 * S3 writes object keys in event records form-encoded: spaces as "+", everything else
 * percent-encoded (so a literal "+" arrives as "%2B").
 */
export function decodeS3Key(raw: string): string {
  return decodeURIComponent(raw.replace(/\+/g, " "));
}

/**
 * Reads a parsed SQS message body as an S3 event. Returns undefined when the body is not an S3
 * event at all (so the caller can try other message types); throws a ZodError when it claims to
 * be one (has `Records` from aws:s3) but is malformed.
 */
export function parseS3EventMessage(body: unknown): S3EventMessage | undefined {
  const envelope = snsEnvelopeSchema.safeParse(body);
  if (envelope.success) {
    let inner: unknown;
    try {
      inner = JSON.parse(envelope.data.Message);
    } catch {
      return undefined;
    }
    return parseS3EventMessage(inner);
  }
  const test = testEventSchema.safeParse(body);
  if (test.success) return { kind: "test", bucket: test.data.Bucket };
  const event = eventSchema.safeParse(body);
  if (!event.success) return undefined;
  const first = event.data.Records[0] as { eventSource?: unknown } | undefined;
  if (first?.eventSource !== "aws:s3") return undefined;
  const objects = event.data.Records.map((record) => {
    const parsed = recordSchema.parse(record);
    return {
      eventName: parsed.eventName,
      bucket: parsed.s3.bucket.name,
      key: decodeS3Key(parsed.s3.object.key),
      size: parsed.s3.object.size,
    };
  });
  return { kind: "objects", objects };
}


/** Whether an event announces a new object (Put, Post, Copy, CompleteMultipartUpload). */
export function isObjectCreated(eventName: string): boolean {
  return eventName.startsWith("ObjectCreated:");
}

/**
 * The key of an object's result under the drop output: `<original key>.json`. Throws a
 * StorageError for a key that would escape the output prefix ("..", leading "/", empty segments).
 */
export function dropResultKey(key: string): string {
  const resultKey = `${key}.json`;
  assertSafeKey(resultKey);
  return resultKey;
}

export type DropDecision =
  | { readonly action: "score"; readonly object: S3ObjectEvent; readonly resultKey: string }
  | { readonly action: "skip"; readonly object: S3ObjectEvent; readonly reason: string };

/**
 * What to do with each object of an event, in record order. A key announced twice in one
 * message is scored once (its result would be the same bytes).
 */
export function planDropEvent(objects: readonly S3ObjectEvent[]): DropDecision[] {
  const seen = new Set<string>();
  return objects.map((object): DropDecision => {
    if (!isObjectCreated(object.eventName)) {
      return { action: "skip", object, reason: `event ${object.eventName} is not an object creation` };
    }
    if (!isImageKey(object.key)) {
      return { action: "skip", object, reason: `not an image (extensions: ${IMAGE_EXTENSIONS.join(" ")})` };
    }
    let resultKey: string;
    try {
      resultKey = dropResultKey(object.key);
    } catch (error) {
      return { action: "skip", object, reason: (error as Error).message };
    }
    const identity = `${object.bucket}/${object.key}`;
    if (seen.has(identity)) return { action: "skip", object, reason: "duplicate record in the same message" };
    seen.add(identity);
    return { action: "score", object, resultKey };
  });
}

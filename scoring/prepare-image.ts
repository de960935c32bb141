import type { DecodedImage } from "../model/image/decode.js";
import { decodeImage } from "../model/image/decode.js";
import { MissingObjectError, ObjectTooLargeError, StorageError } from "../storage/errors.js";
import { isImageFault } from "./errors.js";
import type { ImageInput } from "./image-input.js";

/** An input read and decoded, or the image's own error record. */
export type Prepared = { key: string; label: number | null; image: DecodedImage } | { key: string; error: string };

/** Decoding settings of a run. */
export interface PrepareOptions {
  readonly applyExifOrientation: boolean;
  readonly maxPixels?: number | undefined;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The HTTP status and error code behind a storage failure (the AWS SDK puts them on the error
 * it throws, which storage wraps as `cause`), e.g. "HTTP 403 AccessDenied"; undefined when
 * there is none, as for a local file.
 */
export function httpStatusOf(error: unknown): string | undefined {
  for (let at: unknown = error, depth = 0; at !== undefined && at !== null && depth < 8; depth++) {
    const status = (at as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
    if (typeof status === "number") {
      const code = (at as { Code?: unknown }).Code ?? (at as { name?: unknown }).name;
      const named = typeof code === "string" && code !== "" && code !== "Error" && code !== String(status);
      return named ? `HTTP ${status} ${code}` : `HTTP ${status}`;
    }
    at = (at as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * A read that failed for any reason but the key being gone: a storage fault (denied, throttled,
 * timed out, reset), never the image's own fault, so it fails the run or batch instead of
 * becoming a record. The original error stays on `cause`.
 */
function readFault(key: string, error: unknown): StorageError {
  const message = messageOf(error);
  const status = httpStatusOf(error);
  const detail = status !== undefined && !message.includes(status) ? `${message} (${status})` : message;
  return new StorageError(`cannot read image ${key}: ${detail}`, { cause: error });
}

/**
 * Reads and decodes one input. Only the image's own faults (bytes that do not decode, a listed
 * key that is gone) become its error record; a failed read is a StorageError naming the key,
 * and anything else from the decoder is rethrown as it is.
 */
export async function prepareImage(input: ImageInput, options: PrepareOptions): Promise<Prepared> {
  let bytes: Uint8Array;
  try {
    bytes = await input.read();
  } catch (error) {
    // A fixed sentence, not the storage's text (which names a local absolute path), so the
    // record is the same on every machine.
    if (error instanceof MissingObjectError) return { key: input.key, error: `${input.key}: not found (listed, but gone when read)` };
    if (error instanceof ObjectTooLargeError) return { key: input.key, error: `${input.key}: larger than the input limit of ${error.maxBytes} bytes` };
    if (isImageFault(error)) return { key: input.key, error: messageOf(error) };
    throw readFault(input.key, error);
  }
  try {
    const image = await decodeImage(bytes, {
      source: input.key,
      applyExifOrientation: options.applyExifOrientation,
      ...(options.maxPixels !== undefined ? { maxPixels: options.maxPixels } : {}),
    });
    return { key: input.key, label: input.label, image };
  } catch (error) {
    if (isImageFault(error)) return { key: input.key, error: messageOf(error) };
    throw error;
  }
}

/*
 * Storage faults and the input objects that are bad in themselves: the layer that reads and
 * writes objects says what went wrong with them.
 */
import { GoogLeNetEvalError } from "../model/errors.js";

/** Something stored (S3 object, local file, queue message) that is missing or malformed. */
export class StorageError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StorageError";
  }
}

/**
 * A key or file that is not there (S3 answers 404, the file system ENOENT). When the key is an
 * input image the plan listed, that image is bad (an error record); anything else is a fault.
 */
export class MissingObjectError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MissingObjectError";
  }
}

/**
 * An object read with the ETag it was indexed under answered 412: it was replaced since. Offsets
 * into the old bytes mean nothing in the new ones, so retrying cannot help.
 */
export class ObjectChangedError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ObjectChangedError";
  }
}

/**
 * An input object over the byte cap, found by its size before the read or by counting while
 * reading (it can grow in between); the image's own fault, so it becomes its error record.
 */
export class ObjectTooLargeError extends GoogLeNetEvalError {
  readonly maxBytes: number;
  constructor(message: string, maxBytes: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ObjectTooLargeError";
    this.maxBytes = maxBytes;
  }
}

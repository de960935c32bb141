/**
 * One base class for every error this project raises on purpose, so callers can tell a
 * user's bad input (a file, a line, a key) apart from a bug.
 */
export class GoogLeNetEvalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GoogLeNetEvalError";
  }
}

/** An ONNX file that cannot be read, or whose graph is not a network this engine can build. */
export class ModelFormatError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ModelFormatError";
  }
}

/** Image bytes that do not decode, are truncated or empty, or exceed the pixel limit. */
export class ImageDecodeError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ImageDecodeError";
  }
}

/** A label file that cannot be used: unknown format, a bad line, an unknown WNID. */
export class LabelFileError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LabelFileError";
  }
}

/** A setting (flag, environment variable, context value) that is missing or invalid. */
export class ConfigurationError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConfigurationError";
  }
}

/** A backend or engine that was asked for but cannot run on this host. */
export class BackendUnavailableError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BackendUnavailableError";
  }
}

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

/** A model that loaded but answers with values that are not probabilities (NaN, infinite). */
export class ModelOutputError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ModelOutputError";
  }
}

/**
 * Whether an error is the image's own fault, so that it becomes the image's error record: bytes
 * that do not decode, or a listed key that no longer exists. Every other error (a denied or
 * failed read, a timeout, a broken model) is a fault that fails the batch or the run.
 */
export function isImageFault(error: unknown): boolean {
  return error instanceof ImageDecodeError || error instanceof MissingObjectError || error instanceof ObjectTooLargeError;
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

/** A queued batch that did not finish within its deadline; the worker hands it back and exits. */
export class DeadlineExceededError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DeadlineExceededError";
  }
}

/**
 * A run stopped on request (SIGTERM, Ctrl-C) before it finished: what it wrote stands, for a
 * resume. `stoppedBy` is what asked, e.g. "SIGTERM".
 */
export class RunInterruptedError extends GoogLeNetEvalError {
  readonly stoppedBy: string;

  constructor(message: string, stoppedBy: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RunInterruptedError";
    this.stoppedBy = stoppedBy;
  }
}

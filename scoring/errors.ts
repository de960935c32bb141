/*
 * How a scoring run tells an image's own fault (an error record) from a fault of the run, and
 * how it says it was stopped.
 */
import { GoogLeNetEvalError, ImageDecodeError } from "../model/errors.js";
import { MissingObjectError, ObjectTooLargeError } from "../storage/errors.js";

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

/**
 * Whether an error is the image's own fault, so that it becomes the image's error record: bytes
 * that do not decode, or a listed key that no longer exists. Every other error (a denied or
 * failed read, a timeout, a broken model) is a fault that fails the batch or the run.
 */
export function isImageFault(error: unknown): boolean {
  return error instanceof ImageDecodeError || error instanceof MissingObjectError || error instanceof ObjectTooLargeError;
}

import { GoogLeNetEvalError } from "../model/errors.js";

/**
 * A message that can never succeed however often it is received (a batch its manifest does
 * not hold, a missing or unreadable manifest, a model file that no longer has the planned
 * sha256, a result key S3 cannot store): the worker moves it to the dead-letter queue at once
 * with this message as `googlenet-eval-reason`, instead of retrying it for hours.
 */
export class PermanentMessageError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermanentMessageError";
  }
}

/**
 * A message of a run that no longer exists: its `out` was planned again (`plan --replace`), so
 * the manifest there has another digest. Not a failure (a re-plan is routine): the worker deletes
 * it with a log line and nothing goes to the dead-letter queue.
 */
export class SupersededMessageError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SupersededMessageError";
  }
}

/** A queued batch that did not finish within its deadline; the worker hands it back and exits. */
export class DeadlineExceededError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DeadlineExceededError";
  }
}

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

/** A model that loaded but answers with values that are not probabilities (NaN, infinite). */
export class ModelOutputError extends GoogLeNetEvalError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ModelOutputError";
  }
}


import sharp from "sharp";

import { ConfigurationError, ImageDecodeError } from "../errors.js";
import { findTruncation, type ContainerFormat } from "./image-structure.js";

/** Decoded pixels as stored in the file: 8-bit RGB, row-major, channels interleaved (HWC). */
export interface DecodedImage {
  width: number;
  height: number;
  /** width * height * 3 bytes, R G B per pixel. */
  data: Uint8Array;
}

export interface DecodeOptions {
  /** The file path or storage key the bytes came from; every error message names it. */
  source: string;
  /**
   * Rotate/flip by the EXIF Orientation tag. No default, because the two callers differ:
   * validation runs pass false (ImageNet convention), the drop folder passes true (phone photos).
   */
  applyExifOrientation: boolean;
  /** Largest width * height accepted; larger images fail before their pixels are decoded. Default 100_000_000. */
  maxPixels?: number;
}

/** Default of `DecodeOptions.maxPixels` (../shared/PROTOCOL.md, "Decoding"). */
export const DEFAULT_MAX_PIXELS = 100_000_000;

type AcceptedFormat = ContainerFormat;

const FORMAT_NAMES: Record<AcceptedFormat, string> = { jpeg: "JPEG", png: "PNG", webp: "WebP" };
const ACCEPTED = "JPEG, PNG, WebP";

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  return bytes.length >= at + prefix.length && prefix.every((b, i) => bytes[at + i] === b);
}

function ascii(text: string): number[] {
  return [...text].map((c) => c.charCodeAt(0));
}

/**
 * The format by magic bytes. libvips would also open GIF, TIFF, SVG, HEIF and more, so the
 * protocol's three formats are enforced here, before sharp sees the bytes.
 */
function sniffFormat(bytes: Uint8Array): AcceptedFormat | undefined {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "png";
  if (startsWith(bytes, ascii("RIFF")) && startsWith(bytes, ascii("WEBP"), 8)) return "webp";
  return undefined;
}

/** A name for common formats we refuse, so the message says what the file is. */
function describeOther(bytes: Uint8Array): string {
  if (startsWith(bytes, ascii("GIF8"))) return "a GIF image";
  if (startsWith(bytes, [0x49, 0x49, 0x2a, 0x00]) || startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2a])) return "a TIFF image";
  if (startsWith(bytes, ascii("BM"))) return "a BMP image";
  if (startsWith(bytes, ascii("ftyp"), 4)) return "an ISO media file (HEIF/AVIF or video)";
  if (startsWith(bytes, [0xff, 0xd8])) return "a damaged JPEG (no marker after SOI)";
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return `not an image (first bytes: ${head})`;
}

/**
 * Decodes JPEG, PNG or WebP bytes (recognised by content, whatever the name says) to 8-bit RGB
 * exactly as ../shared/PROTOCOL.md "Decoding" fixes it: the embedded ICC profile is not
 * applied, grayscale is replicated to three channels, CMYK goes through sharp's default CMYK
 * to sRGB conversion, alpha is dropped, EXIF orientation only when asked.
 *
 * Every failure's message is a fixed sentence per kind, built from facts read from the bytes
 * (see image-structure.ts for why libvips's own text is never part of it: it is shared between
 * concurrent decodes); libvips's text stays on the error's `cause`.
 *
 * @throws ImageDecodeError naming `options.source` and the reason: empty, not an accepted
 *   format, truncated data, an unreadable header, more pixels than `options.maxPixels`, or data
 *   the decoder rejects.
 * @throws ConfigurationError when `options.maxPixels` is not a positive integer.
 */
export async function decodeImage(bytes: Uint8Array, options: DecodeOptions): Promise<DecodedImage> {
  const { source, applyExifOrientation } = options;
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) {
    throw new ConfigurationError(`maxPixels must be a positive integer (default ${DEFAULT_MAX_PIXELS}), got ${String(maxPixels)}`);
  }
  if (bytes.length === 0) {
    throw new ImageDecodeError(`${source}: empty file (0 bytes)`);
  }
  const format = sniffFormat(bytes);
  if (format === undefined) {
    throw new ImageDecodeError(`${source}: ${describeOther(bytes)}; accepted formats: ${ACCEPTED}`);
  }
  const name = FORMAT_NAMES[format];
  const truncation = findTruncation(bytes, format);
  if (truncation !== undefined) {
    throw new ImageDecodeError(`${source}: ${name} truncated: ${truncation}`);
  }

  let width: number;
  let height: number;
  try {
    // Header only, without sharp's own limit, so the size check below can name the numbers.
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
    if (meta.format !== format) {
      throw new Error(`libvips read it as ${String(meta.format)}`);
    }
    width = meta.width;
    height = meta.height;
  } catch (error) {
    throw new ImageDecodeError(`${source}: cannot read the ${name} header`, { cause: error });
  }
  if (width * height > maxPixels) {
    throw new ImageDecodeError(
      `${source}: ${width}x${height} is ${width * height} pixels, more than the limit of ${maxPixels} (maxPixels)`,
    );
  }

  const image = sharp(bytes, {
    // "error" makes truncated data (libjpeg's "premature end") fail instead of padding the
    // image with grey, while tolerating the harmless libjpeg warnings PIL and TF also accept.
    failOn: "error",
    // The protocol feeds stored values, as Caffe, PIL and TensorFlow do; 286 of the 1000
    // samples embed a profile (30 of them Adobe RGB), so applying it would change inputs.
    ignoreIcc: true,
    autoOrient: applyExifOrientation,
    // The same limit again while decoding, in case the header check above was fooled.
    limitInputPixels: maxPixels,
  });

  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    decoded = await image.removeAlpha().toColourspace("srgb").raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new ImageDecodeError(`${source}: cannot decode ${name}: the decoder rejected the image data`, { cause: error });
  }
  const { data, info } = decoded;
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    // Not expected from sharp 0.34 after removeAlpha + sRGB; refuse rather than misread pixels.
    throw new ImageDecodeError(
      `${source}: ${name} decoded to ${info.channels} channels of ${info.width}x${info.height}, expected 3-channel RGB`,
    );
  }
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/**
 * Where a JPEG, PNG or WebP file ends too early, found from the container structure alone.
 *
 * Why not ask the decoder: libvips keeps its error text in one buffer that every thread shares
 * (libvips#15, sharp#902), so the message a failing decode returns depends on what else is
 * being decoded at the same moment ("premature end of JPEG image", the same line twice, or
 * "Unknown error" for the same bytes). Error records must be the same bytes on every run, so
 * their reason comes from facts read here, from the file's bytes and nothing else.
 */

export type ContainerFormat = "jpeg" | "png" | "webp";

/** JPEG markers that stand alone, with no length field: TEM, RST0-7, SOI. */
function isStandaloneMarker(marker: number): boolean {
  return marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8);
}

const JPEG_SOS = 0xda;
const JPEG_EOI = 0xd9;

/** Whether the bytes from `from` on hold an EOI marker (0xFF 0xD9). */
function hasEndOfImage(bytes: Uint8Array, from: number): boolean {
  for (let i = bytes.indexOf(0xff, from); i >= 0 && i + 1 < bytes.length; i = bytes.indexOf(0xff, i + 1)) {
    if (bytes[i + 1] === JPEG_EOI) return true;
  }
  return false;
}

/**
 * A JPEG is whole when its header segments, walked from SOI to the first scan, fit in the file
 * and an EOI marker follows that scan. Byte stuffing keeps 0xFF 0xD9 out of scan data, so a file
 * cut anywhere after the header has none there; an embedded thumbnail's EOI sits inside APP1,
 * before the first scan, and is not looked at. Damage inside the scans of a file that still
 * ends properly is the decoder's to judge, not truncation.
 */
function jpegTruncation(bytes: Uint8Array): string | undefined {
  let i = 2;
  for (;;) {
    // Fill bytes and stray bytes between segments are tolerated, as libjpeg tolerates them.
    while (i < bytes.length && bytes[i] !== 0xff) i++;
    while (i < bytes.length && bytes[i] === 0xff) i++;
    if (i >= bytes.length) return "the data ends before the first scan";
    const marker = bytes[i] as number;
    i++;
    if (marker === JPEG_EOI) return undefined;
    if (isStandaloneMarker(marker)) continue;
    if (i + 2 > bytes.length) return "the data ends inside a marker segment";
    const length = ((bytes[i] as number) << 8) | (bytes[i + 1] as number);
    if (i + length > bytes.length) return "a marker segment runs past the end of the file";
    i += length;
    if (marker === JPEG_SOS) {
      return hasEndOfImage(bytes, i) ? undefined : "the data ends before the end-of-image marker";
    }
  }
}

/** A PNG is whole when its chunks fit in the file and the last one read is IEND. */
function pngTruncation(bytes: Uint8Array): string | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let i = 8;
  while (i < bytes.length) {
    if (i + 8 > bytes.length) return "the data ends inside a chunk header";
    const length = view.getUint32(i);
    const type = String.fromCharCode(...bytes.subarray(i + 4, i + 8));
    // length + type + data + CRC
    if (i + 12 + length > bytes.length) return `the ${type} chunk runs past the end of the file`;
    if (type === "IEND") return undefined;
    i += 12 + length;
  }
  return "the data ends before the IEND chunk";
}

/** A WebP is whole when the file holds every byte its RIFF header declares. */
function webpTruncation(bytes: Uint8Array): string | undefined {
  if (bytes.length < 12) return "the data ends inside the RIFF header";
  const declared = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true) + 8;
  return bytes.length < declared ? `the RIFF header declares ${declared} bytes and the file has ${bytes.length}` : undefined;
}

/**
 * Why a file of the given (sniffed) format is cut short, as a fixed sentence that depends only
 * on its bytes; undefined when its structure reaches the format's end marker.
 */
export function findTruncation(bytes: Uint8Array, format: ContainerFormat): string | undefined {
  switch (format) {
    case "jpeg":
      return jpegTruncation(bytes);
    case "png":
      return pngTruncation(bytes);
    case "webp":
      return webpTruncation(bytes);
  }
}

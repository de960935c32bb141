import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import sharp from "sharp";
import { describe, expect, it } from "vitest";

import { DEFAULT_MAX_PIXELS, decodeImage } from "../../model/image/decode.js";
import type { DecodeOptions } from "../../model/image/decode.js";
import { ConfigurationError, ImageDecodeError } from "../../model/errors.js";

const SAMPLES = fileURLToPath(new URL("../../../shared/imagenet/samples/", import.meta.url));
const TENCH = "n01440764_tench.JPEG"; // 500x375, no ICC profile
const GREY = "n02096051_Airedale.JPEG"; // one of the 23 single-channel samples
const ADOBE_RGB = "n01532829_house_finch.JPEG"; // embeds "Adobe RGB (1998)"
const ROTATED = "n02951585_can_opener.JPEG"; // EXIF Orientation 6, stored 392x294

/** Pixels decoded by Pillow, not sharp; how they were made and how far they may differ is in the file. */
interface PilReference {
  readonly file: string;
  readonly why: string;
  readonly width: number;
  readonly height: number;
  readonly pixels: readonly { readonly x: number; readonly y: number; readonly rgb: readonly number[] }[];
  readonly sha256: string;
}

const PIL_REFERENCE = JSON.parse(
  readFileSync(new URL("../fixtures/pil-reference-pixels.json", import.meta.url), "utf8"),
) as { readonly photos: readonly PilReference[] };

function pilReference(file: string): PilReference {
  const reference = PIL_REFERENCE.photos.find((photo) => photo.file === file);
  if (!reference) throw new Error(`test/fixtures/pil-reference-pixels.json has no ${file}`);
  return reference;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function sample(name: string): Buffer {
  return readFileSync(SAMPLES + name);
}

function options(source: string, more: Partial<DecodeOptions> = {}): DecodeOptions {
  return { source, applyExifOrientation: false, ...more };
}

/** Raw pixels for sharp's raw input, from a per-pixel function. */
function rawPixels(width: number, height: number, channels: 3 | 4, at: (x: number, y: number) => number[]): Buffer {
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(at(x, y), (y * width + x) * channels);
  return data;
}

function pixel(image: { width: number; data: Uint8Array }, x: number, y: number): number[] {
  const k = (y * image.width + x) * 3;
  return Array.from(image.data.subarray(k, k + 3));
}

async function expectDecodeError(bytes: Uint8Array, opts: DecodeOptions, message: RegExp): Promise<void> {
  const failure = decodeImage(bytes, opts);
  await expect(failure).rejects.toBeInstanceOf(ImageDecodeError);
  await expect(failure).rejects.toThrow(message);
}

describe("decodeImage on real photographs", () => {
  it.each(PIL_REFERENCE.photos.map((photo) => [photo.file, photo.why, photo] as const))(
    "gives the RGB pixels Pillow decodes from %s (%s)",
    async (file, _why, reference) => {
      // Act
      const image = await decodeImage(sample(file), options(file));

      // Assess: Pillow and sharp agree bit for bit on every sample, so no tolerance.
      expect([image.width, image.height, image.data.length]).toEqual([reference.width, reference.height, reference.width * reference.height * 3]);
      for (const { x, y, rgb } of reference.pixels) expect({ x, y, rgb: pixel(image, x, y) }).toEqual({ x, y, rgb });
      expect(sha256(image.data)).toBe(reference.sha256);
    },
  );

  it("replicates a grayscale JPEG to three equal channels", async () => {
    // Prepare
    const bytes = sample(GREY);
    expect((await sharp(bytes).metadata()).channels).toBe(1);
    const grey = await sharp(bytes).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
    expect(grey.info.channels).toBe(1);

    // Act
    const image = await decodeImage(bytes, options(GREY));

    // Assess
    expect([image.width, image.height]).toEqual([grey.info.width, grey.info.height]);
    let unequal = 0;
    for (let p = 0; p < image.width * image.height; p++) {
      const v = grey.data[p];
      if (image.data[p * 3] !== v || image.data[p * 3 + 1] !== v || image.data[p * 3 + 2] !== v) unequal++;
    }
    expect(unequal).toBe(0);
  });

  it("does not apply a real embedded Adobe RGB profile", async () => {
    // Prepare: applying the profile really changes pixels, away from Pillow's stored ones.
    const bytes = sample(ADOBE_RGB);
    const reference = pilReference(ADOBE_RGB);
    const applied = await sharp(bytes).raw().toBuffer();
    expect(sha256(applied)).not.toBe(reference.sha256);

    // Act
    const image = await decodeImage(bytes, options(ADOBE_RGB));

    // Assess
    expect(sha256(image.data)).toBe(reference.sha256);
  });

  it.each([
    [false, 392, 294],
    [true, 294, 392],
  ])("applies a real photo's EXIF orientation 6 only when asked (%s)", async (apply, width, height) => {
    // Prepare
    const bytes = sample(ROTATED);
    expect((await sharp(bytes).metadata()).orientation).toBe(6);

    // Act
    const image = await decodeImage(bytes, options(ROTATED, { applyExifOrientation: apply }));

    // Assess
    expect([image.width, image.height]).toEqual([width, height]);
  });
});

describe("decodeImage on made formats", () => {
  it("drops alpha from a PNG without compositing the colour", async () => {
    // Prepare: alpha 0 must keep its colour (dropped, not flattened onto a background).
    const rgba = rawPixels(4, 3, 4, (x, y) => [10 * x, 20 * y, 200, x === 0 ? 0 : 60 * x]);
    const png = await sharp(rgba, { raw: { width: 4, height: 3, channels: 4 } }).png().toBuffer();
    expect((await sharp(png).metadata()).hasAlpha).toBe(true);

    // Act
    const image = await decodeImage(png, options("alpha.png"));

    // Assess
    expect([image.width, image.height, image.data.length]).toEqual([4, 3, 36]);
    for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) expect(pixel(image, x, y)).toEqual([10 * x, 20 * y, 200]);
  });

  it("decodes a lossless WebP exactly", async () => {
    // Prepare
    const rgb = rawPixels(6, 5, 3, (x, y) => [x * 40, y * 50, (x + y) * 20]);
    const webp = await sharp(rgb, { raw: { width: 6, height: 5, channels: 3 } }).webp({ lossless: true }).toBuffer();

    // Act
    const image = await decodeImage(webp, options("made.webp"));

    // Assess
    expect([image.width, image.height]).toEqual([6, 5]);
    expect(Buffer.from(image.data).equals(rgb)).toBe(true);
  });

  it("accepts a PNG named .jpg, by content", async () => {
    // Prepare
    const rgb = rawPixels(3, 2, 3, (x, y) => [x, y, 7]);
    const png = await sharp(rgb, { raw: { width: 3, height: 2, channels: 3 } }).png().toBuffer();

    // Act
    const image = await decodeImage(png, options("photos/holiday.jpg"));

    // Assess
    expect(Buffer.from(image.data).equals(rgb)).toBe(true);
  });

  it("scales a 16-bit PNG down to 8 bits", async () => {
    // Prepare
    const png = await sharp({ create: { width: 2, height: 2, channels: 3, background: "#ff8000" } })
      .toColourspace("rgb16")
      .png()
      .toBuffer();
    expect((await sharp(png).metadata()).depth).toBe("ushort");

    // Act
    const image = await decodeImage(png, options("deep.png"));

    // Assess
    expect(pixel(image, 1, 1)).toEqual([255, 128, 0]);
  });

  it("converts a CMYK JPEG to RGB", async () => {
    // Prepare
    const cmyk = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#ff0000" } })
      .toColourspace("cmyk")
      .jpeg()
      .toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe("cmyk");

    // Act
    const image = await decodeImage(cmyk, options("print.jpg"));

    // Assess: red through CMYK and back stays clearly red.
    const [r, g, b] = pixel(image, 4, 4) as [number, number, number];
    expect(image.data.length).toBe(8 * 8 * 3);
    expect(r).toBeGreaterThan(200);
    expect(g).toBeLessThan(40);
    expect(b).toBeLessThan(60);
  });

  it("does not apply an embedded non-sRGB (Display P3) profile", async () => {
    // Prepare: pure sRGB red written with a P3 profile is stored as about (234, 51, 34).
    const red = rawPixels(4, 4, 3, () => [255, 0, 0]);
    const png = await sharp(red, { raw: { width: 4, height: 4, channels: 3 } }).withIccProfile("p3").png().toBuffer();
    expect((await sharp(png).metadata()).hasProfile).toBe(true);
    const applied = await sharp(png).raw().toBuffer();
    expect(Array.from(applied.subarray(0, 3))).toEqual([255, 0, 0]);

    // Act
    const image = await decodeImage(png, options("p3.png"));

    // Assess
    const [r, g, b] = pixel(image, 2, 2) as [number, number, number];
    expect(r).toBeGreaterThan(220);
    expect(r).toBeLessThan(245);
    expect(g).toBeGreaterThan(40);
    expect(b).toBeGreaterThan(25);
  });

  it.each([
    [false, 40, 20],
    [true, 20, 40],
  ])("applies EXIF orientation 6 only when asked (%s)", async (apply, width, height) => {
    // Prepare: left half red, right half blue; orientation 6 turns it 90 degrees clockwise.
    const rgb = rawPixels(40, 20, 3, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]));
    const jpeg = await sharp(rgb, { raw: { width: 40, height: 20, channels: 3 } })
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 })
      .toBuffer();

    // Act
    const image = await decodeImage(jpeg, options("phone.jpg", { applyExifOrientation: apply }));

    // Assess
    expect([image.width, image.height]).toEqual([width, height]);
    const redAt = apply ? pixel(image, 10, 5) : pixel(image, 5, 10);
    const blueAt = apply ? pixel(image, 10, 35) : pixel(image, 35, 10);
    expect(redAt[0]).toBeGreaterThan(200);
    expect(blueAt[2]).toBeGreaterThan(200);
  });
});

describe("decodeImage failures", () => {
  it("fails on a truncated JPEG instead of padding it with grey", async () => {
    // Prepare: a half file really does decode to a full-size image when failures are off.
    const whole = sample(TENCH);
    const half = whole.subarray(0, whole.length >> 1);
    const lenient = await sharp(half, { failOn: "none" }).raw().toBuffer({ resolveWithObject: true });
    expect([lenient.info.width, lenient.info.height]).toEqual([500, 375]);

    // Act + Assess
    await expectDecodeError(half, options("val/cut.JPEG"), /^val\/cut\.JPEG: JPEG truncated: the data ends before the end-of-image marker$/);
  });

  it("fails on a truncated PNG, naming the chunk cut short", async () => {
    // Prepare
    const png = await sharp(sample(TENCH)).png().toBuffer();

    // Act + Assess
    await expectDecodeError(png.subarray(0, png.length >> 1), options("cut.png"), /^cut\.png: PNG truncated: the IDAT chunk runs past the end of the file$/);
  });

  it("fails on a truncated WebP with the sizes its RIFF header declares", async () => {
    // Prepare: the RIFF size field is bytes 4-7, little-endian, and counts all but the first 8.
    const webp = await sharp(sample(TENCH)).webp().toBuffer();
    const cut = webp.subarray(0, 1000);
    const declared = webp.length;

    // Act + Assess
    await expectDecodeError(cut, options("cut.webp"), new RegExp(`^cut\\.webp: WebP truncated: the RIFF header declares ${declared} bytes and the file has 1000$`));
  });

  it("fails on a JPEG whose header segment runs past the end of the file", async () => {
    // Prepare: SOI, then an APP0 marker whose length field (0x4242) is far beyond the 68 bytes.
    const bytes = Buffer.concat([sample(TENCH).subarray(0, 4), Buffer.alloc(64, 0x42)]);

    // Act + Assess
    await expectDecodeError(bytes, options("bad.JPEG"), /^bad\.JPEG: JPEG truncated: a marker segment runs past the end of the file$/);
  });

  it("fails on a whole JPEG whose frame header declares no rows, keeping libvips's text as the cause only", async () => {
    // Prepare: SOF0's height field (2 bytes, 5 after the marker) set to 0.
    const bytes = Buffer.from(sample(TENCH));
    const sof = bytes.indexOf(Buffer.from([0xff, 0xc0]));
    bytes.writeUInt16BE(0, sof + 5);

    // Act
    const failure = await decodeImage(bytes, options("rows.JPEG")).catch((error: unknown) => error as Error);

    // Assess
    expect(failure).toBeInstanceOf(ImageDecodeError);
    expect((failure as Error).message).toBe("rows.JPEG: cannot read the JPEG header");
    expect(String(((failure as Error).cause as Error).message)).toMatch(/Empty JPEG image/);
  });

  it("fails on a whole PNG whose image data the decoder rejects", async () => {
    // Prepare: one flipped byte inside IDAT breaks its CRC and its deflate stream.
    const png = Buffer.from(await sharp(sample(TENCH)).png().toBuffer());
    const crcAt = png.indexOf(Buffer.from("IDAT")) + 100;
    png[crcAt] = (png[crcAt] as number) ^ 0xff;

    // Act + Assess
    await expectDecodeError(png, options("crc.png"), /^crc\.png: cannot decode PNG: the decoder rejected the image data$/);
  });

  it("fails on an empty file", async () => {
    await expectDecodeError(new Uint8Array(0), options("empty.JPEG"), /^empty\.JPEG: empty file \(0 bytes\)$/);
  });

  it("fails on a text file and names the accepted formats", async () => {
    await expectDecodeError(
      Buffer.from("this is not an image\n"),
      options("notes.JPEG"),
      /^notes\.JPEG: not an image \(first bytes: 74 68 69 73 20 69 73 20\); accepted formats: JPEG, PNG, WebP$/,
    );
  });

  it("refuses a GIF although sharp could read it", async () => {
    // Prepare
    const gif = await sharp({ create: { width: 4, height: 4, channels: 3, background: "#00ff00" } }).gif().toBuffer();

    // Act + Assess
    await expectDecodeError(gif, options("anim.JPEG"), /^anim\.JPEG: a GIF image; accepted formats: JPEG, PNG, WebP$/);
  });

  it("fails on more pixels than maxPixels, before decoding them", async () => {
    await expectDecodeError(
      sample(TENCH),
      options("big.JPEG", { maxPixels: 187_499 }),
      /^big\.JPEG: 500x375 is 187500 pixels, more than the limit of 187499 \(maxPixels\)$/,
    );
  });

  it("accepts exactly maxPixels pixels, and defaults to 100 million", async () => {
    // Act
    const image = await decodeImage(sample(TENCH), options("edge.JPEG", { maxPixels: 187_500 }));

    // Assess
    expect(image.width * image.height).toBe(187_500);
    expect(DEFAULT_MAX_PIXELS).toBe(100_000_000);
  });

  it.each([0, -1, 1.5])("refuses maxPixels %s as a configuration error", async (maxPixels) => {
    await expect(decodeImage(sample(TENCH), options("x.JPEG", { maxPixels }))).rejects.toBeInstanceOf(ConfigurationError);
  });
});

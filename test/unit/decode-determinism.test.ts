import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";

import { decodeImage } from "../../model/image/decode.js";
import { findTruncation } from "../../model/image/image-structure.js";

const SAMPLES = fileURLToPath(new URL("../../../shared/imagenet/samples/", import.meta.url));
const TENCH = "n01440764_tench.JPEG"; // 500x375
const GOOD = ["n01443537_goldfish.JPEG", "n01484850_great_white_shark.JPEG", "n01491361_tiger_shark.JPEG", "n02096051_Airedale.JPEG"];

function sample(name: string): Buffer {
  return readFileSync(SAMPLES + name);
}

/** What one decode gave: the error message, or a digest of the pixels it produced. */
async function outcome(bytes: Uint8Array, source: string, maxPixels?: number): Promise<string> {
  try {
    const image = await decodeImage(bytes, { source, applyExifOrientation: false, ...(maxPixels ? { maxPixels } : {}) });
    return `decoded ${image.width}x${image.height} ${createHash("sha256").update(image.data).digest("hex")}`;
  } catch (error) {
    return (error as Error).message;
  }
}

interface Kind {
  readonly key: string;
  readonly bytes: Buffer;
  readonly maxPixels?: number;
  /** The record's reason, written out by hand from the file's construction (not from decode.ts). */
  readonly expected: string | RegExp;
}

describe("decodeImage gives the same answer for the same bytes, whatever is decoded beside it", () => {
  let kinds: Kind[];

  beforeAll(async () => {
    // Prepare: each kind of bad file the protocol turns into an error record, plus a CMYK JPEG,
    // which must decode to the same pixels every time.
    const tench = sample(TENCH);
    const png = await sharp(tench).png().toBuffer();
    const webp = await sharp(tench).webp().toBuffer();
    const cmyk = await sharp(tench).toColourspace("cmyk").jpeg({ quality: 90 }).toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe("cmyk");
    const badCrc = Buffer.from(png);
    const crcAt = png.indexOf(Buffer.from("IDAT")) + 100;
    badCrc[crcAt] = (badCrc[crcAt] as number) ^ 0xff;
    kinds = [
      { key: "cut.jpg", bytes: tench.subarray(0, tench.length >> 1), expected: "cut.jpg: JPEG truncated: the data ends before the end-of-image marker" },
      { key: "cut.png", bytes: png.subarray(0, png.length >> 1), expected: "cut.png: PNG truncated: the IDAT chunk runs past the end of the file" },
      {
        key: "cut.webp",
        bytes: webp.subarray(0, 2000),
        expected: `cut.webp: WebP truncated: the RIFF header declares ${webp.length} bytes and the file has 2000`,
      },
      { key: "empty.jpg", bytes: Buffer.alloc(0), expected: "empty.jpg: empty file (0 bytes)" },
      {
        key: "notes.jpg",
        bytes: Buffer.from("these are not pixels\n"),
        expected: "notes.jpg: not an image (first bytes: 74 68 65 73 65 20 61 72); accepted formats: JPEG, PNG, WebP",
      },
      { key: "crc.png", bytes: badCrc, expected: "crc.png: cannot decode PNG: the decoder rejected the image data" },
      { key: "big.jpg", bytes: tench, maxPixels: 187_499, expected: "big.jpg: 500x375 is 187500 pixels, more than the limit of 187499 (maxPixels)" },
      { key: "cmyk.jpg", bytes: cmyk, expected: /^decoded 500x375 [0-9a-f]{64}$/ },
    ];
  });

  it("one identical outcome per kind over 20 rounds of 12 concurrent decodes beside real photos", async () => {
    // Prepare
    const good = GOOD.map(sample);
    const seen = new Map<string, Set<string>>(kinds.map((kind) => [kind.key, new Set<string>()]));

    // Act: 12 at a time, every kind in each round, good photos filling the other places, so
    // failing decodes overlap each other and successful ones (the shared libvips error buffer).
    for (let round = 0; round < 20; round++) {
      const jobs: Promise<unknown>[] = [];
      for (let slot = 0; slot < 12; slot++) {
        const kind = kinds[(slot + round) % kinds.length] as Kind;
        if (slot % 3 === 2) {
          jobs.push(decodeImage(good[(slot + round) % good.length] as Buffer, { source: "good.jpg", applyExifOrientation: false }));
        } else {
          jobs.push(outcome(kind.bytes, kind.key, kind.maxPixels).then((text) => seen.get(kind.key)?.add(text)));
        }
      }
      await Promise.all(jobs);
    }

    // Assess
    for (const kind of kinds) {
      const outcomes = [...(seen.get(kind.key) ?? [])];
      expect(outcomes, kind.key).toHaveLength(1);
      if (typeof kind.expected === "string") expect(outcomes[0], kind.key).toBe(kind.expected);
      else expect(outcomes[0], kind.key).toMatch(kind.expected);
    }
  }, 120_000);
});

describe("findTruncation", () => {
  it("finds every one of the 1000 sample photos whole", () => {
    // Prepare
    const names = readdirSync(SAMPLES).filter((name) => name.endsWith(".JPEG"));

    // Act
    const flagged = names.filter((name) => findTruncation(sample(name), "jpeg") !== undefined);

    // Assess
    expect(names).toHaveLength(1000);
    expect(flagged).toEqual([]);
  });

  it("finds a JPEG cut anywhere after its header truncated, and leaves damage inside a scan to the decoder", () => {
    // Prepare
    const tench = sample(TENCH);
    const damaged = Buffer.from(tench);
    for (let i = 2000; i < 2400; i++) damaged[i] = (i * 37) & 0xff;

    // Act
    const cuts = [0.3, 0.5, 0.9, 0.999].map((share) => findTruncation(tench.subarray(0, Math.floor(tench.length * share)), "jpeg"));

    // Assess
    expect(cuts).toEqual(Array(4).fill("the data ends before the end-of-image marker"));
    expect(findTruncation(tench.subarray(0, tench.length - 1), "jpeg")).toBe("the data ends before the end-of-image marker");
    expect(findTruncation(damaged, "jpeg")).toBeUndefined();
  });

  it("does not take the EOI of an EXIF thumbnail for the image's", async () => {
    // Prepare: a JPEG whose APP1 holds a whole thumbnail JPEG (with its own FFD9), then cut.
    const thumbnail = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#808080" } }).jpeg().toBuffer();
    const tench = sample(TENCH);
    const length = Buffer.alloc(2);
    length.writeUInt16BE(thumbnail.length + 2 + 6);
    const app1 = Buffer.concat([Buffer.from([0xff, 0xe1]), length, Buffer.from("Exif\0\0"), thumbnail]);
    const withThumbnail = Buffer.concat([tench.subarray(0, 2), app1, tench.subarray(2)]);

    // Act + Assess
    expect(findTruncation(withThumbnail, "jpeg")).toBeUndefined();
    expect(findTruncation(withThumbnail.subarray(0, withThumbnail.length >> 1), "jpeg")).toBe("the data ends before the end-of-image marker");
  });

  it("finds PNG and WebP files whole or cut by their chunk and RIFF sizes", async () => {
    // Prepare
    const png = await sharp(sample(TENCH)).png().toBuffer();
    const webp = await sharp(sample(TENCH)).webp().toBuffer();

    // Act + Assess
    expect(findTruncation(png, "png")).toBeUndefined();
    expect(findTruncation(png.subarray(0, png.length - 12), "png")).toBe("the data ends before the IEND chunk");
    expect(findTruncation(png.subarray(0, 20), "png")).toBe("the IHDR chunk runs past the end of the file");
    expect(findTruncation(webp, "webp")).toBeUndefined();
    expect(findTruncation(webp.subarray(0, 10), "webp")).toBe("the data ends inside the RIFF header");
  });
});

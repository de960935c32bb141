import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { createReadStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalLocation } from "../../storage/location.js";
import { openImageSource } from "../../storage/archive/image-source.js";
import { TarFormatError } from "../../storage/archive/tar-header.js";
import { FileByteSource, StreamByteSource, walkTar } from "../../storage/archive/tar-walk.js";

/*
 * Archives as real tools write them (GNU tar in its three formats, Python's tarfile), checked
 * against Python's own reading of the same files: tarfile's offset_data and size are the
 * expected member offsets, never this code's.
 */

const SAMPLES = "../shared/imagenet/samples";
const PHOTOS = ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG", "n01484850_great_white_shark.JPEG"];

let dir: string;

/** [path, data offset, size] of each regular file, as Python's tarfile reads the archive. */
function pythonMembers(archive: string): [string, number, number][] {
  const script = [
    "import tarfile, sys, json",
    "t = tarfile.open(sys.argv[1])",
    "print(json.dumps([[m.name.removeprefix('./'), m.offset_data, m.size] for m in t if m.isfile() and not m.issparse()]))",
  ].join("\n");
  return JSON.parse(execFileSync("python3", ["-c", script, archive], { encoding: "utf8" })) as [string, number, number][];
}

function gnuTar(format: "ustar" | "gnu" | "pax", archive: string, from: string, ...extra: string[]): string {
  const path = join(dir, archive);
  execFileSync("tar", [`--format=${format}`, ...extra, "-cf", path, "-C", from, "."]);
  return path;
}

async function walkFile(path: string) {
  const source = await FileByteSource.open(path);
  try {
    return await walkTar(source, path, { keepContent: (member) => member.endsWith(".cls") });
  } finally {
    await source.close();
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tar-archives-"));
  // A tree with nested folders, a name past ustar's 100-byte field, a symlink, a large member
  // that is not an image, and a WebDataset pair (.jpg + .cls).
  const tree = join(dir, "tree");
  const deep = join(tree, "a".repeat(60), "b".repeat(60));
  mkdirSync(deep, { recursive: true });
  cpSync(join(SAMPLES, PHOTOS[0] as string), join(tree, PHOTOS[0] as string));
  cpSync(join(SAMPLES, PHOTOS[1] as string), join(deep, `${"c".repeat(90)}.jpg`));
  symlinkSync(PHOTOS[0] as string, join(tree, "link.jpg"));
  writeFileSync(join(tree, "notes.bin"), Buffer.alloc(3 * 1024 * 1024, 7));
  mkdirSync(join(tree, "wds"));
  cpSync(join(SAMPLES, PHOTOS[2] as string), join(tree, "wds", "sample0001.jpg"));
  writeFileSync(join(tree, "wds", "sample0001.cls"), "2\n");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("tar archives written by real tools, indexed by their headers", () => {
  it.each(["gnu", "pax"] as const)("GNU tar --format=%s: every file member at Python's offsets, links and folders counted apart", async (format) => {
    const archive = gnuTar(format, `tree-${format}.tar`, join(dir, "tree"));

    const index = await walkFile(archive);

    expect(index.members.map((member) => [member.path, member.offset, member.size])).toEqual(pythonMembers(archive));
    // ".", the two nested folders and wds/.
    expect(index.skipped).toEqual({ directories: 4, links: 1, other: 0 });
    expect(index.smallContents).toEqual({ "wds/sample0001.cls": "2\n" });
    expect(index.members.every((member) => member.kind === "file" && !member.truncated)).toBe(true);
  });

  it("GNU tar --format=ustar (names split into prefix and name) and Python's tarfile (pax, a non-ASCII name) read the same", async () => {
    const tree = join(dir, "short");
    mkdirSync(join(tree, "d".repeat(80)), { recursive: true });
    cpSync(join(SAMPLES, PHOTOS[0] as string), join(tree, "d".repeat(80), `${"e".repeat(60)}.JPEG`));
    const ustar = gnuTar("ustar", "short-ustar.tar", tree);
    const python = join(dir, "python.tar");
    execFileSync("python3", ["-c", "import tarfile, sys\nwith tarfile.open(sys.argv[1], 'w') as t: t.add(sys.argv[2], arcname='fotos/Käse.jpg')", python, join(SAMPLES, PHOTOS[1] as string)]);

    const fromUstar = await walkFile(ustar);
    const fromPython = await walkFile(python);

    expect(fromUstar.members.map((member) => [member.path, member.offset, member.size])).toEqual(pythonMembers(ustar));
    expect(fromPython.members.map((member) => [member.path, member.offset, member.size])).toEqual(pythonMembers(python));
    expect(fromPython.members[0]?.path).toBe("fotos/Käse.jpg");
  });

  it("walked as a stream (S3, gunzip) it gives the same index as by offsets, gzipped too", async () => {
    const archive = gnuTar("pax", "stream.tar", join(dir, "tree"));
    execFileSync("sh", ["-c", `gzip -c '${archive}' > '${archive}.gz'`]);
    const byOffsets = await walkFile(archive);
    const seen: number[] = [];

    const streamed = await walkTar(new StreamByteSource(createReadStream(archive), (bytes) => seen.push(bytes)), archive, { keepContent: (member) => member.endsWith(".cls") });
    const { createGunzip } = await import("node:zlib");
    const gunzipped = await walkTar(new StreamByteSource(createReadStream(`${archive}.gz`).pipe(createGunzip())), archive, { keepContent: (member) => member.endsWith(".cls") });

    expect(streamed).toEqual(byOffsets);
    expect(gunzipped).toEqual(byOffsets);
    // Progress runs to the first end-of-archive block, the last bytes read.
    expect(seen.at(-1)).toBe(byOffsets.end + 512);
  });

  it("a sparse member (GNU tar -S, gnu and pax) is kept as sparse, to become its error record", async () => {
    const tree = join(dir, "sparse");
    mkdirSync(tree);
    const holes = join(tree, "holes.jpg");
    writeFileSync(holes, "");
    truncateSync(holes, 2 * 1024 * 1024);
    execFileSync("dd", ["of=" + holes, "bs=1", "seek=1000000", "conv=notrunc", "status=none"], { input: "abc" });
    for (const format of ["gnu", "pax"] as const) {
      const index = await walkFile(gnuTar(format, `sparse-${format}.tar`, tree, "-S"));
      expect(index.members.map((member) => [member.path, member.kind])).toEqual([["holes.jpg", "sparse"]]);
    }
  });
});

describe("damaged archives", () => {
  it("a header whose checksum fails in the middle stops the walk, naming the archive and the header's byte offset", async () => {
    const archive = gnuTar("gnu", "damaged.tar", join(dir, "tree"));
    const bytes = readFileSync(archive);
    // The second regular file's header: its data offset minus one block, as Python reads it.
    const secondHeader = (pythonMembers(archive)[1] as [string, number, number])[1] - 512;
    bytes[secondHeader + 10] = (bytes[secondHeader + 10] as number) ^ 0x20;
    writeFileSync(archive, bytes);

    const walked = walkFile(archive);

    await expect(walked).rejects.toThrow(TarFormatError);
    await expect(walked).rejects.toThrow(`${archive}: damaged tar header at byte ${secondHeader}`);
  });

  it("a member cut off by the end of the file is marked truncated; the members before it are whole", async () => {
    const archive = gnuTar("gnu", "cut.tar", join(dir, "tree"));
    const expected = pythonMembers(archive);
    const last = expected.at(-1) as [string, number, number];
    truncateSync(archive, last[1] + Math.floor(last[2] / 2));

    const index = await walkFile(archive);

    expect(index.members.map((member) => [member.path, member.truncated])).toEqual(expected.map(([path]) => [path, path === last[0]]));
  });

  it("bytes after the end-of-archive blocks are ignored", async () => {
    const archive = gnuTar("ustar", "trailing.tar", join(dir, "short"));
    const clean = await walkFile(archive);
    writeFileSync(archive, Buffer.concat([readFileSync(archive), Buffer.from("junk after the end of the archive".repeat(40))]));

    expect(await walkFile(archive)).toEqual(clean);
  });
});

describe("an input holding archives", () => {
  it("keys image members <archive>/<member path>, labels WebDataset samples from .cls, reads members byte for byte", async () => {
    const folder = join(dir, "shards");
    mkdirSync(folder);
    gnuTar("gnu", "shards/000.tar", join(dir, "tree"));
    gnuTar("pax", "shards/001.tar", join(dir, "tree"));
    cpSync(join(SAMPLES, PHOTOS[0] as string), join(folder, "loose.JPEG"));

    const source = await openImageSource(new LocalLocation(folder));
    const read = source.reads(source.keys);

    const members = ["n01440764_tench.JPEG", `${"a".repeat(60)}/${"b".repeat(60)}/${"c".repeat(90)}.jpg`, "wds/sample0001.jpg"];
    expect([...source.keys].sort()).toEqual(["loose.JPEG", ...members.map((m) => `000.tar/${m}`), ...members.map((m) => `001.tar/${m}`)].sort());
    expect(source.describe()).toBe("2 tar shards, 6 images and 1 loose image (skipped: 8 directories, 2 links, 2 other files)");
    expect(source.classOf("001.tar/wds/sample0001.jpg")).toBe(2);
    expect(source.classOf("001.tar/n01440764_tench.JPEG")).toBeUndefined();
    expect(Buffer.compare(await read("001.tar/wds/sample0001.jpg"), readFileSync(join(SAMPLES, PHOTOS[2] as string)))).toBe(0);
    expect(Buffer.compare(await read("loose.JPEG"), readFileSync(join(SAMPLES, PHOTOS[0] as string)))).toBe(0);
  });

  it("a member larger than the byte cap and a cut-off member are their own errors; the others read", async () => {
    const archive = gnuTar("gnu", "capped.tar", join(dir, "tree"));
    const expected = pythonMembers(archive);
    const last = expected.at(-1) as [string, number, number];
    truncateSync(archive, last[1] + 100);
    const source = await openImageSource(new LocalLocation(archive));
    const read = source.reads(source.keys, { maxBytes: 120_000 });
    const outcome = async (key: string) => read(key).then((bytes) => bytes.length, (error: Error) => `${error.name}: ${error.message}`);

    const outcomes = await Promise.all(source.keys.map(outcome));

    const sizes = new Map(expected.map(([path, , size]) => [`capped.tar/${path}`, size]));
    expect(Object.fromEntries(source.keys.map((key, i) => [key, outcomes[i]]))).toEqual(
      Object.fromEntries(
        source.keys.map((key) => {
          const size = sizes.get(key) as number;
          if (key === `capped.tar/${last[0]}`) return [key, `ImageDecodeError: ${key}: cut off by the end of the archive`];
          if (size > 120_000) return [key, `ObjectTooLargeError: ${key}: ${size} bytes, more than the limit of 120000`];
          return [key, size];
        }),
      ),
    );
  });
});

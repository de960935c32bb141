import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StorageError } from "../../storage/errors.js";
import { indexCacheKey, parseIndex, readCachedIndex, serializeIndex, type StoredIndex } from "../../storage/archive/index-file.js";
import { LocalLocation } from "../../storage/location.js";

/** An index file as plan stores it, written out by hand: one pax-named member, one sparse, one cut off. */
const FILE = `{"format":"googlenet-eval/tar-index@1","archive":"s3://b/val.tar","version":"\\"9f86d081\\"","size":10240,
"members":[
["a/x.jpg",1536,3000,"file",false],
["a/x.cls",5120,2,"file",false],
["b/sparse.jpg",6144,100,"sparse",false],
["b/cut.jpg",7168,9000,"file",true]
],
"skipped":{"directories":2,"links":1,"other":0},"smallContents":{"a/x.cls":"7\\n"},"end":10240}
`;

const STORED: StoredIndex = {
  archive: "s3://b/val.tar",
  version: '"9f86d081"',
  size: 10240,
  index: {
    members: [
      { path: "a/x.jpg", offset: 1536, size: 3000, kind: "file", truncated: false },
      { path: "a/x.cls", offset: 5120, size: 2, kind: "file", truncated: false },
      { path: "b/sparse.jpg", offset: 6144, size: 100, kind: "sparse", truncated: false },
      { path: "b/cut.jpg", offset: 7168, size: 9000, kind: "file", truncated: true },
    ],
    skipped: { directories: 2, links: 1, other: 0 },
    smallContents: { "a/x.cls": "7\n" },
    end: 10240,
  },
};

describe("archive index files", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "index-file-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the stored form, and writes exactly it back", () => {
    // Act
    const parsed = parseIndex(FILE, "s3://b/runs/r/archives/0.json");
    // Assess
    expect(parsed).toEqual(STORED);
    expect(serializeIndex(parsed)).toBe(FILE);
  });

  it.each([
    ["another format", FILE.replace("tar-index@1", "tar-index@9"), /format/],
    ["a member without its offset", FILE.replace('["a/x.jpg",1536,3000,"file",false]', '["a/x.jpg",3000,"file",false]'), /members\.0/],
    ["not JSON", FILE.slice(0, 40), /is not JSON/],
  ])("refuses %s, naming the file", (_name, text, pattern) => {
    // Act / Assess
    expect(() => parseIndex(text, "s3://b/runs/r/archives/0.json")).toThrow(StorageError);
    expect(() => parseIndex(text, "s3://b/runs/r/archives/0.json")).toThrow(pattern);
    expect(() => parseIndex(text, "s3://b/runs/r/archives/0.json")).toThrow(/s3:\/\/b\/runs\/r\/archives\/0\.json/);
  });

  it("keys the cache by version and size, and takes an entry only for that exact version and size", async () => {
    // Prepare: the entry for ETag "9f86d081", and the same file under the key of a multipart ETag.
    const cache = new LocalLocation(dir);
    await cache.write("tar-index-9f86d081-10240.json", FILE);
    await cache.write("tar-index-9f86d081-2-10240.json", FILE);
    // Act / Assess
    expect(indexCacheKey('"9f86d081"', 10240)).toBe("tar-index-9f86d081-10240.json");
    expect(indexCacheKey('"9f86d081-2"', 10240)).toBe("tar-index-9f86d081-2-10240.json");
    expect(await readCachedIndex(cache, '"9f86d081"', 10240)).toEqual(STORED);
    expect(await readCachedIndex(cache, '"9f86d081"', 20480)).toBeUndefined();
    // The file under that key says another version: not taken.
    expect(await readCachedIndex(cache, '"9f86d081-2"', 10240)).toBeUndefined();
  });
});

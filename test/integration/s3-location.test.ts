import { readFile } from "node:fs/promises";
import type { S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ObjectTooLargeError, StorageError } from "../../storage/errors.js";
import { createS3Client } from "../../storage/aws-clients.js";
import { S3Location } from "../../storage/s3-location.js";
import { readUrl } from "../../storage/open-location.js";
import { LocalLocation, sha256OfBytes } from "../../storage/location.js";
import { openLocation } from "../../storage/open-location.js";
import { startEmulator, type Emulator } from "../helpers/emulator.js";

const MODEL = "../shared/models/bvlc-googlenet.onnx";

/** Records the name of every command a client sends, to see how an upload went out. */
function recordCommands(client: S3Client): string[] {
  const names: string[] = [];
  client.middlewareStack.add(
    (next, context) => (args) => {
      names.push(context.commandName ?? "?");
      return next(args);
    },
    { step: "initialize", name: "recordCommandNames" },
  );
  return names;
}

describe("S3Location against the emulator", () => {
  let emulator: Emulator;

  beforeAll(async () => {
    emulator = await startEmulator();
    emulator.server.createBucket("store");
  });

  afterAll(async () => {
    await emulator.stop();
  });

  it("writes, reads, lists (paginated, relative, sorted) and stays inside its prefix", async () => {
    // Prepare
    const root = new S3Location("s3://store/runs/one/", emulator.s3, { pageSize: 2 });
    const keys = ["b.txt", "a/x.jpg", "a/y z é.jpg", "c/d/e.json", "z.txt"];
    for (const key of keys) await root.write(key, `body of ${key}`);
    await new S3Location("s3://store/runs/one-other", emulator.s3).write("not-mine.txt", "x");
    // Act
    const listed: string[] = [];
    for await (const key of root.list()) listed.push(key);
    const child = root.child("a");
    const childListed: string[] = [];
    for await (const key of child.list()) childListed.push(key);
    // Assess
    expect(root.url).toBe("s3://store/runs/one");
    expect(listed).toEqual([...keys].sort());
    expect(childListed).toEqual(["x.jpg", "y z é.jpg"]);
    expect((await child.read("y z é.jpg")).toString()).toBe("body of a/y z é.jpg");
    expect(await root.exists("b.txt")).toBe(true);
    expect(await root.exists("nope.txt")).toBe(false);
    expect(await root.readIfExists("nope.txt")).toBeUndefined();
    await expect(root.read("nope.txt")).rejects.toThrow(/s3:\/\/store\/runs\/one\/nope\.txt: no such key/);
    expect(() => root.child("..")).toThrow(StorageError);
    await expect(root.write("../escape.txt", "x")).rejects.toThrow(StorageError);
  });

  it("a missing bucket is a StorageError naming bucket and key, not a missing key", async () => {
    // Prepare: a bucket that never existed, as one deleted after `plan` answers NoSuchBucket
    const gone = new S3Location("s3://no-such-bucket-19/in", emulator.s3);
    // Act / Assess
    await expect(gone.readIfExists("a.jpg")).rejects.toThrow(StorageError);
    await expect(gone.read("a.jpg")).rejects.toThrow(/no-such-bucket-19\/in\/a\.jpg/);
    await expect(gone.exists("a.jpg")).rejects.toThrow(/no-such-bucket-19.*in\/a\.jpg/);
  });

  it("read with maxBytes: a 20 MiB object over a 1 MiB cap is an ObjectTooLargeError naming it; one under it reads whole", async () => {
    // Prepare
    const store = new S3Location("s3://store/caps", emulator.s3);
    await store.write("big.jpg", Buffer.alloc(20 * 1024 * 1024, 7));
    await store.write("small.jpg", Buffer.alloc(1024 * 1024, 7));
    // Act / Assess
    await expect(store.read("big.jpg", { maxBytes: 1024 * 1024 })).rejects.toThrow(ObjectTooLargeError);
    await expect(store.read("big.jpg", { maxBytes: 1024 * 1024 })).rejects.toThrow(/s3:\/\/store\/caps\/big\.jpg: 20971520 bytes, more than the limit of 1048576/);
    expect((await store.read("small.jpg", { maxBytes: 1024 * 1024 })).length).toBe(1024 * 1024);
    await expect(store.read("gone.jpg", { maxBytes: 1024 })).rejects.toThrow(/no such key/);
  });

  it("uploads the 28 MB model in parts, and it reads back byte for byte", async () => {
    // Prepare
    const client = createS3Client({ AWS_ENDPOINT_URL: emulator.endpoint, AWS_REGION: "us-east-1" }, {
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
    });
    const commands = recordCommands(client);
    const bytes = await readFile(MODEL);
    const models = new S3Location("s3://store/models", client);
    // Act
    await models.write("bvlc-googlenet.onnx", bytes);
    const back = await readUrl("s3://store/models/bvlc-googlenet.onnx", client);
    // Assess
    expect(commands[0]).toBe("CreateMultipartUploadCommand");
    expect(commands.filter((name) => name === "UploadPartCommand").length).toBe(Math.ceil(bytes.length / (8 * 1024 * 1024)));
    expect(commands).toContain("CompleteMultipartUploadCommand");
    expect(commands).not.toContain("PutObjectCommand");
    expect(sha256OfBytes(back)).toBe(sha256OfBytes(bytes));
    client.destroy();
  });

  it("sends a small body as a single PutObject", async () => {
    // Prepare
    const client = createS3Client({ AWS_ENDPOINT_URL: emulator.endpoint, AWS_REGION: "us-east-1" }, {
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
    });
    const commands = recordCommands(client);
    // Act
    await new S3Location("s3://store/small", client).write("a.json", "{}");
    // Assess
    expect(commands).toEqual(["PutObjectCommand"]);
    client.destroy();
  });

  describe.each([
    ["s3://store/x/y", S3Location],
    ["/tmp/some/folder", LocalLocation],
  ])("openLocation(%s)", (url, kind) => {
    it(`opens a ${kind.name}`, () => {
      // Act
      const location = openLocation(url, { s3: emulator.s3 });
      // Assess
      expect(location).toBeInstanceOf(kind);
      expect(location.url).toBe(url);
    });
  });

  it("readUrl reads local paths and refuses an S3 prefix", async () => {
    // Act / Assess
    expect((await readUrl("../shared/imagenet/samples-val.txt")).length).toBeGreaterThan(0);
    await expect(readUrl("s3://store/models/", emulator.s3)).rejects.toThrow(/names a prefix/);
    await expect(readUrl("s3://store/models/missing.onnx", emulator.s3)).rejects.toThrow(/no such key/);
  });
});

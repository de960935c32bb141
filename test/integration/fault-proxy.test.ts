import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { ReceiveMessageCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { startEmulator, type Emulator } from "../helpers/emulator.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };
const BUCKET = "fault-proxy";
const KEY = "data/images/n01440764/ILSVRC2012_val_00000293 ü+.JPEG";
const OTHER_KEY = "data/images/n01443537/ILSVRC2012_val_00000236.JPEG";

// @smithy/node-http-handler 4.x only logs a warning when requestTimeout passes unless
// throwOnRequestTimeout is set; without it a stalled request never ends.
const SHORT_TIMEOUTS = { requestTimeout: 1000, connectionTimeout: 1000, throwOnRequestTimeout: true };

/** What an SDK v3 failure carries, service errors and network errors alike. */
interface SdkFailure extends Error {
  readonly code?: string;
  readonly $metadata?: { readonly httpStatusCode?: number; readonly attempts?: number };
}

async function failure(promise: Promise<unknown>): Promise<SdkFailure> {
  try {
    await promise;
  } catch (error) {
    return error as SdkFailure;
  }
  throw new Error("expected the request to fail");
}

function s3Client(endpoint: string, extra: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({ region: REGION, endpoint, forcePathStyle: true, credentials: CREDENTIALS, ...extra });
}

function getObject(s3: S3Client, key: string): Promise<string> {
  return s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key })).then((output) => output.Body?.transformToString() ?? "");
}

describe("fault proxy in front of fauxqs", () => {
  let emulator: Emulator;
  let proxy: FaultProxy;
  let s3: S3Client;

  beforeAll(async () => {
    emulator = await startEmulator();
    await emulator.s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await emulator.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: KEY, Body: "tench" }));
    await emulator.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: OTHER_KEY, Body: "goldfish" }));
  });

  beforeEach(async () => {
    proxy = await startFaultProxy(emulator.endpoint);
    s3 = s3Client(proxy.url);
  });

  afterEach(async () => {
    s3.destroy();
    await proxy.close();
  });

  afterAll(async () => {
    await emulator.stop();
  });

  it("passes requests through with bodies intact both ways", async () => {
    // Prepare: 8 MiB is a multipart part size and large enough for the SDK to send Expect: 100-continue.
    const body = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32BE(i, i);
    const key = "uploads/part 1+ü.bin";
    // Act
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
    const read = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    const bytes = Buffer.from((await read.Body?.transformToByteArray()) ?? []);
    // Assess
    expect(bytes.equals(body)).toBe(true);
    expect(proxy.requests.map((r) => [r.method, r.path, r.service, r.outcome, r.status])).toEqual([
      ["PUT", `/${BUCKET}/${key}`, "s3", "pass", 200],
      ["GET", `/${BUCKET}/${key}`, "s3", "pass", 200],
    ]);
  });

  it("answers 403 AccessDenied for one key while another reads fine", async () => {
    // Prepare
    const rule = proxy.addRule({ method: "GET", path: /\/data\/images\/n01440764\//, fault: "403" });
    // Act
    const denied = await failure(getObject(s3, KEY));
    const other = await getObject(s3, OTHER_KEY);
    // Assess: not retried, since a 403 is the caller's fault.
    expect(denied).toMatchObject({ name: "AccessDenied", message: "Access Denied", $metadata: { httpStatusCode: 403, attempts: 1 } });
    expect(other).toBe("goldfish");
    expect(rule.hits).toBe(1);
    expect(proxy.requests.map((r) => r.outcome)).toEqual(["403", "pass"]);
  });

  it("answers HEAD with a bare 403, which the SDK can name only by its status", async () => {
    // Prepare
    proxy.addRule({ method: "HEAD", path: `/${BUCKET}/${KEY}`, fault: "403" });
    // Act
    const error = await failure(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: KEY })));
    // Assess: as from real S3, where a HEAD error carries no XML to read a code from.
    expect(error).toMatchObject({ name: "Unknown", $metadata: { httpStatusCode: 403, attempts: 1 } });
  });

  it("lets skipped matches through and stops firing once removed", async () => {
    // Prepare
    const rule = proxy.addRule({ path: `/${BUCKET}/data/`, fault: "403", skip: 1 });
    // Act
    const first = await getObject(s3, KEY);
    const second = await failure(getObject(s3, KEY));
    rule.remove();
    const third = await getObject(s3, KEY);
    // Assess
    expect([first, second.name, third]).toEqual(["tench", "AccessDenied", "tench"]);
    expect([rule.matches, rule.hits]).toEqual([2, 1]);
  });

  it("clears after `times` 503 SlowDown answers, within the SDK's own retries", async () => {
    // Prepare
    const rule = proxy.addRule({ method: "GET", path: `/${BUCKET}/${KEY}`, fault: "503", times: 2 });
    // Act
    const output = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: KEY }));
    // Assess: the default three attempts are just enough.
    expect(await output.Body?.transformToString()).toBe("tench");
    expect(output.$metadata.attempts).toBe(3);
    expect(rule.hits).toBe(2);
    expect(proxy.requests.map((r) => [r.outcome, r.status])).toEqual([
      ["503", 503],
      ["503", 503],
      ["pass", 200],
    ]);
  });

  it("gives up after three attempts on a persistent 500 InternalError", async () => {
    // Prepare
    proxy.addRule({ path: `/${BUCKET}/`, fault: "500" });
    // Act
    const error = await failure(getObject(s3, KEY));
    // Assess
    expect(error).toMatchObject({ name: "InternalError", $metadata: { httpStatusCode: 500, attempts: 3 } });
    expect(proxy.requests).toHaveLength(3);
  });

  it("holds a stalled request until the client's requestTimeout ends it", async () => {
    // Prepare
    const impatient = s3Client(proxy.url, { requestHandler: SHORT_TIMEOUTS });
    proxy.addRule({ path: `/${BUCKET}/${KEY}`, fault: "stall" });
    // Act
    const error = await failure(getObject(impatient, KEY));
    impatient.destroy();
    // Assess: every attempt is ended by the client about one timeout after it arrived.
    expect(error).toMatchObject({ name: "TimeoutError", code: "ETIMEDOUT", $metadata: { attempts: 3 } });
    await vi.waitFor(() => expect(proxy.requests.every((r) => r.endedAt !== undefined)).toBe(true));
    expect(proxy.requests.map((r) => r.outcome)).toEqual(["stall", "stall", "stall"]);
    for (const request of proxy.requests) {
      const held = (request.endedAt ?? 0) - request.at;
      // Loose bounds: the client's clock starts before the proxy sees the headers, and CI is busy.
      expect(held).toBeGreaterThanOrEqual(800);
      expect(held).toBeLessThan(2000);
    }
  });

  it("destroys stalled sockets on close, failing a client that has no timeout", async () => {
    // Prepare
    const patient = s3Client(proxy.url, { maxAttempts: 1 });
    proxy.addRule({ path: `/${BUCKET}/${KEY}`, fault: "stall" });
    const pending = failure(getObject(patient, KEY));
    await vi.waitFor(() => expect(proxy.requests).toHaveLength(1));
    // Act
    await proxy.close();
    const error = await pending;
    patient.destroy();
    // Assess
    expect(error.code).toBe("ECONNRESET");
    expect(proxy.requests[0]?.endedAt).toBeDefined();
  });

  it("resets the connection without a response", async () => {
    // Prepare
    proxy.addRule({ path: `/${BUCKET}/${KEY}`, fault: "reset" });
    // Act
    const error = await failure(getObject(s3, KEY));
    // Assess: the SDK files ECONNRESET under TimeoutError and retries it like one.
    expect(error).toMatchObject({ name: "TimeoutError", code: "ECONNRESET", $metadata: { attempts: 3 } });
    expect(error.$metadata?.httpStatusCode).toBeUndefined();
    expect(proxy.requests.map((r) => [r.outcome, r.status])).toEqual([
      ["reset", undefined],
      ["reset", undefined],
      ["reset", undefined],
    ]);
  });

  it("fails SQS ReceiveMessage by action while SendMessage passes", async () => {
    // Prepare
    const { queueUrl } = emulator.createQueue("fault-proxy-jobs", { visibilityTimeoutSeconds: 30, maxReceiveCount: 3 });
    const sqs = new SQSClient({ region: REGION, endpoint: proxy.url, credentials: CREDENTIALS });
    proxy.addRule({ method: "POST", action: "ReceiveMessage", fault: "403" });
    // Act
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: "batch-0001" }));
    const error = await failure(sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 })));
    sqs.destroy();
    // Assess
    expect(error).toMatchObject({ name: "AccessDenied", $metadata: { httpStatusCode: 403, attempts: 1 } });
    expect(proxy.requests.map((r) => [r.service, r.action, r.outcome])).toEqual([
      ["sqs", "SendMessage", "pass"],
      ["sqs", "ReceiveMessage", "403"],
    ]);
  });
});

import { describe, expect, it } from "vitest";
import { StorageError } from "../../storage/errors.js";
import {
  decodeS3Key,
  dropResultKey,
  parseS3EventMessage,
  planDropEvent,
  type S3ObjectEvent,
} from "../../queue/s3-events.js";
import { isImageKey } from "../../storage/image-keys.js";
import { encodeS3EventKey, s3EventBody, s3TestEventBody } from "../helpers/emulator.js";

function created(key: string, eventName = "ObjectCreated:Put"): S3ObjectEvent {
  return { eventName, bucket: "photos", key, size: 1 };
}

describe("decodeS3Key", () => {
  it.each([
    ["drop/my+photos/caf%C3%A9+%C3%BCber.jpg", "drop/my photos/café über.jpg"],
    ["drop/a%2Bb.jpg", "drop/a+b.jpg"],
    ["drop/100%25.png", "drop/100%.png"],
    ["plain/key.jpeg", "plain/key.jpeg"],
  ])("decodes %s to %s", (raw, expected) => {
    // Act / Assess
    expect(decodeS3Key(raw)).toBe(expected);
  });

  it("inverts the encoding S3 applies (round trip through the test factory)", () => {
    // Prepare
    const key = "drop/my photos/café über + more (1).jpg";
    // Act / Assess
    expect(decodeS3Key(encodeS3EventKey(key))).toBe(key);
  });
});

describe("parseS3EventMessage", () => {
  it("reads every record of an AWS event, keys decoded", () => {
    // Prepare
    const body = JSON.parse(
      s3EventBody("photos", [
        { key: "drop/my photos/café über.jpg", size: 1234 },
        { key: "drop/notes.txt", size: 5 },
      ]),
    );
    // Act
    const parsed = parseS3EventMessage(body);
    // Assess
    expect(parsed).toEqual({
      kind: "objects",
      objects: [
        { eventName: "ObjectCreated:Put", bucket: "photos", key: "drop/my photos/café über.jpg", size: 1234 },
        { eventName: "ObjectCreated:Put", bucket: "photos", key: "drop/notes.txt", size: 5 },
      ],
    });
  });

  it("reads the raw JSON text AWS sends, with '+' for spaces", () => {
    // Prepare: a body written out by hand, as in the S3 documentation.
    const body = JSON.parse(
      '{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put",' +
        '"s3":{"s3SchemaVersion":"1.0","bucket":{"name":"b"},"object":{"key":"drop/my+photos/caf%C3%A9+%C3%BCber.jpg","size":10}}}]}',
    );
    // Act
    const parsed = parseS3EventMessage(body);
    // Assess
    expect(parsed?.kind === "objects" ? parsed.objects[0]?.key : undefined).toBe("drop/my photos/café über.jpg");
  });

  it("recognises s3:TestEvent", () => {
    // Act
    const parsed = parseS3EventMessage(JSON.parse(s3TestEventBody("photos")));
    // Assess
    expect(parsed).toEqual({ kind: "test", bucket: "photos" });
  });

  it("unwraps an SNS notification envelope", () => {
    // Prepare
    const inner = s3EventBody("photos", [{ key: "drop/a.jpg", size: 3 }]);
    const body = { Type: "Notification", MessageId: "m", TopicArn: "arn:aws:sns:us-east-1:1:t", Message: inner };
    // Act
    const parsed = parseS3EventMessage(body);
    // Assess
    expect(parsed?.kind === "objects" ? parsed.objects.map((o) => o.key) : []).toEqual(["drop/a.jpg"]);
  });

  it.each([
    ["a batch message", { type: "googlenet-eval/batch@1", out: "s3://b/r", runId: "r", batchId: "b00000" }],
    ["a number", 42],
    ["null", null],
    ["records from another service", { Records: [{ eventSource: "aws:sqs" }] }],
  ])("returns undefined for %s", (_name, body) => {
    // Act / Assess
    expect(parseS3EventMessage(body)).toBeUndefined();
  });

  it("throws on an S3 event with a malformed record", () => {
    // Prepare
    const body = { Records: [{ eventSource: "aws:s3", eventName: "ObjectCreated:Put", s3: { bucket: { name: "b" } } }] };
    // Act / Assess
    expect(() => parseS3EventMessage(body)).toThrow(/object/);
  });
});

describe("isImageKey", () => {
  it.each([
    ["a.jpg", true],
    ["a.JPEG", true],
    ["dir/b.png", true],
    ["c.webp", true],
    ["notes.txt", false],
    ["jpg", false],
    ["archive.jpg.zip", false],
  ])("%s -> %s", (key, expected) => {
    // Act / Assess
    expect(isImageKey(key)).toBe(expected);
  });
});

describe("dropResultKey", () => {
  it("appends .json to the original key", () => {
    // Act / Assess
    expect(dropResultKey("drop/my photos/café über.jpg")).toBe("drop/my photos/café über.jpg.json");
  });

  it.each(["../escape.jpg", "drop/../../x.jpg", "/abs.jpg", "drop//double.jpg"])("refuses %s", (key) => {
    // Act / Assess
    expect(() => dropResultKey(key)).toThrow(StorageError);
  });
});

describe("planDropEvent", () => {
  it("scores images once and skips the rest with a reason", () => {
    // Prepare
    const objects = [
      created("drop/a.jpg"),
      created("drop/notes.txt"),
      created("drop/a.jpg"),
      created("drop/../escape.jpg"),
      created("drop/gone.jpg", "ObjectRemoved:Delete"),
      created("drop/b.PNG"),
    ];
    // Act
    const decisions = planDropEvent(objects);
    // Assess
    expect(decisions.map((d) => [d.object.key, d.action])).toEqual([
      ["drop/a.jpg", "score"],
      ["drop/notes.txt", "skip"],
      ["drop/a.jpg", "skip"],
      ["drop/../escape.jpg", "skip"],
      ["drop/gone.jpg", "skip"],
      ["drop/b.PNG", "score"],
    ]);
    const reasons = decisions.flatMap((d) => (d.action === "skip" ? [d.reason] : []));
    expect(reasons[0]).toMatch(/not an image/);
    expect(reasons[1]).toMatch(/duplicate/);
    expect(reasons[2]).toMatch(/unsafe key/);
    expect(reasons[3]).toMatch(/not an object creation/);
  });
});

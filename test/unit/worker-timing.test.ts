import { describe, expect, it } from "vitest";
import { ConfigurationError } from "../../model/errors.js";
import { parseWorkerArgs } from "../../handlers/worker-command.js";
import { resolveWorkerTiming } from "../../queue/worker.js";

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/batches";

/**
 * SQS keeps a received message hidden for at most 12 hours (43,200 s) after its receive; a
 * heartbeat just before the deadline asks for one more visibility timeout, so deadline plus
 * visibility timeout must stay within 43,200 s (AWS SQS Developer Guide, "Visibility timeout").
 */
describe("a deadline and visibility timeout past SQS's 12 hours are refused before any receive", () => {
  it.each([
    [["--deadline", "43000", "--visibility-timeout", "600"], "43600 s", "give --deadline at most 42600"],
    [["--deadline", "43200"], "at least 2 s is 43202 s", "give --deadline at most 43198"],
    [["--visibility-timeout", "42400"], "900 s plus --visibility-timeout (VISIBILITY_TIMEOUT_SECONDS) 42400 s is 43300 s", "give --deadline at most 800"],
  ])("flags %j: a usage error naming the limit", (flags, total, fix) => {
    // Act / Assess
    expect(() => parseWorkerArgs(["--queue", QUEUE, ...flags], {})).toThrow(ConfigurationError);
    expect(() => parseWorkerArgs(["--queue", QUEUE, ...flags], {})).toThrow(total);
    expect(() => parseWorkerArgs(["--queue", QUEUE, ...flags], {})).toThrow(fix);
    expect(() => parseWorkerArgs(["--queue", QUEUE, ...flags], {})).toThrow("more than the 43200 s (12 hours) SQS keeps a received message hidden");
  });

  it("accepts a deadline and visibility timeout that add up to 12 hours exactly", () => {
    // Act
    const settings = parseWorkerArgs(["--queue", QUEUE, "--deadline", "42600", "--visibility-timeout", "600"], {});
    // Assess
    expect(settings).toMatchObject({ deadline: 42600, visibilityTimeout: 600 });
  });

  it("refuses a deadline that the queue's own visibility timeout, read at start, pushes past 12 hours", () => {
    // Act / Assess: the queue says 600 s and the worker was given a deadline of 43,000 s.
    expect(() => resolveWorkerTiming({ queueUrl: QUEUE, classNames: [], deadlineSeconds: 43_000 }, 600)).toThrow(
      new ConfigurationError(
        "deadline 43000 s plus visibility timeout 600 s is 43600 s, more than the 43200 s (12 hours) SQS keeps a message hidden after its receive: " +
          "the last heartbeats would be refused and the message would reappear mid-work; give a deadline of at most 42600 s or a shorter visibility timeout",
      ),
    );
    expect(resolveWorkerTiming({ queueUrl: QUEUE, classNames: [], deadlineSeconds: 42_600 }, 600).deadlineSeconds).toBe(42_600);
  });
});

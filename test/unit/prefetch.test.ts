import { describe, expect, it } from "vitest";
import { prefetchReads } from "../../scoring/prefetch.js";
import type { ImageInput } from "../../scoring/scorer.js";

/** Inputs whose reads resolve only when the test says so, recording when each started. */
function deferredInputs(count: number, failing: ReadonlySet<number> = new Set()) {
  const started: number[] = [];
  const finish: (() => void)[] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  const inputs: ImageInput[] = Array.from({ length: count }, (_, i) => ({
    key: `k${i}`,
    label: i,
    read: () => {
      started.push(i);
      inFlight++;
      mostInFlight = Math.max(mostInFlight, inFlight);
      return new Promise<Uint8Array>((resolve, reject) => {
        finish[i] = () => {
          inFlight--;
          if (failing.has(i)) reject(new Error(`object k${i} is gone`));
          else resolve(new Uint8Array([i]));
        };
      });
    },
  }));
  return { inputs, started, finish, mostInFlight: () => mostInFlight };
}

describe("prefetchReads", () => {
  it("starts the reads of the next inputs before the consumer asks, at most `depth` at once", async () => {
    // Prepare
    const { inputs, started, finish, mostInFlight } = deferredInputs(10);
    const source = prefetchReads(inputs, 4);

    // Act
    const first = await source.next();

    // Assess: four reads are under way although only one input was taken.
    expect(first.value?.key).toBe("k0");
    expect(started).toEqual([0, 1, 2, 3]);
    for (const done of finish) done?.();
    const keys = [first.value?.key];
    const bytes = [await first.value?.read()];
    for await (const input of { [Symbol.asyncIterator]: () => source }) {
      finish.forEach((done) => done?.());
      keys.push(input.key);
      bytes.push(await input.read());
    }
    expect(keys).toEqual(inputs.map((input) => input.key));
    expect(bytes.map((b) => b?.[0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(mostInFlight()).toBeLessThanOrEqual(4);
  });

  it.each([1, 3, 20])("keeps order and reads each object once with depth %i", async (depth) => {
    // Prepare
    const { inputs, started, finish } = deferredInputs(7);

    // Act
    const keys: string[] = [];
    for await (const input of prefetchReads(inputs, depth)) {
      finish.forEach((done) => done?.());
      await input.read();
      await input.read();
      keys.push(input.key);
    }

    // Assess
    expect(keys).toEqual(inputs.map((input) => input.key));
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it("reports a failed read on that input alone, when its read() is called", async () => {
    // Prepare
    const { inputs, finish } = deferredInputs(3, new Set([1]));

    // Act
    const outcomes: string[] = [];
    for await (const input of prefetchReads(inputs, 3)) {
      finish.forEach((done) => done?.());
      outcomes.push(await input.read().then(() => "ok", (error: Error) => error.message));
    }

    // Assess
    expect(outcomes).toEqual(["ok", "object k1 is gone", "ok"]);
  });

  it("takes async iterables and refuses a depth below 1", async () => {
    // Prepare
    async function* listing(): AsyncGenerator<ImageInput> {
      yield { key: "a", label: null, read: () => Promise.resolve(new Uint8Array([7])) };
    }

    // Act
    const keys: string[] = [];
    for await (const input of prefetchReads(listing(), 2)) keys.push(input.key);

    // Assess
    expect(keys).toEqual(["a"]);
    await expect(prefetchReads([], 0).next()).rejects.toThrow(/positive integer, got 0/);
  });
});

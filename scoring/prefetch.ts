import type { ImageInput } from "./image-input.js";

/**
 * Passes `inputs` through in order, with the `read()` of up to `depth` inputs started before
 * the consumer asks for them: an S3 GET takes tens of milliseconds, an image's 144 crops over
 * a second, so reading a few ahead means the decoder never waits on the network. At most
 * `depth` reads are in flight or held (the bound on requests and on encoded bytes in memory).
 *
 * A yielded input's `read()` returns the early read's result (its bytes or its error); a read
 * that fails is that input's failure alone, reported when its `read()` is called.
 *
 * @param depth reads started ahead of the consumer, at least 1.
 * @throws RangeError when `depth` is not a positive integer (a caller bug).
 */
export async function* prefetchReads(
  inputs: AsyncIterable<ImageInput> | Iterable<ImageInput>,
  depth: number,
): AsyncGenerator<ImageInput, void, undefined> {
  if (!Number.isInteger(depth) || depth < 1) throw new RangeError(`prefetch depth must be a positive integer, got ${depth}`);
  const iterator = Symbol.asyncIterator in inputs ? inputs[Symbol.asyncIterator]() : inputs[Symbol.iterator]();
  const queue: ImageInput[] = [];
  let exhausted = false;
  const start = (input: ImageInput): ImageInput => {
    let started: Promise<Uint8Array>;
    try {
      started = input.read();
    } catch (error) {
      started = Promise.reject(error);
    }
    // Nobody may ask for a failed read (the consumer stops early); it must not crash the process.
    started.catch(() => undefined);
    return { key: input.key, label: input.label, read: () => started };
  };
  try {
    for (;;) {
      while (!exhausted && queue.length < depth) {
        const next = await iterator.next();
        if (next.done) exhausted = true;
        else queue.push(start(next.value));
      }
      const head = queue.shift();
      if (head === undefined) return;
      yield head;
    }
  } finally {
    await iterator.return?.();
  }
}

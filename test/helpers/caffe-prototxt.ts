/**
 * Just enough of Caffe's text format to count a deploy net's parameters from its own words:
 * each layer's num_output, kernel, stride, pad, group and bias_term, with blobs chained from
 * the Input layer, so the count does not rest on a number copied from somewhere.
 */
type Value = string | Block;
interface Block {
  [key: string]: Value[];
}

function parseBlock(tokens: string[], position: { i: number }): Block {
  const block: Block = {};
  while (position.i < tokens.length) {
    const token = tokens[position.i++] as string;
    if (token === "}") return block;
    const key = token.replace(/:$/, "");
    let value: Value;
    if (tokens[position.i] === "{") {
      position.i++;
      value = parseBlock(tokens, position);
    } else if (token.endsWith(":")) {
      value = (tokens[position.i++] as string).replace(/^"|"$/g, "");
    } else {
      throw new Error(`prototxt: unexpected token "${token}"`);
    }
    (block[key] ??= []).push(value);
  }
  return block;
}

export function parsePrototxt(text: string): Block {
  const tokens = text
    .replace(/#.*$/gm, "")
    .match(/"[^"]*"|[{}]|[^\s{}]+/g);
  return parseBlock(tokens ?? [], { i: 0 });
}

function first(block: Block | undefined, key: string): string | undefined {
  const value = block?.[key]?.[0];
  return typeof value === "string" ? value : undefined;
}

function child(block: Block | undefined, key: string): Block | undefined {
  const value = block?.[key]?.[0];
  return typeof value === "object" ? value : undefined;
}

function strings(block: Block, key: string): string[] {
  return (block[key] ?? []).filter((v): v is string => typeof v === "string");
}

export interface PrototxtCount {
  readonly parameters: number;
  readonly convolutions: number;
  /** Channels of every top blob, by blob name. */
  readonly channels: ReadonlyMap<string, number>;
}

/** Weights and biases of every Convolution and InnerProduct layer of a Caffe net. */
export function countPrototxtParameters(text: string): PrototxtCount {
  const net = parsePrototxt(text);
  const shape = new Map<string, { c: number; h: number; w: number }>();
  let parameters = 0;
  let convolutions = 0;
  const number = (block: Block | undefined, key: string, fallback: number): number => Number(first(block, key) ?? fallback);
  for (const layer of (net.layer ?? []) as Block[]) {
    const type = first(layer, "type");
    const bottoms = strings(layer, "bottom").map((b) => {
      const s = shape.get(b);
      if (!s) throw new Error(`prototxt: blob "${b}" used before it is made`);
      return s;
    });
    const [input] = bottoms;
    let out: { c: number; h: number; w: number };
    switch (type) {
      case "Input": {
        const dims = strings(child(child(layer, "input_param"), "shape") ?? {}, "dim").map(Number);
        out = { c: dims[1] ?? 0, h: dims[2] ?? 0, w: dims[3] ?? 0 };
        break;
      }
      case "Convolution": {
        const p = child(layer, "convolution_param");
        const num = number(p, "num_output", NaN);
        const k = number(p, "kernel_size", NaN);
        const stride = number(p, "stride", 1);
        const pad = number(p, "pad", 0);
        const group = number(p, "group", 1);
        const bias = first(p, "bias_term") !== "false";
        if (!input) throw new Error("prototxt: convolution without input");
        parameters += num * (input.c / group) * k * k + (bias ? num : 0);
        convolutions += 1;
        const size = (n: number): number => Math.floor((n + 2 * pad - k) / stride) + 1;
        out = { c: num, h: size(input.h), w: size(input.w) };
        break;
      }
      case "Pooling": {
        const p = child(layer, "pooling_param");
        const k = number(p, "kernel_size", NaN);
        const stride = number(p, "stride", 1);
        const pad = number(p, "pad", 0);
        if (!input) throw new Error("prototxt: pooling without input");
        // Caffe pools round up.
        const size = (n: number): number => Math.ceil((n + 2 * pad - k) / stride) + 1;
        out = { c: input.c, h: size(input.h), w: size(input.w) };
        break;
      }
      case "InnerProduct": {
        const p = child(layer, "inner_product_param");
        const num = number(p, "num_output", NaN);
        const bias = first(p, "bias_term") !== "false";
        if (!input) throw new Error("prototxt: inner product without input");
        parameters += num * input.c * input.h * input.w + (bias ? num : 0);
        out = { c: num, h: 1, w: 1 };
        break;
      }
      case "Concat":
        out = { c: bottoms.reduce((sum, b) => sum + b.c, 0), h: input?.h ?? 0, w: input?.w ?? 0 };
        break;
      default:
        // ReLU, LRN, Dropout, Softmax keep their input's shape.
        if (!input) throw new Error(`prototxt: ${type} without input`);
        out = input;
    }
    for (const top of strings(layer, "top")) shape.set(top, out);
  }
  return { parameters, convolutions, channels: new Map([...shape].map(([name, s]) => [name, s.c])) };
}

import { parseArgs } from "node:util";
import { z } from "zod";
import { cropPlan, formatCropPlanJson } from "../model/crops.js";
import { ConfigurationError } from "../model/errors.js";

const HELP = `usage: googlenet-eval crops --size WxH [--json]

Prints the 144 crops of ../shared/PROTOCOL.md for an image of W x H pixels, in protocol order
(scale, square, crop, mirror).

options:
  --size WxH   image width and height in pixels, e.g. 500x375 (required)
  --json       print {"width","height","crops":[...]} instead of a table
  -h, --help   show this help`;

const Args = z.object({
  size: z
    .string({ required_error: "--size WxH is required, e.g. --size 500x375" })
    .regex(/^[1-9]\d*x[1-9]\d*$/, "--size must be WxH with positive integers, e.g. --size 500x375")
    .transform((size) => size.split("x").map(Number) as [number, number]),
  json: z.boolean().default(false),
});

function parse(argv: string[]): z.infer<typeof Args> | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { size: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
      strict: true,
    }));
  } catch (error) {
    throw new ConfigurationError(`${(error as Error).message}; valid options: --size WxH, --json, --help`, { cause: error });
  }
  if (values.help) return undefined;
  const result = Args.safeParse(values);
  if (!result.success) throw new ConfigurationError(result.error.issues.map((issue) => issue.message).join("; "));
  return result.data;
}

/** `googlenet-eval crops --size WxH [--json]`. */
export async function cropsCommand(argv: string[]): Promise<number> {
  const args = parse(argv);
  if (!args) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const [width, height] = args.size;
  if (args.json) {
    process.stdout.write(`${formatCropPlanJson(width, height)}\n`);
    return 0;
  }
  const header = ["#", "scale", "resized", "square", "crop", "mirror", "x", "y", "size"];
  const rows = cropPlan(width, height).map((crop, i) => [
    String(i),
    String(crop.scale),
    `${crop.resized[0]}x${crop.resized[1]}`,
    crop.square,
    crop.crop,
    crop.mirror ? "yes" : "no",
    String(crop.x),
    String(crop.y),
    String(crop.size),
  ]);
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((row) => (row[c] as string).length)));
  const line = (cells: string[]): string => cells.map((cell, c) => cell.padStart(widths[c] as number)).join("  ");
  process.stdout.write(`${[`${width}x${height}: ${rows.length} crops`, line(header), ...rows.map(line)].join("\n")}\n`);
  return 0;
}

import { z } from "zod";
import { cropPlan, formatCropPlanJson } from "../model/image/crops.js";
import { ConfigurationError } from "../model/errors.js";
import { parseFlags } from "./flags.js";

const HELP = `usage: googlenet-eval crops --size WxH [--json]

Prints the 144 crops the paper tests an image of W x H pixels with (Szegedy et al. 2014,
section 7), in this order: for each scale s in 256, 288, 320, 352, the image resized so its
short side is s (long side floor(s * long / short)); three s x s squares along the long side
(left, center, right, or top, center, bottom for a portrait image; offsets 0, half and all of
the excess); in each square the 224 x 224 crops tl, tr, bl, br and center, and the full square
(sampled down to 224); each unmirrored, then mirrored: 4 x 3 x 6 x 2 = 144. x, y and size
are in resized-image pixels; every crop is sampled bilinearly from the original image.

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
  const { values } = parseFlags("crops", {
    args: argv,
    options: { size: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    allowPositionals: false,
    strict: true,
  });
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
  let plan: ReturnType<typeof cropPlan>;
  try {
    plan = cropPlan(width, height);
  } catch (error) {
    if (!(error instanceof ConfigurationError)) throw error;
    throw new ConfigurationError(`--size ${width}x${height}: ${error.message}`, { cause: error });
  }
  if (args.json) {
    process.stdout.write(`${formatCropPlanJson(width, height)}\n`);
    return 0;
  }
  const header = ["#", "scale", "resized", "square", "crop", "mirror", "x", "y", "size"];
  const rows = plan.map((crop, i) => [
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

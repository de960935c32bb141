import { z } from "zod";
import { DEFAULT_MAX_PIXELS } from "../model/decode.js";
import { ConfigurationError } from "../model/errors.js";
import type { CropCount } from "../model/predict.js";
import { FLAVOURS } from "../model/preprocess.js";
import { DEFAULT_BATCH_SIZE, planRun } from "../queue/plan.js";
import { readSynsetsUrl, WORKER_ENV } from "./worker-command.js";
import { choiceFlag, engineFlag, parseFlags, positiveIntFlag } from "./flags.js";

const HELP = `usage: googlenet-eval plan --input DIR|s3://b/images/ --model FILE|s3://...onnx [--model ...]
                          --queue URL --out DIR|s3://b/runs/RUN [options]

Lists the input images, cuts them into batches, writes <out>/manifest.json (run id, models
with sha256, crops, decoding settings, labels, batch list, code version) and sends one queue
message per batch, carrying the manifest's digest. Workers (\`googlenet-eval worker\`) score
the batches into <out>/batches/<batch>.<digest>.jsonl; \`googlenet-eval aggregate --out ...\`
then writes results.jsonl and summary.json. An --out that holds anything is refused (nothing
is sent) unless --replace is given.

options:
  --input DIR|s3://...    images (.jpg .jpeg .png .webp in any case), listed recursively (required)
  --model FILE|s3://...   ONNX model; repeat for an ensemble (required)
  --queue URL             queue URL (default: $${WORKER_ENV.queue})
  --out DIR|s3://...      the run's folder; must be empty (required)
  --replace               delete everything under --out first (after the input, labels and
                          models have been read and checked)
  --labels FILE|s3://...  Caffe val.txt, LOC_val_solution.csv or synset labels
                          (default: a WNID like n01440764 in each key)
  --crops N               1, 10 or 144 (default 144)
  --batch-size N          images per batch / queue message (default ${DEFAULT_BATCH_SIZE})
  --engine NAME           tfjs, onnxruntime or auto, used by every worker (default auto)
  --preprocess NAME       bvlc or torchvision, for ONNX graphs not recognised as GoogLeNet
                          (engine onnxruntime or auto); recorded in the manifest
  --exif-orientation      rotate images by their EXIF orientation (default off, as ImageNet)
  --max-pixels N          larger images become failed records (default ${DEFAULT_MAX_PIXELS})
  --run-id ID             run id (default: UTC time and a random suffix)
  --synsets FILE|s3://... synset_words.txt (default: $${WORKER_ENV.synsets}; required)
  -h, --help              show this help`;

const Args = z.object({
  input: z.string({ required_error: "--input DIR|s3://bucket/prefix is required" }).min(1),
  model: z.array(z.string().min(1), { required_error: "--model FILE.onnx is required (repeat it for an ensemble)" }).min(1),
  queue: z.string({ required_error: `--queue URL (or ${WORKER_ENV.queue}) is required` }).url("--queue must be a queue URL"),
  out: z.string({ required_error: "--out DIR|s3://bucket/prefix is required" }).min(1),
  labels: z.string().min(1).optional(),
  crops: z
    .enum(["1", "10", "144"], { message: "--crops must be one of: 1, 10, 144" })
    .default("144")
    .transform((value) => Number(value) as CropCount),
  batchSize: z
    .string()
    .regex(/^[1-9]\d*$/, "--batch-size must be a positive integer")
    .default(String(DEFAULT_BATCH_SIZE))
    .transform(Number),
  engine: engineFlag(),
  preprocess: choiceFlag("--preprocess", FLAVOURS).optional(),
  exifOrientation: z.boolean().default(false),
  maxPixels: positiveIntFlag("--max-pixels"),
  replace: z.boolean().default(false),
  runId: z.string().min(1).optional(),
  synsets: z.string({ required_error: `--synsets FILE (or ${WORKER_ENV.synsets}) is required` }).min(1),
});

/** `googlenet-eval plan ...`: prints one JSON line with the run id and counts. */
export async function planCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = parseFlags("plan", {
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      input: { type: "string" },
      model: { type: "string", multiple: true },
      queue: { type: "string" },
      out: { type: "string" },
      labels: { type: "string" },
      crops: { type: "string" },
      "batch-size": { type: "string" },
      engine: { type: "string" },
      preprocess: { type: "string" },
      "exif-orientation": { type: "boolean" },
      "max-pixels": { type: "string" },
      replace: { type: "boolean" },
      "run-id": { type: "string" },
      synsets: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const values = parsed.values;
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const result = Args.safeParse({
    input: values.input,
    model: values.model,
    queue: values.queue ?? env[WORKER_ENV.queue],
    out: values.out,
    labels: values.labels,
    crops: values.crops,
    batchSize: values["batch-size"],
    engine: values.engine,
    preprocess: values.preprocess,
    exifOrientation: values["exif-orientation"],
    maxPixels: values["max-pixels"],
    replace: values.replace,
    runId: values["run-id"],
    synsets: values.synsets ?? env[WORKER_ENV.synsets],
  });
  if (!result.success) throw new ConfigurationError(result.error.issues.map((issue) => issue.message).join("; "));
  const args = result.data;
  const planned = await planRun({
    input: args.input,
    out: args.out,
    queueUrl: args.queue,
    models: args.model,
    synsets: await readSynsetsUrl(args.synsets),
    crops: args.crops,
    batchSize: args.batchSize,
    engine: args.engine,
    applyExifOrientation: args.exifOrientation,
    replace: args.replace,
    ...(args.maxPixels !== undefined ? { maxPixels: args.maxPixels } : {}),
    ...(args.preprocess !== undefined ? { preprocess: args.preprocess } : {}),
    ...(args.labels !== undefined ? { labels: args.labels } : {}),
    ...(args.runId !== undefined ? { runId: args.runId } : {}),
  });
  const { labelWarnings, ...counts } = planned;
  if (labelWarnings !== undefined) process.stderr.write(`${labelWarnings}\n`);
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  if (planned.replaced > 0) process.stderr.write(`--replace: deleted ${planned.replaced} objects under ${args.out}\n`);
  process.stderr.write(
    `run ${planned.runId}: ${planned.images} images (${planned.labelled} labelled) in ${planned.batches} batches; ` +
      `manifest ${planned.manifestUrl} (digest ${planned.manifestDigest.slice(0, 16)})\n`,
  );
  return 0;
}

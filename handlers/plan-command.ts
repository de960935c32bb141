import { z } from "zod";
import { DEFAULT_MAX_PIXELS } from "../model/image/decode.js";
import { ConfigurationError } from "../model/errors.js";
import type { CropCount } from "../model/predict.js";
import { FLAVOURS } from "../model/preprocess.js";
import { DEFAULT_BATCH_SIZE, planRun } from "../queue/plan.js";
import { DEFAULT_BATCH_DEADLINE_SECONDS, FASTEST_CROPS_PER_SECOND, MAX_HIDDEN_SECONDS } from "../queue/queue-timing.js";
import { describeDiagnosis } from "../scoring/label-check.js";
import { checkSynsetsSource, readSynsetsUrl, SYNSETS_ENV, synsetsSource } from "./class-names.js";
import { WORKER_ENV } from "./worker-command.js";
import {
  choiceFlag,
  deprecationLine,
  engineFlag,
  OLD_SPELLINGS_UNTIL,
  parseFlags,
  positiveIntFlag,
  takeOldSpellings,
  usageError,
  wholeNumberFlag,
} from "./flags.js";

const HELP = `usage: googlenet-eval plan <images> --model FILE|s3://...onnx [--model ...] --queue URL --out DIR|s3://b/runs/RUN [options]

Lists the images under <images> (a folder or s3://bucket/prefix, with loose images and/or .tar
archives such as WebDataset shards, or one .tar archive), cuts them into batches, writes
<out>/manifest.json (run id, models with sha256, crops, decoding settings, labels, batch list,
code version) and sends one queue message per batch, carrying the manifest's digest. Workers
(\`googlenet-eval worker\`) score the batches into <out>/batches/<batch>.<digest>.jsonl;
\`googlenet-eval aggregate --out ...\` then writes results.jsonl and summary.json. An --out that
holds anything is refused (nothing is sent) unless --replace is given.

A tar archive is indexed once (streamed, with a progress line in bytes); its index is stored as
<out>/archives/<n>.json, and workers read each batch of its members with one ranged GET carrying
If-Match with the archive's ETag (an archive replaced after plan dead-letters its batches).
A .tar.gz or .tgz is refused (ranges need an uncompressed tar): gunzip it first.

options:
  --model FILE|s3://...    ONNX model; repeat for an ensemble (required)
  --queue URL              queue URL (default: $${WORKER_ENV.queue})
  --out DIR|s3://...       the run's folder; must be empty (required)
  --index-cache DIR|s3://...  keep archive indexes here, by ETag and size: a later plan of the same
                           archive reads its index from here instead of streaming the archive
  --replace                delete everything under --out first (after the images, labels and
                           models have been read and checked)
  --labels FILE|s3://...|none  Caffe val.txt, LOC_val_solution.csv or synset labels
                           (default: keys named ILSVRC2012_val_NNNNNNNN.* get the built-in ILSVRC 2012
                           validation labels, others a WNID like n01440764 in the key; none: WNIDs only)
  --classes FILE|s3://...  class subset (WNIDs or indices, one per line), e.g. ImageNet-A/-R's 200;
                           recorded in the manifest: workers restrict each crop's softmax to it
  --no-label-check         skip the label check (default: ~200 labelled images scored at 1 crop on
                           this CPU before anything is sent; when a known remapping of the labels,
                           e.g. off by one, explains them far better: refuse, exit 2, nothing sent)
  --crops N                1, 10 or 144 (default 144)
  --images-per-batch N     images per batch / queue message, 1 or more (default ${DEFAULT_BATCH_SIZE})
  --deadline S             the workers' --deadline ($${WORKER_ENV.deadline}, else ${DEFAULT_BATCH_DEADLINE_SECONDS}): batches that could
                           not be scored within it even at ${FASTEST_CROPS_PER_SECOND} crops/s per model are refused
  --engine NAME            tfjs, onnxruntime or auto, used by every worker (default auto)
  --preprocess NAME        bvlc or torchvision, for ONNX graphs not recognised as GoogLeNet
                           (engine onnxruntime or auto); recorded in the manifest
  --exif-orientation       rotate images by their EXIF orientation (default off, as ImageNet)
  --max-pixels N           larger images become error records, 1 or more (default ${DEFAULT_MAX_PIXELS})
  --run-id ID              run id (default: UTC time and a random suffix)
  --synsets FILE|s3://...  synset_words.txt for another label set (default: $${SYNSETS_ENV}, else
                           the 1000 ImageNet classes built in)
  -h, --help               show this help

Old spellings, accepted until ${OLD_SPELLINGS_UNTIL} with a warning: --input DIR (now the first
argument), --batch-size (now --images-per-batch).`;

/** Old flag names and the names that replace them. */
const OLD_SPELLINGS = { "batch-size": "images-per-batch" } as const;

const Args = z.object({
  input: z.string({ required_error: "the images are required: googlenet-eval plan <folder or s3://bucket/prefix> ..." }).min(1),
  model: z.array(z.string().min(1), { required_error: "--model FILE.onnx is required (repeat it for an ensemble)" }).min(1),
  queue: z.string({ required_error: `--queue URL (or ${WORKER_ENV.queue}) is required` }).url("--queue must be a queue URL"),
  out: z.string({ required_error: "--out DIR|s3://bucket/prefix is required" }).min(1, "--out must name a folder or s3://bucket/prefix"),
  labels: z.string().min(1, "--labels must name a file").optional(),
  crops: choiceFlag("--crops", ["1", "10", "144"] as const)
    .default("144")
    .transform((value) => Number(value) as CropCount),
  imagesPerBatch: wholeNumberFlag("--images-per-batch", 1).default(String(DEFAULT_BATCH_SIZE)),
  deadline: wholeNumberFlag(`--deadline / ${WORKER_ENV.deadline}`, 1, MAX_HIDDEN_SECONDS, " of seconds").default(String(DEFAULT_BATCH_DEADLINE_SECONDS)),
  engine: engineFlag(),
  preprocess: choiceFlag("--preprocess", FLAVOURS).optional(),
  exifOrientation: z.boolean().default(false),
  maxPixels: positiveIntFlag("--max-pixels"),
  replace: z.boolean().default(false),
  runId: z.string().min(1, "--run-id must not be empty").optional(),
  synsets: z.string().optional(),
  classes: z.string().min(1, "--classes must name a file").optional(),
  noLabelCheck: z.boolean().default(false),
  indexCache: z.string().min(1, "--index-cache must name a folder or s3://bucket/prefix").optional(),
});

/** Milliseconds between progress lines while an archive is indexed: a line a second would flood a CI log. */
const PROGRESS_EVERY_MS = 2000;

/** A progress line on stderr per archive being indexed, at most every PROGRESS_EVERY_MS and at its end. */
function indexProgress(stderr: NodeJS.WritableStream): (archive: string, bytes: number, size: number) => void {
  let last = 0;
  return (archive, bytes, size) => {
    const now = Date.now();
    if (bytes < size && now - last < PROGRESS_EVERY_MS) return;
    last = now;
    const share = size > 0 ? ` (${Math.floor((100 * bytes) / size)}%)` : "";
    stderr.write(`indexing ${archive}: ${bytes.toLocaleString("en-US")} of ${size.toLocaleString("en-US")} bytes${share}\n`);
  };
}

/** The images: the first argument, or the old --input, not both. */
function inputOf(positionals: readonly string[], input: string | undefined): string | undefined {
  if (positionals.length > 1) {
    throw new ConfigurationError(`expected one image folder, got ${positionals.length}: ${positionals.join(" ")}`);
  }
  if (input === undefined) return positionals[0];
  if (positionals.length > 0) throw new ConfigurationError("give the images once: as the first argument, without --input");
  process.stderr.write(deprecationLine("plan", "--input DIR", "the images as the first argument: googlenet-eval plan DIR ..."));
  return input;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** `googlenet-eval plan ...`: prints one JSON line with the run id and counts. */
export async function planCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = parseFlags("plan", {
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      input: { type: "string" },
      model: { type: "string", multiple: true },
      queue: { type: "string" },
      out: { type: "string" },
      labels: { type: "string" },
      crops: { type: "string" },
      "images-per-batch": { type: "string" },
      "batch-size": { type: "string" },
      deadline: { type: "string" },
      engine: { type: "string" },
      preprocess: { type: "string" },
      "exif-orientation": { type: "boolean" },
      "max-pixels": { type: "string" },
      replace: { type: "boolean" },
      "run-id": { type: "string" },
      synsets: { type: "string" },
      classes: { type: "string" },
      "no-label-check": { type: "boolean" },
      "index-cache": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (parsed.values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const values = takeOldSpellings("plan", parsed.values, OLD_SPELLINGS);
  const result = Args.safeParse({
    input: inputOf(parsed.positionals, values.input),
    model: values.model,
    queue: values.queue ?? env[WORKER_ENV.queue],
    out: values.out,
    labels: values.labels,
    crops: values.crops,
    imagesPerBatch: values["images-per-batch"],
    deadline: values.deadline ?? nonEmpty(env[WORKER_ENV.deadline]),
    engine: values.engine,
    preprocess: values.preprocess,
    exifOrientation: values["exif-orientation"],
    maxPixels: values["max-pixels"],
    replace: values.replace,
    runId: values["run-id"],
    synsets: values.synsets,
    classes: values.classes,
    noLabelCheck: values["no-label-check"],
    indexCache: values["index-cache"],
  });
  if (!result.success) throw usageError(result.error);
  const args = result.data;
  const synsets = synsetsSource(args.synsets, env);
  await checkSynsetsSource(synsets);
  const planned = await planRun({
    input: args.input,
    out: args.out,
    queueUrl: args.queue,
    models: args.model,
    synsets: await readSynsetsUrl(synsets.url),
    crops: args.crops,
    batchSize: args.imagesPerBatch,
    deadlineSeconds: args.deadline,
    engine: args.engine,
    applyExifOrientation: args.exifOrientation,
    replace: args.replace,
    labelCheck: !args.noLabelCheck,
    onIndexProgress: indexProgress(process.stderr),
    ...(args.indexCache !== undefined ? { indexCache: args.indexCache } : {}),
    ...(args.classes !== undefined ? { classes: args.classes } : {}),
    ...(args.maxPixels !== undefined ? { maxPixels: args.maxPixels } : {}),
    ...(args.preprocess !== undefined ? { preprocess: args.preprocess } : {}),
    ...(args.labels === "none" ? { builtInLabels: false } : args.labels !== undefined ? { labels: args.labels } : {}),
    ...(args.runId !== undefined ? { runId: args.runId } : {}),
  });
  const { labelWarnings, labelCheck, labelLayout, input, ...counts } = planned;
  process.stderr.write(`input: ${input}${planned.indexes && planned.indexes.reused > 0 ? ` (${planned.indexes.reused} index${planned.indexes.reused === 1 ? "" : "es"} from ${args.indexCache})` : ""}\n`);
  if (labelWarnings !== undefined) process.stderr.write(`${labelWarnings}\n`);
  process.stderr.write(`labels: ${labelLayout}\n`);
  if (labelCheck !== undefined) {
    process.stderr.write(`${describeDiagnosis(labelCheck)}\n`);
  }
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  if (planned.replaced > 0) process.stderr.write(`--replace: deleted ${planned.replaced} objects under ${args.out}\n`);
  process.stderr.write(
    `run ${planned.runId}: ${planned.images} images (${planned.labelled} labelled) in ${planned.batches} batches; ` +
      `manifest ${planned.manifestUrl} (digest ${planned.manifestDigest.slice(0, 16)})\n`,
  );
  return 0;
}

import { stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { BACKEND_CHOICES } from "../model/load.js";
import { ORT_DEVICES } from "../model/ort-engine.js";
import { FLAVOURS } from "../model/preprocess.js";
import { DEFAULT_INPUT_MAX_BYTES } from "../scoring/image-input.js";
import { runScoreJob } from "../scoring/score-job.js";
import { isS3Url } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { checkSynsetsSource, describeSynsets, SYNSETS_ENV, synsetsSource } from "./class-names.js";
import { choiceFlag, engineFlag, OLD_SPELLINGS_UNTIL, parseFlags, positiveIntFlag, takeOldSpellings, usageError } from "./flags.js";

/** Environment variable for --max-input-bytes. */
export const MAX_INPUT_BYTES_ENV = "GOOGLENET_EVAL_MAX_INPUT_BYTES";

const HELP = `usage: googlenet-eval score <images> --model FILE.onnx [--model FILE.onnx ...] [options]

Scores every image under <images> (a local folder or s3://bucket/prefix; recursively; .jpg .jpeg .png .webp in any case) with one
model, or several as an ensemble, and writes results.jsonl, run-header.json, summary.json, run.json
and report.html to --out. Running again with the same --out resumes: images already there are not
scored again; a run with other models, crops, labels or image settings is refused. A failed read
(denied, throttled, timed out) stops the run, to be resumed later; an image that does not decode
or is gone becomes an error record. Models, label and synsets files may be paths or s3:// URLs.
Classes are named from the 1000 ImageNet classes built into the package unless --synsets says otherwise.

options:
  --model FILE          ONNX model; repeat for an ensemble (required)
  --out DIR             output folder or s3://bucket/prefix (default ./results/<timestamp>)
  --labels FILE         Caffe val.txt, LOC_val_solution.csv or imagenet_2012_validation_synset_labels.txt
                        (default: a WNID like n01440764 in each file or folder name)
  --crops N             1, 10 or 144 (default 144); 10 also reports 1, 144 reports all three
  --engine NAME         tfjs, onnxruntime or auto (default auto: tfjs with native TensorFlow, else onnxruntime)
  --backend NAME        tfjs backend: auto, tensorflow, wasm or cpu (default auto)
  --preprocess NAME     bvlc or torchvision, for ONNX graphs not recognised as GoogLeNet (onnxruntime)
  --crops-per-call N    crops per engine call, packed across images, 1 or more (default 16)
  --threads N           onnxruntime threads, 1 or more (default: all cores)
  --device NAME         onnxruntime device: cpu or cuda (default cpu; cuda needs CUDA 12, cuDNN 9 and the CUDA add-on)
  --require-gpu         exit 1 unless the GPU loads (tfjs on native TensorFlow's GPU, or onnxruntime with --device cuda)
  --tfjs-workers N      tfjs worker threads on the wasm/cpu backends, one network each, 1 or more (default: all cores)
  --exif-orientation    rotate images by their EXIF orientation (default off, as ImageNet)
  --max-pixels N        refuse larger images as failed records, 1 or more (default 100000000)
  --max-input-bytes N   refuse larger image files as failed records, never read whole
                        (default: $${MAX_INPUT_BYTES_ENV}, else ${DEFAULT_INPUT_MAX_BYTES})
  --synsets FILE        synset_words.txt for another label set (default: $${SYNSETS_ENV}, else the
                        1000 ImageNet classes built in)
  -h, --help            show this help

Old spellings, accepted until ${OLD_SPELLINGS_UNTIL} with a warning: --batch (now --crops-per-call),
--workers (now --tfjs-workers).`;

/** Old flag names and the names that replace them. */
const OLD_SPELLINGS = { batch: "crops-per-call", workers: "tfjs-workers" } as const;

const Args = z.object({
  input: z.string({ required_error: "the images are required: googlenet-eval score <folder or s3://bucket/prefix> --model FILE.onnx" }),
  model: z
    .array(z.string().min(1), { required_error: "--model FILE.onnx is required (repeat it for an ensemble)" })
    .min(1, "--model FILE.onnx is required (repeat it for an ensemble)"),
  labels: z.string().min(1, "--labels must name a file").optional(),
  crops: choiceFlag("--crops", ["1", "10", "144"] as const)
    .default("144")
    .transform((value) => Number(value) as 1 | 10 | 144),
  engine: engineFlag(),
  backend: choiceFlag("--backend", BACKEND_CHOICES).optional(),
  preprocess: choiceFlag("--preprocess", FLAVOURS).optional(),
  out: z.string().min(1, "--out must name a folder or s3://bucket/prefix").optional(),
  "crops-per-call": positiveIntFlag("--crops-per-call"),
  threads: positiveIntFlag("--threads"),
  device: choiceFlag("--device", ORT_DEVICES).optional(),
  "require-gpu": z.boolean().default(false),
  "tfjs-workers": positiveIntFlag("--tfjs-workers"),
  "exif-orientation": z.boolean().default(false),
  "max-pixels": positiveIntFlag("--max-pixels"),
  "max-input-bytes": positiveIntFlag(`--max-input-bytes / ${MAX_INPUT_BYTES_ENV}`),
  synsets: z.string().optional(),
});
type ScoreArgs = z.infer<typeof Args>;

function parse(argv: string[], env: NodeJS.ProcessEnv): ScoreArgs | undefined {
  const parsed = parseFlags("score", {
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      model: { type: "string", multiple: true },
      labels: { type: "string" },
      crops: { type: "string" },
      engine: { type: "string" },
      backend: { type: "string" },
      preprocess: { type: "string" },
      out: { type: "string" },
      "crops-per-call": { type: "string" },
      batch: { type: "string" },
      threads: { type: "string" },
      device: { type: "string" },
      "require-gpu": { type: "boolean" },
      "tfjs-workers": { type: "string" },
      workers: { type: "string" },
      "exif-orientation": { type: "boolean" },
      "max-pixels": { type: "string" },
      "max-input-bytes": { type: "string" },
      synsets: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (parsed.values.help) return undefined;
  if (parsed.positionals.length > 1) {
    throw new ConfigurationError(`expected one image folder, got ${parsed.positionals.length}: ${parsed.positionals.join(" ")}`);
  }
  const values = takeOldSpellings("score", parsed.values, OLD_SPELLINGS);
  const fromEnv = env[MAX_INPUT_BYTES_ENV];
  const maxInputBytes = values["max-input-bytes"] ?? (fromEnv === undefined || fromEnv.trim() === "" ? undefined : fromEnv);
  const result = Args.safeParse({ ...values, "max-input-bytes": maxInputBytes, input: parsed.positionals[0] });
  if (!result.success) throw usageError(result.error);
  return result.data;
}

function timestamp(date: Date): string {
  // Colons are not allowed in Windows paths and confuse some shells' completion.
  return date.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
}

/** `googlenet-eval score <images> --model FILE.onnx ...`. */
export async function scoreCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = parse(argv, env);
  if (!args) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (!isS3Url(args.input)) {
    const folderStat = await stat(args.input).catch(() => undefined);
    if (!folderStat?.isDirectory()) throw new ConfigurationError(`image folder ${args.input}: no such folder`);
  }
  const synsets = synsetsSource(args.synsets, env);
  await checkSynsetsSource(synsets);
  const out = args.out ?? join("results", timestamp(new Date()));
  process.stderr.write(`results: ${out}\nclass names: ${describeSynsets(synsets)}\n`);
  await runScoreJob({
    input: openLocation(args.input),
    out,
    models: args.model,
    engine: args.engine,
    crops: args.crops,
    synsets: synsets.url,
    applyExifOrientation: args["exif-orientation"],
    ...(args.backend !== undefined ? { backend: args.backend } : {}),
    ...(args.preprocess !== undefined ? { preprocess: args.preprocess } : {}),
    ...(args.labels !== undefined ? { labels: args.labels } : {}),
    ...(args["crops-per-call"] !== undefined ? { batchCrops: args["crops-per-call"] } : {}),
    ...(args.threads !== undefined ? { threads: args.threads } : {}),
    ...(args.device !== undefined ? { device: args.device } : {}),
    ...(args["require-gpu"] ? { requireGpu: true } : {}),
    ...(args["tfjs-workers"] !== undefined ? { tfjsWorkers: args["tfjs-workers"] } : {}),
    ...(args["max-pixels"] !== undefined ? { maxPixels: args["max-pixels"] } : {}),
    ...(args["max-input-bytes"] !== undefined ? { inputMaxBytes: args["max-input-bytes"] } : {}),
  });
  return 0;
}

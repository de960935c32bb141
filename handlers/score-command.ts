import { stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { BACKEND_CHOICES } from "../model/load.js";
import { ORT_DEVICES } from "../model/ort-engine.js";
import { FLAVOURS } from "../model/preprocess.js";
import { runScoreJob } from "../scoring/score-job.js";
import { isS3Url, parseS3Url } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { choiceFlag, engineFlag, parseFlags, positiveIntFlag } from "./flags.js";

/** Environment variable naming a synset_words.txt when --synsets is not given. */
export const SYNSETS_ENV = "GOOGLENET_EVAL_SYNSETS";
const SYNSETS_FILE = "synset_words.txt";

const HELP = `usage: googlenet-eval score <folder> --model FILE.onnx [--model FILE.onnx ...] [options]

Scores every image under <folder> (a local folder or s3://bucket/prefix; recursively; .jpg .jpeg .png .webp in any case) with one
model, or several as an ensemble, and writes results.jsonl, run-header.json, summary.json, run.json
and report.html to --out. Running again with the same --out resumes: images already there are not
scored again; a run with other models, crops, labels or image settings is refused. A failed read
(denied, throttled, timed out) stops the run, to be resumed later; an image that does not decode
or is gone becomes an error record. Models, label and synsets files may be paths or s3:// URLs.

options:
  --model FILE        ONNX model; repeat for an ensemble (required)
  --labels FILE       Caffe val.txt, LOC_val_solution.csv or imagenet_2012_validation_synset_labels.txt
                      (default: a WNID like n01440764 in each file or folder name)
  --crops N           1, 10 or 144 (default 144); 10 also reports 1, 144 reports all three
  --engine NAME       tfjs, onnxruntime or auto (default auto: tfjs with native TensorFlow, else onnxruntime)
  --backend NAME      tfjs backend: auto, tensorflow, wasm or cpu (default auto)
  --preprocess NAME   bvlc or torchvision, for ONNX graphs not recognised as GoogLeNet (onnxruntime)
  --out DIR           output folder or s3://bucket/prefix (default ./results/<timestamp>)
  --batch N           crops per engine call, packed across images (default 16)
  --threads N         onnxruntime threads (default: all cores)
  --device NAME       onnxruntime device: cpu or cuda (default cpu; cuda needs CUDA 12, cuDNN 9 and the CUDA add-on)
  --require-gpu       exit 1 unless the GPU loads (tfjs on native TensorFlow's GPU, or onnxruntime with --device cuda)
  --workers N         tfjs worker threads on the wasm/cpu backends, one network each (default: all cores)
  --exif-orientation  rotate images by their EXIF orientation (default off, as ImageNet)
  --max-pixels N      refuse larger images as failed records (default 100000000)
  --synsets FILE      synset_words.txt (default: $${SYNSETS_ENV}, else one found beside --labels,
                      beside the first --model, in <folder> or in its parent)
  -h, --help          show this help`;

const Args = z.object({
  folder: z.string({ required_error: "the image folder is required: googlenet-eval score <folder> --model FILE.onnx" }),
  model: z
    .array(z.string().min(1))
    .min(1, "--model FILE.onnx is required (repeat it for an ensemble)"),
  labels: z.string().min(1).optional(),
  crops: choiceFlag("--crops", ["1", "10", "144"] as const)
    .default("144")
    .transform((value) => Number(value) as 1 | 10 | 144),
  engine: engineFlag(),
  backend: choiceFlag("--backend", BACKEND_CHOICES).optional(),
  preprocess: choiceFlag("--preprocess", FLAVOURS).optional(),
  out: z.string().min(1).optional(),
  batch: positiveIntFlag("--batch"),
  threads: positiveIntFlag("--threads"),
  device: choiceFlag("--device", ORT_DEVICES).optional(),
  "require-gpu": z.boolean().default(false),
  workers: positiveIntFlag("--workers"),
  "exif-orientation": z.boolean().default(false),
  "max-pixels": positiveIntFlag("--max-pixels"),
  synsets: z.string().min(1).optional(),
});
type ScoreArgs = z.infer<typeof Args>;

function parse(argv: string[]): ScoreArgs | undefined {
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
      batch: { type: "string" },
      threads: { type: "string" },
      device: { type: "string" },
      "require-gpu": { type: "boolean" },
      workers: { type: "string" },
      "exif-orientation": { type: "boolean" },
      "max-pixels": { type: "string" },
      synsets: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (parsed.values.help) return undefined;
  if (parsed.positionals.length > 1) {
    throw new ConfigurationError(`expected one image folder, got ${parsed.positionals.length}: ${parsed.positionals.join(" ")}`);
  }
  const result = Args.safeParse({ ...parsed.values, folder: parsed.positionals[0] });
  if (!result.success) throw new ConfigurationError(result.error.issues.map((issue) => issue.message).join("; "));
  return result.data;
}

/** Whether a path or s3:// URL names an existing file (object). */
async function fileExists(url: string): Promise<boolean> {
  if (isS3Url(url)) {
    const { bucket, key } = parseS3Url(url);
    return key !== "" && (await openLocation(`s3://${bucket}`).exists(key));
  }
  try {
    return (await stat(url)).isFile();
  } catch {
    return false;
  }
}

/** The file named `name` in the folder of `url` (a path, or an s3:// URL, where path.join would fold "//"). */
function beside(url: string, name: string): string {
  return isS3Url(url) ? `${url.slice(0, url.lastIndexOf("/"))}/${name}` : join(dirname(url), name);
}

/** The file named `name` inside folder `url`. */
function inside(url: string, name: string): string {
  return isS3Url(url) ? `${url.replace(/\/+$/, "")}/${name}` : join(url, name);
}

/**
 * Where class names come from: --synsets, else $GOOGLENET_EVAL_SYNSETS, else a synset_words.txt
 * beside the label file, beside the first model, in the image folder or in its parent (the
 * layout of ../shared/imagenet); each may be a path or an s3:// URL. An explicit setting that
 * does not exist is an error rather than a reason to keep looking.
 */
export async function findSynsets(args: {
  synsets?: string;
  labels?: string;
  models: readonly string[];
  folder?: string;
  env?: NodeJS.ProcessEnv;
}): Promise<string> {
  const env = args.env ?? process.env;
  if (args.synsets !== undefined) {
    if (await fileExists(args.synsets)) return args.synsets;
    throw new ConfigurationError(`--synsets ${args.synsets}: no such file`);
  }
  const fromEnv = env[SYNSETS_ENV];
  if (fromEnv) {
    if (await fileExists(fromEnv)) return fromEnv;
    throw new ConfigurationError(`${SYNSETS_ENV}=${fromEnv}: no such file`);
  }
  const folder = args.folder?.replace(/\/+$/, "");
  const candidates = [
    ...(args.labels !== undefined ? [beside(args.labels, SYNSETS_FILE)] : []),
    ...(args.models[0] !== undefined ? [beside(args.models[0], SYNSETS_FILE)] : []),
    ...(folder !== undefined
      ? [inside(folder, SYNSETS_FILE), isS3Url(folder) ? beside(folder, SYNSETS_FILE) : join(dirname(resolve(folder)), SYNSETS_FILE)]
      : []),
  ];
  const tried: string[] = [];
  for (const candidate of candidates) {
    if (tried.includes(candidate)) continue;
    tried.push(candidate);
    if (await fileExists(candidate)) return candidate;
  }
  throw new ConfigurationError(
    `no ${SYNSETS_FILE} found (needed for class names and WNIDs); looked for ${tried.join(", ")}. ` +
      `Pass --synsets FILE or set ${SYNSETS_ENV}=FILE`,
  );
}

function timestamp(date: Date): string {
  // Colons are not allowed in Windows paths and confuse some shells' completion.
  return date.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
}

/** `googlenet-eval score <folder> --model FILE.onnx ...`. */
export async function scoreCommand(argv: string[]): Promise<number> {
  const args = parse(argv);
  if (!args) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const remote = isS3Url(args.folder);
  if (!remote) {
    const folderStat = await stat(args.folder).catch(() => undefined);
    if (!folderStat?.isDirectory()) throw new ConfigurationError(`image folder ${args.folder}: no such folder`);
  }
  const synsets = await findSynsets({
    models: args.model,
    folder: args.folder,
    ...(args.synsets !== undefined ? { synsets: args.synsets } : {}),
    ...(args.labels !== undefined ? { labels: args.labels } : {}),
  });
  const out = args.out ?? join("results", timestamp(new Date()));
  process.stderr.write(`results: ${out}\nclass names: ${synsets}\n`);
  await runScoreJob({
    input: openLocation(args.folder),
    out,
    models: args.model,
    engine: args.engine,
    crops: args.crops,
    synsets,
    applyExifOrientation: args["exif-orientation"],
    ...(args.backend !== undefined ? { backend: args.backend } : {}),
    ...(args.preprocess !== undefined ? { preprocess: args.preprocess } : {}),
    ...(args.labels !== undefined ? { labels: args.labels } : {}),
    ...(args.batch !== undefined ? { batchCrops: args.batch } : {}),
    ...(args.threads !== undefined ? { threads: args.threads } : {}),
    ...(args.device !== undefined ? { device: args.device } : {}),
    ...(args["require-gpu"] ? { requireGpu: true } : {}),
    ...(args.workers !== undefined ? { tfjsWorkers: args.workers } : {}),
    ...(args["max-pixels"] !== undefined ? { maxPixels: args["max-pixels"] } : {}),
  });
  return 0;
}

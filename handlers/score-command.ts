import { isArchiveKey } from "../storage/archive/archive-object.js";
import { stat } from "node:fs/promises";
import { constants } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import { RunInterruptedError } from "../scoring/errors.js";
import { BACKEND_CHOICES } from "../model/load.js";
import { ORT_DEVICES } from "../model/ort/engine.js";
import { FLAVOURS } from "../model/preprocess.js";
import { DEFAULT_INPUT_MAX_BYTES } from "../scoring/image-input.js";
import { runScoreJob, type ScoreJobOptions } from "../scoring/score-job.js";
import { isS3Url } from "../storage/location.js";
import { openLocation } from "../storage/open-location.js";
import { checkSynsetsSource, describeSynsets, SYNSETS_ENV, synsetsSource } from "./class-names.js";
import { backendWithoutTfjs, choiceFlag, engineFlag, OLD_SPELLINGS_UNTIL, parseFlags, positiveIntFlag, takeOldSpellings, usageError } from "./flags.js";
import { graphEditsHelp, graphEditsSetting } from "./graph-edits.js";

/** Environment variable for --max-input-bytes. */
export const MAX_INPUT_BYTES_ENV = "GOOGLENET_EVAL_MAX_INPUT_BYTES";

const HELP = `usage: googlenet-eval score <images> --model FILE.onnx [--model FILE.onnx ...] [options]

Scores every image under <images> (a local folder or s3://bucket/prefix; recursively; .jpg .jpeg .png .webp in any case) with one
model, or several as an ensemble, and writes results.jsonl, run-header.json, summary.json, run.json
and report.html to --out. Running again with the same --out resumes: images already there are not
scored again; a run of another input (a moved folder is another) or with other models, crops, labels
or image settings is refused. <images> may also be a tar archive (.tar, or .tar.gz/.tgz locally), and
a folder or prefix may hold archives (WebDataset shards): their image members are scored in place,
keyed <archive>/<member path>, never extracted; a .cls member labels its sample's image. Images named
ILSVRC2012_val_NNNNNNNN get the built-in validation labels unless --labels is given. A failed read
(denied, throttled, timed out) stops the run, to be resumed later; an image that does not decode
or is gone becomes an error record. SIGTERM or Ctrl-C stops the run, dropping the image(s) in hand,
keeps the results so far (uploaded, for an S3 --out) and exits 143 or 130; a second one stops at once. Models, label and synsets files may be paths or s3:// URLs.
Classes are named from the 1000 ImageNet classes built into the package unless --synsets says otherwise.

options:
  --model FILE          ONNX model; repeat for an ensemble (required)
  --out DIR             output folder or s3://bucket/prefix (default ./results/<timestamp>)
  --labels FILE|none    Caffe val.txt, LOC_val_solution.csv or imagenet_2012_validation_synset_labels.txt
                        (default: images named ILSVRC2012_val_NNNNNNNN.* get the built-in ILSVRC 2012
                        validation labels, others a WNID like n01440764 in their file or folder name;
                        none: no built-in validation labels, WNIDs in names only)
  --real-labels FILE|none  ReaL labels (real.json: a list of 50,000 lists of class indices) reported
                        beside the labels for validation-named images (default: the built-in real.json
                        when any image has a validation name; none: no ReaL)
  --no-label-check      run on even when, after the first 200 labelled images, a known remapping of the labels
                        (off by one, folders "0".."999" sorted as strings) explains the predictions far better
                        than the labels as given (default: stop with exit code 2)
  --classes FILE        class subset (WNIDs or class indices, one per line), e.g. ImageNet-A/-R's 200: each crop's
                        softmax is restricted to it before averaging; errors and top-5 are over it (default: all 1000)
  --crops N             1, 10 or 144 (default 144); 10 also reports 1, 144 reports all three
  --engine NAME         tfjs, onnxruntime or auto (default auto: tfjs with native TensorFlow, else onnxruntime)
  --backend NAME        tfjs backend: auto, tensorflow, wasm or cpu (default auto); any but auto
                        needs --engine tfjs
  --preprocess NAME     bvlc or torchvision, for ONNX graphs not recognised as GoogLeNet (onnxruntime)
  --crops-per-call N    crops per engine call, packed across images, 1 or more (default 16)
  --threads N           onnxruntime threads, 1 or more (default: all cores)
  --device NAME         onnxruntime device: cpu or cuda (default cpu; cuda needs CUDA 12, cuDNN 9 and the CUDA add-on)
  --require-gpu         exit 1 unless the GPU loads (tfjs on native TensorFlow's GPU, or onnxruntime with --device cuda)
  --tfjs-workers N      tfjs worker threads on the wasm/cpu backends, one network each, 1 or more (default: all cores)
${graphEditsHelp(24)}
  --exif-orientation    rotate images by their EXIF orientation (default off, as ImageNet)
  --max-pixels N        larger images become error records, 1 or more (default 100000000)
  --max-input-bytes N   larger image files become error records, never read whole
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
  "real-labels": z.string().min(1, "--real-labels must name a file, or none").optional(),
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
  "no-graph-edits": z.boolean().default(false),
  "exif-orientation": z.boolean().default(false),
  "max-pixels": positiveIntFlag("--max-pixels"),
  "max-input-bytes": positiveIntFlag(`--max-input-bytes / ${MAX_INPUT_BYTES_ENV}`),
  synsets: z.string().optional(),
  "no-label-check": z.boolean().default(false),
  classes: z.string().min(1, "--classes must name a file").optional(),
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
      "real-labels": { type: "string" },
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
      "no-graph-edits": { type: "boolean" },
      "exif-orientation": { type: "boolean" },
      "max-pixels": { type: "string" },
      "max-input-bytes": { type: "string" },
      synsets: { type: "string" },
      "no-label-check": { type: "boolean" },
      classes: { type: "string" },
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
  const pairing = backendWithoutTfjs(result.data.engine, result.data.backend);
  if (pairing !== undefined) throw new ConfigurationError(pairing);
  return result.data;
}

function timestamp(date: Date): string {
  // Colons are not allowed in Windows paths and confuse some shells' completion.
  return date.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
}

/** The signals that stop a run with its results kept. */
const STOP_SIGNALS = ["SIGTERM", "SIGINT"] as const;

/**
 * An AbortController aborted (with the signal's name) by the first SIGTERM or SIGINT. Both
 * listeners go at once, so a second signal has its default effect: a user who presses Ctrl-C
 * again does not wait for the upload.
 */
function abortOnStopSignals(stderr: NodeJS.WritableStream): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  const release = (): void => {
    for (const name of STOP_SIGNALS) process.off(name, stop);
  };
  function stop(name: NodeJS.Signals): void {
    release();
    stderr.write(`\n${name}: stopping, keeping the results so far (send it again to stop at once)\n`);
    controller.abort(name);
  }
  for (const name of STOP_SIGNALS) process.on(name, stop);
  return { signal: controller.signal, release };
}

/** The shell's exit code for a process ended by `name`: 128 plus its number (SIGINT 130, SIGTERM 143). */
function signalExitCode(name: string): number {
  const number = (constants.signals as Record<string, number | undefined>)[name];
  return number === undefined ? 1 : 128 + number;
}

/** `googlenet-eval score <images> --model FILE.onnx ...`. */
export async function scoreCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = parse(argv, env);
  if (!args) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const graphEdits = graphEditsSetting(args["no-graph-edits"], env);
  if (!isS3Url(args.input)) {
    const folderStat = await stat(args.input).catch(() => undefined);
    const archive = folderStat?.isFile() === true && isArchiveKey(args.input);
    if (!folderStat?.isDirectory() && !archive) throw new ConfigurationError(`image folder ${args.input}: no such folder (nor a .tar, .tar.gz or .tgz archive)`);
  }
  const synsets = synsetsSource(args.synsets, env);
  await checkSynsetsSource(synsets);
  const out = args.out ?? join("results", timestamp(new Date()));
  process.stderr.write(`results: ${out}\nclass names: ${describeSynsets(synsets)}\n`);
  const stop = abortOnStopSignals(process.stderr);
  try {
    await runScoreJob(scoreJobOptions(args, out, synsets.url, stop.signal, graphEdits));
  } catch (error) {
    if (!(error instanceof RunInterruptedError)) throw error;
    process.stderr.write(`googlenet-eval score: ${error.message}\n`);
    const code = signalExitCode(error.stoppedBy);
    // Reads abandoned by the stop (a stalled GET) may keep the event loop alive until their own
    // timeout; the results are saved, so the process ends now, as the user asked.
    setTimeout(() => process.exit(code), 2000).unref();
    return code;
  } finally {
    stop.release();
  }
  return 0;
}

function scoreJobOptions(args: ScoreArgs, out: string, synsets: string, signal: AbortSignal, graphEdits: boolean): ScoreJobOptions {
  return {
    input: openLocation(args.input),
    out,
    models: args.model,
    engine: args.engine,
    crops: args.crops,
    synsets,
    applyExifOrientation: args["exif-orientation"],
    labelCheck: !args["no-label-check"],
    ...(args.backend !== undefined ? { backend: args.backend } : {}),
    ...(args.preprocess !== undefined ? { preprocess: args.preprocess } : {}),
    ...(args.labels === "none" ? { builtInLabels: false } : args.labels !== undefined ? { labels: args.labels } : {}),
    ...(args["real-labels"] !== undefined ? { realLabels: args["real-labels"] === "none" ? null : args["real-labels"] } : {}),
    ...(args.classes !== undefined ? { classes: args.classes } : {}),
    ...(args["crops-per-call"] !== undefined ? { batchCrops: args["crops-per-call"] } : {}),
    ...(args.threads !== undefined ? { threads: args.threads } : {}),
    ...(args.device !== undefined ? { device: args.device } : {}),
    ...(args["require-gpu"] ? { requireGpu: true } : {}),
    ...(args["tfjs-workers"] !== undefined ? { tfjsWorkers: args["tfjs-workers"] } : {}),
    ...(graphEdits ? {} : { graphEdits: false }),
    ...(args["max-pixels"] !== undefined ? { maxPixels: args["max-pixels"] } : {}),
    ...(args["max-input-bytes"] !== undefined ? { inputMaxBytes: args["max-input-bytes"] } : {}),
    signal,
  };
}

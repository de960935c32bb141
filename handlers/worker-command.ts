import { z } from "zod";
import { DEFAULT_INPUT_MAX_BYTES } from "../scoring/image-input.js";
import { BackendUnavailableError, ConfigurationError } from "../model/errors.js";
import { DeadlineExceededError } from "../queue/message-errors.js";
import type { CropCount } from "../model/predict.js";
import type { Synsets } from "../model/synsets.js";
import { DEFAULT_BATCH_DEADLINE_SECONDS, DEFAULT_STOP_TIMEOUT_SECONDS, HEARTBEAT_SECONDS, MAX_HIDDEN_SECONDS } from "../queue/queue-timing.js";
import { VisibilityLostError } from "../queue/held-message.js";
import { taskProtectionFromEnvironment } from "../queue/task-protection.js";
import { runWorker, type WorkerOptions } from "../queue/worker.js";
import { DEFAULT_DROP_MAX_PIXELS } from "../queue/drop-job.js";
import { BACKEND_CHOICES } from "../model/load.js";
import { ORT_DEVICES } from "../model/ort/engine.js";
import { checkSynsetsSource, readSynsetsUrl, SYNSETS_ENV, synsetsSource, type SynsetsSource } from "./class-names.js";
import {
  backendWithoutTfjs,
  choiceFlag,
  deprecationLine,
  engineFlag,
  OLD_SPELLINGS_UNTIL,
  parseFlags,
  positiveIntFlag,
  usageError,
  wholeNumberFlag,
  type Warn,
} from "./flags.js";
import { GRAPH_EDITS_ENV, graphEditsHelp, graphEditsSetting } from "./graph-edits.js";

/** Environment variables the worker reads when the matching flag is absent (the ECS task sets them). */
export const WORKER_ENV = {
  queue: "QUEUE_URL",
  model: "DEFAULT_MODEL",
  crops: "DEFAULT_CROPS",
  dropOut: "DROP_OUTPUT",
  /** synset_words.txt for another label set; without it, the 1000 ImageNet classes built in. */
  synsets: SYNSETS_ENV,
  visibilityTimeout: "VISIBILITY_TIMEOUT_SECONDS",
  /** Dropped images with more pixels become error records; without it DEFAULT_DROP_MAX_PIXELS. */
  dropMaxPixels: "DROP_MAX_PIXELS",
  /** s3://bucket/prefix/ whose drop events the worker honours; without it no drop event is. */
  dropInput: "DROP_INPUT",
  /** Seconds one batch may take before the worker hands it back and exits non-zero. */
  deadline: "BATCH_DEADLINE_SECONDS",
  /** "true": exit non-zero, with the reason, when the GPU backend or device does not load. */
  requireGpu: "REQUIRE_GPU",
  /** tfjs or onnxruntime for the drop folder (batches take their manifest's). */
  engine: "ENGINE",
  /** onnxruntime's device: cuda or cpu. */
  device: "DEVICE",
  /** File the receive loop rewrites on every turn; the container health check reads its age. */
  healthFile: "HEALTH_FILE",
  /** Seconds between SIGTERM and SIGKILL (the task's stopTimeout), for finishing the batch in hand. */
  stopTimeout: "STOP_TIMEOUT_SECONDS",
  /** Crops per engine call. */
  cropsPerCall: "CROPS_PER_CALL",
  /** onnxruntime threads. */
  threads: "THREADS",
  /** Largest batch input object read, in bytes. */
  maxInputBytes: "MAX_INPUT_BYTES",
  /** tfjs backend: auto, tensorflow, wasm or cpu. */
  backend: "TFJS_BACKEND",
  /** "off": onnxruntime runs the ONNX file as stored, without the graph edits (the same for score). */
  graphEdits: GRAPH_EDITS_ENV,
} as const;

/**
 * Ranges of the timing settings, as queue/worker.ts's resolveWorkerTiming checks them: checked
 * here too, so a bad value is a usage error naming the flag and its variable.
 */
const MAX_SECONDS = MAX_HIDDEN_SECONDS;
const MIN_VISIBILITY = 2;
const MIN_DEADLINE = 1;
const MIN_STOP_TIMEOUT = 1;
const MAX_WAIT = 20;

const HELP = `usage: googlenet-eval worker --queue URL [options]

Takes messages from an SQS queue, one at a time: batches planned by \`googlenet-eval plan\`
(results to <out>/batches/) and S3 event notifications of the drop folder (one
<drop-out>/<key>.json per new image). Logs one JSON line per event.
Failures: a bad image is an error record; a storage fault or a broken model fails the message,
which comes back after a delay that doubles with each receive (then the dead-letter queue); a
malformed message, or an event outside --drop-input, goes to the dead-letter queue at once; a
message not done within --deadline is handed back and the worker exits 1, as it does when failing
heartbeats let the message's visibility run out (another worker may have it). With --require-gpu
the GPU is started before the first receive. SIGTERM: the message in hand is finished if it fits
in --stop-timeout, handed back otherwise; then exit 0.

options (each flag falls back to the environment variable named):
  --queue URL                 queue URL ($${WORKER_ENV.queue})
  --until-empty               exit once no message is visible, delayed or in flight
  --drop-input s3://B/P/      the prefix whose S3 events are honoured ($${WORKER_ENV.dropInput}); without it none are
  --model FILE|s3://...       drop-folder model ($${WORKER_ENV.model})
  --crops N                   drop-folder crops: 1, 10 or 144 ($${WORKER_ENV.crops}, else 144)
  --drop-out DIR|s3://...     drop-folder output prefix ($${WORKER_ENV.dropOut})
  --drop-max-pixels N         drop-folder images with more pixels become error records, 1 or more
                              ($${WORKER_ENV.dropMaxPixels}, else ${DEFAULT_DROP_MAX_PIXELS}; batches use their manifest's)
  --synsets FILE|s3://...     synset_words.txt for another label set ($${WORKER_ENV.synsets}, else the 1000 ImageNet classes built in)
  --engine NAME               drop-folder engine: tfjs, onnxruntime or auto ($${WORKER_ENV.engine}, else auto; batches use their manifest's)
  --backend NAME              tfjs backend: auto, tensorflow, wasm or cpu ($${WORKER_ENV.backend}, else auto); any but
                              auto needs --engine tfjs for the drop folder, and fails batches planned with --engine auto
  --threads N                 onnxruntime threads, 1 or more ($${WORKER_ENV.threads}, else all cores)
  --device NAME               onnxruntime device: cpu or cuda ($${WORKER_ENV.device}, else cpu)
${graphEditsHelp(30)}
  --crops-per-call N          crops per engine call, 1 or more ($${WORKER_ENV.cropsPerCall}, else the scorer's 16)
  --max-input-bytes N         larger batch inputs become error records, never read whole ($${WORKER_ENV.maxInputBytes}, else ${DEFAULT_INPUT_MAX_BYTES})
  --require-gpu               exit 1 with the reason unless the GPU loads: tfjs on native TensorFlow's GPU, or
                              onnxruntime with --device cuda ($${WORKER_ENV.requireGpu}=true)
  --deadline S                seconds one message may take, ${MIN_DEADLINE} to ${MAX_SECONDS} ($${WORKER_ENV.deadline}, else ${DEFAULT_BATCH_DEADLINE_SECONDS})
  --visibility-timeout S      seconds a held message stays hidden, ${MIN_VISIBILITY} to ${MAX_SECONDS} ($${WORKER_ENV.visibilityTimeout}, else the queue's own);
                              with --deadline at most ${MAX_SECONDS} s together: SQS hides a message for 12 hours at most
  --heartbeat S               seconds between visibility extensions, 1 to the timeout minus 1 (else the smaller of ${HEARTBEAT_SECONDS} and a fifth of the timeout)
  --stop-timeout S            seconds between SIGTERM and SIGKILL, ${MIN_STOP_TIMEOUT} to ${MAX_SECONDS} ($${WORKER_ENV.stopTimeout}, else ${DEFAULT_STOP_TIMEOUT_SECONDS})
  --on-stop MODE              fit, finish or abandon the message in hand on SIGTERM (default fit)
  --health-file PATH          rewritten on every turn of the loop, for a health check ($${WORKER_ENV.healthFile})
  --wait S                    long-poll seconds, 0..20 (default 20)
  --model-cache N             models kept loaded, 1 or more (default 2)
  -h, --help                  show this help

Old spelling, accepted until ${OLD_SPELLINGS_UNTIL} with a warning: --finish-on-stop (now --on-stop finish).`;

const seconds = (name: string, min: number, max = MAX_SECONDS) => wholeNumberFlag(name, min, max, " of seconds").optional();

const HEARTBEAT_RANGE = "--heartbeat must be from 1 to the visibility timeout minus 1";

const TRUE_WORDS = ["1", "true", "yes"];
const FALSE_WORDS = ["", "0", "false", "no"];

const Settings = z
  .object({
    queue: z.string({ required_error: `--queue URL (or ${WORKER_ENV.queue}) is required` }).url(`--queue / ${WORKER_ENV.queue} must be a queue URL`),
    model: z.string().min(1).optional(),
    crops: z
      .enum(["1", "10", "144"], { message: `--crops / ${WORKER_ENV.crops} must be one of: 1, 10, 144` })
      .default("144")
      .transform((value) => Number(value) as CropCount),
    dropOut: z.string().min(1).optional(),
    dropMaxPixels: positiveIntFlag(`--drop-max-pixels / ${WORKER_ENV.dropMaxPixels}`),
    dropInput: z.string().regex(/^s3:\/\/[^/]+/, `--drop-input / ${WORKER_ENV.dropInput} must be s3://bucket/prefix/`).optional(),
    engine: engineFlag(`--engine / ${WORKER_ENV.engine}`),
    backend: choiceFlag(`--backend / ${WORKER_ENV.backend}`, BACKEND_CHOICES).optional(),
    threads: positiveIntFlag(`--threads / ${WORKER_ENV.threads}`),
    device: choiceFlag(`--device / ${WORKER_ENV.device}`, ORT_DEVICES).optional(),
    cropsPerCall: positiveIntFlag(`--crops-per-call / ${WORKER_ENV.cropsPerCall}`),
    maxInputBytes: positiveIntFlag(`--max-input-bytes / ${WORKER_ENV.maxInputBytes}`),
    requireGpu: z
      .string()
      .refine((value) => [...TRUE_WORDS, ...FALSE_WORDS].includes(value.toLowerCase()), `${WORKER_ENV.requireGpu} must be true or false`)
      .transform((value) => TRUE_WORDS.includes(value.toLowerCase()))
      .default("false"),
    deadline: seconds(`--deadline / ${WORKER_ENV.deadline}`, MIN_DEADLINE),
    visibilityTimeout: seconds(`--visibility-timeout / ${WORKER_ENV.visibilityTimeout}`, MIN_VISIBILITY),
    heartbeat: z
      .string()
      .regex(/^\d+$/, HEARTBEAT_RANGE)
      .transform(Number)
      .refine((value) => value >= 1 && value < MAX_SECONDS, HEARTBEAT_RANGE)
      .optional(),
    stopTimeout: seconds(`--stop-timeout / ${WORKER_ENV.stopTimeout}`, MIN_STOP_TIMEOUT),
    onStop: z.enum(["fit", "finish", "abandon"], { message: "--on-stop must be one of: fit, finish, abandon" }).default("fit"),
    healthFile: z.string().min(1).optional(),
    wait: seconds("--wait", 0, MAX_WAIT),
    modelCache: positiveIntFlag("--model-cache"),
    untilEmpty: z.boolean().default(false),
  })
  .refine((settings) => (settings.model === undefined) === (settings.dropOut === undefined), {
    message:
      `the drop folder needs both --model (${WORKER_ENV.model}) and --drop-out (${WORKER_ENV.dropOut}); ` +
      "give both, or neither for a batch-only worker",
  })
  .refine((settings) => settings.dropInput === undefined || settings.model !== undefined, {
    message: `--drop-input (${WORKER_ENV.dropInput}) needs --model and --drop-out for the results`,
  })
  .refine((settings) => settings.dropMaxPixels === undefined || settings.model !== undefined, {
    message: `--drop-max-pixels (${WORKER_ENV.dropMaxPixels}) is a drop-folder setting: it needs --model and --drop-out`,
  })
  .superRefine((settings, context) => {
    // Only the drop folder runs the engine named here; batches run their manifest's.
    const pairing =
      settings.model === undefined
        ? undefined
        : backendWithoutTfjs(settings.engine, settings.backend, {
            engine: `--engine / ${WORKER_ENV.engine}`,
            backend: `--backend / ${WORKER_ENV.backend}`,
          });
    if (pairing !== undefined) context.addIssue({ code: "custom", message: pairing });
    const { heartbeat, visibilityTimeout } = settings;
    if (heartbeat !== undefined && visibilityTimeout !== undefined && heartbeat >= visibilityTimeout) {
      context.addIssue({ code: "custom", message: `${HEARTBEAT_RANGE} (1 to ${visibilityTimeout - 1} here)` });
    }
    const deadline = settings.deadline ?? DEFAULT_BATCH_DEADLINE_SECONDS;
    const hidden = deadline + (visibilityTimeout ?? MIN_VISIBILITY);
    if (hidden > MAX_SECONDS) {
      // A heartbeat just before the deadline asks for one more visibility timeout; SQS refuses any past 12 hours from the receive.
      context.addIssue({
        code: "custom",
        message:
          `--deadline (${WORKER_ENV.deadline}) ${deadline} s plus --visibility-timeout (${WORKER_ENV.visibilityTimeout}) ` +
          `${visibilityTimeout ?? `at least ${MIN_VISIBILITY}`} s is ${hidden} s, more than the ${MAX_SECONDS} s (12 hours) SQS keeps a received ` +
          `message hidden: the last heartbeats would be refused and the message would reappear mid-work; ` +
          `give --deadline at most ${MAX_SECONDS - (visibilityTimeout ?? MIN_VISIBILITY)} or a shorter --visibility-timeout`,
      });
    }
  });

/** The worker's settings, validated; class names from --synsets, the environment or the built-in list. */
export type WorkerSettings = z.infer<typeof Settings> & { readonly synsets: SynsetsSource; readonly graphEdits: boolean };

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** The stop mode, from --on-stop or its old spelling --finish-on-stop (with a warning line). */
function onStopMode(values: { readonly "on-stop"?: string | undefined; readonly "finish-on-stop"?: boolean | undefined }, warn: Warn): string | undefined {
  if (values["finish-on-stop"] !== true) return values["on-stop"];
  if (values["on-stop"] !== undefined) {
    throw new ConfigurationError("--finish-on-stop and --on-stop are the same setting; give only --on-stop");
  }
  warn(deprecationLine("worker", "--finish-on-stop", "--on-stop finish"));
  return "finish";
}

/**
 * Flags first, then the environment; validated once, failing with the flag and variable names.
 * Old spellings are taken with one line each to `warn` (default: stderr).
 */
export function parseWorkerArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  warn: Warn = (line) => process.stderr.write(line),
): WorkerSettings | undefined {
  const parsed = parseFlags("worker", {
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      queue: { type: "string" },
      "until-empty": { type: "boolean" },
      model: { type: "string" },
      crops: { type: "string" },
      "drop-out": { type: "string" },
      "drop-input": { type: "string" },
      "drop-max-pixels": { type: "string" },
      synsets: { type: "string" },
      engine: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      device: { type: "string" },
      "crops-per-call": { type: "string" },
      "no-graph-edits": { type: "boolean" },
      "max-input-bytes": { type: "string" },
      "require-gpu": { type: "boolean" },
      deadline: { type: "string" },
      "visibility-timeout": { type: "string" },
      heartbeat: { type: "string" },
      "stop-timeout": { type: "string" },
      "on-stop": { type: "string" },
      "finish-on-stop": { type: "boolean" },
      "health-file": { type: "string" },
      wait: { type: "string" },
      "model-cache": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const values = parsed.values;
  if (values.help) return undefined;
  const fromEnv = (name: keyof typeof WORKER_ENV): string | undefined => nonEmpty(env[WORKER_ENV[name]]);
  const result = Settings.safeParse({
    queue: values.queue ?? fromEnv("queue"),
    model: values.model ?? fromEnv("model"),
    crops: values.crops ?? fromEnv("crops"),
    dropOut: values["drop-out"] ?? fromEnv("dropOut"),
    dropInput: values["drop-input"] ?? fromEnv("dropInput"),
    dropMaxPixels: values["drop-max-pixels"] ?? fromEnv("dropMaxPixels"),
    engine: values.engine ?? fromEnv("engine"),
    backend: values.backend ?? fromEnv("backend"),
    threads: values.threads ?? fromEnv("threads"),
    device: values.device ?? fromEnv("device"),
    cropsPerCall: values["crops-per-call"] ?? fromEnv("cropsPerCall"),
    maxInputBytes: values["max-input-bytes"] ?? fromEnv("maxInputBytes"),
    requireGpu: values["require-gpu"] ? "true" : fromEnv("requireGpu"),
    deadline: values.deadline ?? fromEnv("deadline"),
    visibilityTimeout: values["visibility-timeout"] ?? fromEnv("visibilityTimeout"),
    heartbeat: values.heartbeat,
    stopTimeout: values["stop-timeout"] ?? fromEnv("stopTimeout"),
    onStop: onStopMode(values, warn),
    healthFile: values["health-file"] ?? fromEnv("healthFile"),
    wait: values.wait,
    modelCache: values["model-cache"],
    untilEmpty: values["until-empty"],
  });
  if (!result.success) throw usageError(result.error);
  return { ...result.data, synsets: synsetsSource(values.synsets, env), graphEdits: graphEditsSetting(values["no-graph-edits"], env) };
}

/** The worker options for parsed settings (clients and signal are added by the caller). */
export function workerOptionsFrom(settings: WorkerSettings, synsets: Synsets): WorkerOptions {
  const optional = <K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> =>
    (value === undefined ? {} : { [key]: value }) as Partial<Record<K, V>>;
  return {
    queueUrl: settings.queue,
    classNames: synsets.names,
    untilEmpty: settings.untilEmpty,
    onStop: settings.onStop,
    engineSettings: {
      ...optional("threads", settings.threads),
      ...optional("backend", settings.backend),
      ...optional("device", settings.device),
      ...(settings.requireGpu ? { requireGpu: true } : {}),
      ...(settings.graphEdits ? {} : { graphEdits: false }),
    },
    ...optional("visibilityTimeoutSeconds", settings.visibilityTimeout),
    ...optional("heartbeatSeconds", settings.heartbeat),
    ...optional("deadlineSeconds", settings.deadline),
    ...optional("stopTimeoutSeconds", settings.stopTimeout),
    ...optional("waitTimeSeconds", settings.wait),
    ...optional("modelCacheSize", settings.modelCache),
    ...optional("cropsPerCall", settings.cropsPerCall),
    ...optional("inputMaxBytes", settings.maxInputBytes),
    ...optional("healthFile", settings.healthFile),
    ...optional("dropInput", settings.dropInput),
    ...(settings.model !== undefined && settings.dropOut !== undefined
      ? {
          drop: {
            model: settings.model,
            engine: settings.engine,
            crops: settings.crops,
            out: settings.dropOut,
            ...optional("maxPixels", settings.dropMaxPixels),
          },
        }
      : {}),
  };
}

/**
 * --require-gpu with onnxruntime names its GPU through --device cuda. The GPU itself is started
 * by runWorker (queue/gpu-check.ts) before the first receive, for either engine.
 */
function checkGpuSettings(settings: WorkerSettings): void {
  if (settings.requireGpu && settings.engine === "onnxruntime" && settings.device !== "cuda") {
    throw new ConfigurationError("--require-gpu with --engine onnxruntime needs --device cuda");
  }
}

/** `googlenet-eval worker ...`: runs until SIGTERM/SIGINT (or an empty queue with --until-empty). */
export async function workerCommand(argv: string[]): Promise<number> {
  const settings = parseWorkerArgs(argv);
  if (!settings) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  checkGpuSettings(settings);
  await checkSynsetsSource(settings.synsets);
  const synsets = await readSynsetsUrl(settings.synsets.url);
  const controller = new AbortController();
  const stop = (signal: NodeJS.Signals): void => {
    process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), event: "stop-requested", worker: process.pid, signal })}\n`);
    controller.abort();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  try {
    await runWorker({
      ...workerOptionsFrom(settings, synsets),
      signal: controller.signal,
      protection: taskProtectionFromEnvironment(),
    });
  } catch (error) {
    if (settings.heartbeat !== undefined && error instanceof ConfigurationError && error.cause instanceof RangeError) {
      // The queue's own visibility timeout, read at start, is shorter than the heartbeat given.
      throw new ConfigurationError(`${HEARTBEAT_RANGE}: ${error.message}`, { cause: error });
    }
    if (error instanceof DeadlineExceededError || error instanceof VisibilityLostError || error instanceof BackendUnavailableError) {
      // The work given up (a stalled read) may keep the event loop alive until its own timeout,
      // though it can no longer write or delete; the task must end now so ECS starts a fresh one.
      setTimeout(() => process.exit(1), 2000).unref();
    }
    throw error;
  } finally {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
  }
  return 0;
}

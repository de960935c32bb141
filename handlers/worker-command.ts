import type { S3Client } from "@aws-sdk/client-s3";
import { z } from "zod";
import { ConfigurationError } from "../model/errors.js";
import type { CropCount } from "../model/predict.js";
import { parseSynsets, type Synsets } from "../model/synsets.js";
import { readUrl } from "../pipeline/s3-location.js";
import { HEARTBEAT_SECONDS, VISIBILITY_TIMEOUT_SECONDS } from "../pipeline/queue-timing.js";
import { taskProtectionFromEnvironment } from "../pipeline/task-protection.js";
import { runWorker, type WorkerOptions } from "../pipeline/worker.js";
import { engineFlag, parseFlags } from "./flags.js";

/** Environment variables the worker reads when the matching flag is absent (the ECS task sets them). */
export const WORKER_ENV = {
  queue: "QUEUE_URL",
  model: "DEFAULT_MODEL",
  crops: "DEFAULT_CROPS",
  dropOut: "DROP_OUTPUT",
  synsets: "GOOGLENET_EVAL_SYNSETS",
  visibilityTimeout: "VISIBILITY_TIMEOUT_SECONDS",
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
} as const;

const HELP = `usage: googlenet-eval worker --queue URL [--until-empty] [--model FILE|s3://... --crops N --drop-out s3://bucket/prefix]

Takes messages from an SQS queue, one at a time: batches planned by \`googlenet-eval plan\`
(results to <out>/batches/<batch>.jsonl) and S3 event notifications of the drop folder (one
<drop-out>/<key>.json per new image). Logs one JSON line per batch. SIGTERM stops it: the batch
in hand is handed back to the queue (or finished with --finish-on-stop), then it exits 0.

options:
  --queue URL                 queue URL (default: $${WORKER_ENV.queue})
  --until-empty               exit once no message is visible, delayed or in flight
  --model FILE|s3://...       drop-folder model (default: $${WORKER_ENV.model})
  --crops N                   drop-folder crops: 1, 10 or 144 (default: $${WORKER_ENV.crops}, else 144)
  --drop-out DIR|s3://...     drop-folder output prefix (default: $${WORKER_ENV.dropOut})
  --synsets FILE|s3://...     synset_words.txt (default: $${WORKER_ENV.synsets}; required)
  --engine NAME               drop-folder engine: tfjs, onnxruntime or auto (default auto; batches use their manifest's)
  --visibility-timeout S      seconds a held message stays hidden (default: $${WORKER_ENV.visibilityTimeout}, else ${VISIBILITY_TIMEOUT_SECONDS})
  --heartbeat S               seconds between visibility extensions (default: the smaller of ${HEARTBEAT_SECONDS} and a fifth of the timeout)
  --wait S                    long-poll seconds, 0..20 (default 20)
  --model-cache N             models kept loaded (default 2)
  --finish-on-stop            on SIGTERM finish the current batch instead of handing it back
  -h, --help                  show this help`;

const seconds = (name: string) =>
  z
    .string()
    .regex(/^\d+$/, `${name} must be a whole number of seconds`)
    .transform(Number)
    .optional();

const Settings = z
  .object({
    queue: z.string({ required_error: `--queue URL (or ${WORKER_ENV.queue}) is required` }).url(`--queue / ${WORKER_ENV.queue} must be a queue URL`),
    model: z.string().min(1).optional(),
    crops: z
      .enum(["1", "10", "144"], { message: `--crops / ${WORKER_ENV.crops} must be one of: 1, 10, 144` })
      .default("144")
      .transform((value) => Number(value) as CropCount),
    dropOut: z.string().min(1).optional(),
    synsets: z.string({ required_error: `--synsets FILE (or ${WORKER_ENV.synsets}) is required for class names` }).min(1),
    engine: engineFlag(),
    visibilityTimeout: seconds(`--visibility-timeout / ${WORKER_ENV.visibilityTimeout}`),
    heartbeat: seconds("--heartbeat"),
    wait: seconds("--wait"),
    modelCache: z.string().regex(/^[1-9]\d*$/, "--model-cache must be a positive integer").transform(Number).optional(),
    untilEmpty: z.boolean().default(false),
    finishOnStop: z.boolean().default(false),
  })
  .refine((settings) => (settings.model === undefined) === (settings.dropOut === undefined), {
    message:
      `the drop folder needs both --model (${WORKER_ENV.model}) and --drop-out (${WORKER_ENV.dropOut}); ` +
      "give both, or neither for a batch-only worker",
  });

export type WorkerSettings = z.infer<typeof Settings>;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** Flags first, then the environment; validated once, failing with the flag and variable names. */
export function parseWorkerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): WorkerSettings | undefined {
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
      synsets: { type: "string" },
      engine: { type: "string" },
      "visibility-timeout": { type: "string" },
      heartbeat: { type: "string" },
      wait: { type: "string" },
      "model-cache": { type: "string" },
      "finish-on-stop": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const values = parsed.values;
  if (values.help) return undefined;
  const result = Settings.safeParse({
    queue: values.queue ?? nonEmpty(env[WORKER_ENV.queue]),
    model: values.model ?? nonEmpty(env[WORKER_ENV.model]),
    crops: values.crops ?? nonEmpty(env[WORKER_ENV.crops]),
    dropOut: values["drop-out"] ?? nonEmpty(env[WORKER_ENV.dropOut]),
    synsets: values.synsets ?? nonEmpty(env[WORKER_ENV.synsets]),
    engine: values.engine,
    visibilityTimeout: values["visibility-timeout"] ?? nonEmpty(env[WORKER_ENV.visibilityTimeout]),
    heartbeat: values.heartbeat,
    wait: values.wait,
    modelCache: values["model-cache"],
    untilEmpty: values["until-empty"],
    finishOnStop: values["finish-on-stop"],
  });
  if (!result.success) throw new ConfigurationError(result.error.issues.map((issue) => issue.message).join("; "));
  return result.data;
}

/** Class names from a synset_words.txt given as a path or s3:// URL. */
export async function readSynsetsUrl(url: string, s3?: S3Client): Promise<Synsets> {
  return parseSynsets((await readUrl(url, s3)).toString("utf8"), url);
}

/** The worker options for parsed settings (clients and signal are added by the caller). */
export function workerOptionsFrom(settings: WorkerSettings, synsets: Synsets): WorkerOptions {
  const visibilityTimeoutSeconds = settings.visibilityTimeout ?? VISIBILITY_TIMEOUT_SECONDS;
  const heartbeatSeconds =
    settings.heartbeat ?? Math.max(1, Math.min(HEARTBEAT_SECONDS, Math.floor(visibilityTimeoutSeconds / 5)));
  return {
    queueUrl: settings.queue,
    classNames: synsets.names,
    visibilityTimeoutSeconds,
    heartbeatSeconds,
    untilEmpty: settings.untilEmpty,
    onStop: settings.finishOnStop ? "finish" : "abandon",
    engine: settings.engine,
    ...(settings.wait !== undefined ? { waitTimeSeconds: settings.wait } : {}),
    ...(settings.modelCache !== undefined ? { modelCacheSize: settings.modelCache } : {}),
    ...(settings.model !== undefined && settings.dropOut !== undefined
      ? { drop: { model: settings.model, crops: settings.crops, out: settings.dropOut } }
      : {}),
  };
}

/** `googlenet-eval worker ...`: runs until SIGTERM/SIGINT (or an empty queue with --until-empty). */
export async function workerCommand(argv: string[]): Promise<number> {
  const settings = parseWorkerArgs(argv);
  if (!settings) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const synsets = await readSynsetsUrl(settings.synsets);
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
  } finally {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
  }
  return 0;
}

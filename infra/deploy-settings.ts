import type { Node } from "constructs";
import { ConfigurationError } from "../model/errors.js";

/** Which worker fleet runs the queue: GPU instances on ECS/EC2, or CPU tasks on Fargate Spot. */
export type WorkerKind = "gpu" | "cpu";
export const WORKER_KINDS: readonly WorkerKind[] = ["gpu", "cpu"];

/** The engine a GPU worker runs on its GPU, and so which image target it is built from. */
export type GpuEngine = "tfjs" | "onnxruntime";
export const GPU_ENGINES: readonly GpuEngine[] = ["tfjs", "onnxruntime"];

/** Fargate's CPU units and the memory (MiB) each allows, for the CPU workers. */
export const FARGATE_SIZES: Readonly<Record<number, { min: number; max: number }>> = {
  1024: { min: 2048, max: 8192 },
  2048: { min: 4096, max: 16384 },
  4096: { min: 8192, max: 30720 },
  8192: { min: 16384, max: 61440 },
  16384: { min: 32768, max: 122880 },
};

/**
 * Every deploy-time setting of the stack, read once from CDK context (`cdk.json` "context", or
 * `npx cdk deploy -c key=value`, which always arrives as a string) and validated, so a typo
 * fails the synth with the key's name instead of deploying something unexpected.
 */
export interface DeploySettings {
  /**
   * EC2 instance types for the GPU workers, in order of preference; each must carry one NVIDIA
   * GPU the worker image can drive. Context `instanceTypes` (a JSON list or comma-separated).
   * @default ["g4dn.xlarge", "g5.xlarge"]
   */
  readonly instanceTypes: readonly string[];
  /**
   * Run the workers on Spot instances (with ECS Spot draining). Context `spot`.
   * @default false
   */
  readonly spot: boolean;
  /**
   * Most GPU instances (and so worker tasks: one GPU each) at once. Context `maxInstances`.
   * @default 4
   */
  readonly maxInstances: number;
  /**
   * Key, in the stack's bucket, of the model the drop folder classifies with. Context `defaultModelKey`.
   * @default "models/bvlc-googlenet.onnx"
   */
  readonly defaultModelKey: string;
  /**
   * Crops per image for drop-folder images. Context `defaultCrops`.
   * @default 144
   */
  readonly defaultCrops: 1 | 10 | 144;
  /**
   * Pixel limit for drop-folder images: a larger one becomes an error record without being
   * scored (the worker's DROP_MAX_PIXELS). Context `dropMaxPixels`.
   * @default undefined - the worker's own limit, 60,000,000 (phone photos are 12-50 million)
   */
  readonly dropMaxPixels?: number;
  /**
   * Key, in the stack's bucket, of ImageNet's synset_words.txt. Context `synsetsKey`.
   * @default "models/synset_words.txt"
   */
  readonly synsetsKey: string;
  /**
   * An existing bucket holding validation images, which the workers may read (read only; results
   * still go to the stack's bucket). Context `inputBucketName`.
   * @default undefined - validation images live under validation/ in the stack's bucket
   */
  readonly inputBucketName?: string;
  /**
   * Key prefix the workers may read in `inputBucketName`. Context `inputPrefix`.
   * @default "" (the whole bucket)
   */
  readonly inputPrefix: string;
  /**
   * An existing VPC to run the workers in (looked up at synth, which needs credentials and an
   * explicit account/region). Context `vpcId`.
   * @default undefined - a new VPC with public subnets only (no NAT gateway to pay for while idle)
   */
  readonly vpcId?: string;
  /**
   * An existing SNS topic every alarm and the Auto Scaling group's notifications go to.
   * Context `alarmTopicArn`.
   * @default undefined - the stack creates a topic (output AlarmTopicArn) to subscribe to
   */
  readonly alarmTopicArn?: string;
  /**
   * Days the worker and aggregator logs are kept. Context `logRetentionDays`.
   * @default 30
   */
  readonly logRetentionDays: number;
  /**
   * The worker fleet: "gpu" (ECS on EC2 GPU instances) or "cpu" (the same worker on Fargate Spot
   * with onnxruntime, for accounts without GPU quota). Context `workers`.
   * @default "gpu"
   */
  readonly workers: WorkerKind;
  /**
   * The engine GPU workers run: "tfjs" (tfjs-node-gpu, CUDA 11) or "onnxruntime" (its CUDA
   * execution provider, CUDA 12 + cuDNN 9). Picks the image target. Context `gpuEngine`.
   * @default "tfjs"
   */
  readonly gpuEngine: GpuEngine;
  /**
   * CPU units of one CPU worker task (1024 = 1 vCPU; Fargate sizes). Context `cpuWorkerCpu`.
   * @default 4096
   */
  readonly cpuWorkerCpu: number;
  /**
   * Memory (MiB) of one CPU worker task, within Fargate's range for its CPU. Context `cpuWorkerMemoryMiB`.
   * @default 8192
   */
  readonly cpuWorkerMemoryMiB: number;
  /**
   * Hours the oldest message may wait in the work queue before the queue-age alarm fires: a run
   * larger than the fleet can finish in that time raises it too, so size it to your runs.
   * Context `queueAgeAlarmHours`.
   * @default 6
   */
  readonly queueAgeAlarmHours: number;
}

export const DEFAULT_SETTINGS: DeploySettings = {
  instanceTypes: ["g4dn.xlarge", "g5.xlarge"],
  spot: false,
  maxInstances: 4,
  defaultModelKey: "models/bvlc-googlenet.onnx",
  defaultCrops: 144,
  synsetsKey: "models/synset_words.txt",
  inputPrefix: "",
  logRetentionDays: 30,
  workers: "gpu",
  gpuEngine: "tfjs",
  cpuWorkerCpu: 4096,
  cpuWorkerMemoryMiB: 8192,
  queueAgeAlarmHours: 6,
};

/** The context keys this app reads; anything else in cdk.json is CDK's own. */
export const SETTING_KEYS = [
  "instanceTypes",
  "spot",
  "maxInstances",
  "defaultModelKey",
  "defaultCrops",
  "dropMaxPixels",
  "synsetsKey",
  "inputBucketName",
  "inputPrefix",
  "vpcId",
  "alarmTopicArn",
  "logRetentionDays",
  "workers",
  "gpuEngine",
  "cpuWorkerCpu",
  "cpuWorkerMemoryMiB",
  "queueAgeAlarmHours",
] as const;

/** CloudWatch Logs accepts only these retention periods. */
const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/** Reads and validates the settings from a construct node's context (normally the App's). */
export function settingsFromContext(node: Node): DeploySettings {
  const raw = (key: (typeof SETTING_KEYS)[number]): unknown => node.tryGetContext(key);
  const inputBucketName = optionalString(raw("inputBucketName"), "inputBucketName");
  const vpcId = optionalString(raw("vpcId"), "vpcId");
  const alarmTopicArn = optionalString(raw("alarmTopicArn"), "alarmTopicArn");
  const dropMaxPixels = positiveInteger(raw("dropMaxPixels"), "dropMaxPixels");
  return {
    instanceTypes: instanceTypes(raw("instanceTypes")),
    spot: boolean(raw("spot"), "spot", DEFAULT_SETTINGS.spot),
    maxInstances: integer(raw("maxInstances"), "maxInstances", DEFAULT_SETTINGS.maxInstances, 1, 100),
    defaultModelKey: key(raw("defaultModelKey"), "defaultModelKey", DEFAULT_SETTINGS.defaultModelKey),
    defaultCrops: crops(raw("defaultCrops")),
    ...(dropMaxPixels === undefined ? {} : { dropMaxPixels }),
    synsetsKey: key(raw("synsetsKey"), "synsetsKey", DEFAULT_SETTINGS.synsetsKey),
    ...(inputBucketName === undefined ? {} : { inputBucketName: bucketName(inputBucketName) }),
    inputPrefix: prefix(raw("inputPrefix")),
    ...(vpcId === undefined ? {} : { vpcId: matching(vpcId, "vpcId", /^vpc-[0-9a-f]{8,17}$/, "vpc-0123456789abcdef0") }),
    ...(alarmTopicArn === undefined
      ? {}
      : { alarmTopicArn: matching(alarmTopicArn, "alarmTopicArn", /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$/, "arn:aws:sns:REGION:ACCOUNT:NAME") }),
    logRetentionDays: retention(raw("logRetentionDays")),
    workers: oneOf(raw("workers"), "workers", WORKER_KINDS, DEFAULT_SETTINGS.workers),
    gpuEngine: oneOf(raw("gpuEngine"), "gpuEngine", GPU_ENGINES, DEFAULT_SETTINGS.gpuEngine),
    ...fargateSize(raw("cpuWorkerCpu"), raw("cpuWorkerMemoryMiB")),
    queueAgeAlarmHours: integer(raw("queueAgeAlarmHours"), "queueAgeAlarmHours", DEFAULT_SETTINGS.queueAgeAlarmHours, 1, 336),
  };
}

function oneOf<T extends string>(value: unknown, key: string, choices: readonly T[], fallback: T): T {
  const text = optionalString(value, key) ?? fallback;
  if (!(choices as readonly string[]).includes(text)) fail(key, value, `one of: ${choices.join(", ")}`);
  return text as T;
}

function fargateSize(cpuValue: unknown, memoryValue: unknown): { cpuWorkerCpu: number; cpuWorkerMemoryMiB: number } {
  const cpu = integer(cpuValue, "cpuWorkerCpu", DEFAULT_SETTINGS.cpuWorkerCpu, 1024, 16384);
  const range = FARGATE_SIZES[cpu];
  if (range === undefined) fail("cpuWorkerCpu", cpuValue, `one of: ${Object.keys(FARGATE_SIZES).join(", ")}`);
  const memory = integer(memoryValue, "cpuWorkerMemoryMiB", Math.max(range.min, DEFAULT_SETTINGS.cpuWorkerMemoryMiB), 512, 122880);
  if (memory < range.min || memory > range.max || memory % 1024 !== 0) {
    fail("cpuWorkerMemoryMiB", memoryValue, `a multiple of 1024 from ${range.min} to ${range.max} for cpuWorkerCpu ${cpu}`);
  }
  return { cpuWorkerCpu: cpu, cpuWorkerMemoryMiB: memory };
}

function fail(key: string, value: unknown, expected: string): never {
  throw new ConfigurationError(`context "${key}" is ${JSON.stringify(value)}; expected ${expected} (cdk.json "context" or -c ${key}=...)`);
}

function optionalString(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") fail(key, value, "a string");
  return value.trim() === "" ? undefined : value.trim();
}

function boolean(value: unknown, key: string, fallback: boolean): boolean {
  if (value === undefined || value === null || value === "") return fallback;
  if (value === true || value === "true") return true;
  if (value === false || value === "false") return false;
  return fail(key, value, "one of: true, false");
}

function integer(value: unknown, key: string, fallback: number, min: number, max: number): number {
  if (value === undefined || value === null || value === "") return fallback;
  const n = typeof value === "number" ? value : typeof value === "string" && /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) fail(key, value, `a whole number from ${min} to ${max}`);
  return n;
}

/** A whole number of 1 or more with no upper bound of its own, or undefined when not given. */
function positiveInteger(value: unknown, key: string): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  const n = typeof value === "number" ? value : typeof value === "string" && /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) fail(key, value, "a whole number, 1 or more");
  return n;
}

function instanceTypes(value: unknown): readonly string[] {
  if (value === undefined || value === null || value === "") return DEFAULT_SETTINGS.instanceTypes;
  let list: unknown = value;
  if (typeof value === "string") {
    const text = value.trim();
    list = text.startsWith("[") ? safeJson(text) : text.split(",").map((t) => t.trim()).filter((t) => t !== "");
  }
  if (!Array.isArray(list) || list.length === 0 || !list.every((t) => typeof t === "string" && /^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(t))) {
    return fail("instanceTypes", value, 'a non-empty list of instance types, e.g. ["g4dn.xlarge","g5.xlarge"] or g4dn.xlarge,g5.xlarge');
  }
  if (new Set(list).size !== list.length) fail("instanceTypes", value, "instance types without repeats");
  return list as string[];
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function crops(value: unknown): 1 | 10 | 144 {
  const n = integer(value, "defaultCrops", DEFAULT_SETTINGS.defaultCrops, 1, 144);
  if (n !== 1 && n !== 10 && n !== 144) fail("defaultCrops", value, "one of: 1, 10, 144");
  return n;
}

function key(value: unknown, name: string, fallback: string): string {
  const text = optionalString(value, name) ?? fallback;
  if (text.startsWith("/") || text.endsWith("/") || text.split("/").some((p) => p === "" || p === "." || p === "..")) {
    fail(name, value, "an S3 object key like models/bvlc-googlenet.onnx (relative, no empty, . or .. segments)");
  }
  return text;
}

function prefix(value: unknown): string {
  const text = optionalString(value, "inputPrefix") ?? "";
  if (text === "") return "";
  const withSlash = text.endsWith("/") ? text : `${text}/`;
  key(withSlash.slice(0, -1), "inputPrefix", "");
  return withSlash;
}

function bucketName(name: string): string {
  return matching(name, "inputBucketName", /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "an S3 bucket name (3-63 lowercase letters, digits, . and -)");
}

function matching(value: string, name: string, pattern: RegExp, expected: string): string {
  if (!pattern.test(value)) fail(name, value, expected);
  return value;
}

function retention(value: unknown): number {
  const n = integer(value, "logRetentionDays", DEFAULT_SETTINGS.logRetentionDays, 1, 3653);
  if (!LOG_RETENTION_DAYS.includes(n)) fail("logRetentionDays", value, `one of: ${LOG_RETENTION_DAYS.join(", ")}`);
  return n;
}

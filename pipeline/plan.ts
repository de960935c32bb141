import { randomBytes } from "node:crypto";
import { isAbsolute, resolve } from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { describeOnnxModel } from "../model/architecture.js";
import { ConfigurationError, ModelFormatError, StorageError } from "../model/errors.js";
import type { EngineChoice } from "../model/load.js";
import type { CropCount } from "../model/predict.js";
import { CROP_COUNTS } from "../model/predict.js";
import type { Flavour } from "../model/preprocess.js";
import type { Synsets } from "../model/synsets.js";
import { defaultSqsClient } from "./aws-clients.js";
import { describeProblems, labelFromPath, parseLabels } from "./labels.js";
import {
  batchId,
  batchMessage,
  codeVersion,
  MANIFEST_FORMAT,
  MANIFEST_KEY,
  serializeManifest,
  type Manifest,
  type ManifestBatch,
  type ManifestModel,
} from "./manifest.js";
import { isImageKey } from "./s3-events.js";
import { readUrl } from "./s3-location.js";
import { isS3Url, openLocation, sha256OfBytes } from "./storage.js";

/** Images per batch (one queue message) when `--batch-size` is not given. */
export const DEFAULT_BATCH_SIZE = 32;

/** SQS takes at most 10 entries per SendMessageBatch. */
const SEND_BATCH_ENTRIES = 10;
const SEND_ATTEMPTS = 3;

/** Reads a model's flavour (and checks it loads) from its bytes. */
export type DescribeModel = (bytes: Uint8Array, url: string, engine: EngineChoice) => Promise<{ flavour: Flavour }>;

export interface PlanOptions {
  /** Folder or s3:// prefix holding the images (keys ending .jpg .jpeg .png .webp, any case). */
  readonly input: string;
  /** Folder or s3:// prefix for the run: manifest.json, batches/, results.jsonl, summary.json. */
  readonly out: string;
  readonly queueUrl: string;
  /** Model files (paths or s3:// URLs); more than one makes an ensemble. */
  readonly models: readonly string[];
  /** Label file (path or s3:// URL). Default: the WNID in each image's file name or folder. */
  readonly labels?: string;
  /** The 1000 classes, for WNID label formats and WNID-in-name labels. */
  readonly synsets: Synsets;
  /** Crops per image. Default: 144. */
  readonly crops?: CropCount;
  /** Images per batch. Default: {@link DEFAULT_BATCH_SIZE} (32). */
  readonly batchSize?: number;
  /** Engine the workers use. Default: "auto". */
  readonly engine?: EngineChoice;
  /** Run id. Default: UTC time plus a random suffix, e.g. 20260101T120000Z-1a2b3c. */
  readonly runId?: string;
  /** Default: clients built from the environment. */
  readonly clients?: { readonly s3?: S3Client; readonly sqs?: SQSClient };
  /** How to learn a model's flavour. Default: {@link describeModelFlavour} (reads the ONNX graph, no engine). */
  readonly describeModel?: DescribeModel;
  /** Clock for createdAt and the default run id. Default: the system clock. */
  readonly now?: () => Date;
}

export interface PlanResult {
  readonly runId: string;
  readonly images: number;
  readonly labelled: number;
  readonly batches: number;
  readonly manifestUrl: string;
  /** Label file lines that were skipped (their images count as unlabelled), when any. */
  readonly labelWarnings?: string;
}

/** A model's flavour from its ONNX graph, without building an engine; refuses graphs it cannot place. */
export const describeModelFlavour: DescribeModel = async (bytes, url) => {
  const description = describeOnnxModel(bytes, url);
  if (description.flavour === undefined) {
    throw new ModelFormatError(
      `${url}: not a GoogLeNet this tool recognises, so workers would not know its input convention ` +
        `(flavours: bvlc, torchvision)`,
    );
  }
  return { flavour: description.flavour };
};

/** Local paths become absolute, so workers started elsewhere on the host resolve them alike. */
function absolute(url: string): string {
  return isS3Url(url) || isAbsolute(url) ? url : resolve(url);
}

function defaultRunId(now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

/**
 * Plans a distributed run: lists the input, attaches labels, cuts the images into batches,
 * writes `<out>/manifest.json` and sends one queue message per batch. Refuses an `out` that
 * already holds a manifest, because stale batch files there would mix into the new run.
 */
export async function planRun(options: PlanOptions): Promise<PlanResult> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new ConfigurationError(`batch size must be a positive integer, got ${batchSize}`);
  }
  const crops = options.crops ?? 144;
  if (!CROP_COUNTS.includes(crops)) {
    throw new ConfigurationError(`unknown crop count ${String(crops)}; use one of: ${CROP_COUNTS.join(", ")}`);
  }
  if (options.models.length === 0) throw new ConfigurationError("plan needs at least one --model");
  const engine = options.engine ?? "auto";
  const now = (options.now ?? (() => new Date()))();
  const runId = options.runId ?? defaultRunId(now);
  if (!/^[A-Za-z0-9_.-]+$/.test(runId)) {
    throw new ConfigurationError(`run id "${runId}" may hold only letters, digits, ".", "_" and "-"`);
  }
  const s3 = options.clients?.s3;
  const sqs = options.clients?.sqs ?? defaultSqsClient();
  const inputUrl = absolute(options.input);
  const outUrl = absolute(options.out);
  const out = openLocation(outUrl, { s3 });
  if (await out.exists(MANIFEST_KEY)) {
    throw new ConfigurationError(`${out.url}/${MANIFEST_KEY} already exists; give each run its own --out`);
  }

  const keys: string[] = [];
  for await (const key of openLocation(inputUrl, { s3 }).list()) if (isImageKey(key)) keys.push(key);
  if (keys.length === 0) {
    throw new ConfigurationError(`no images (.jpg .jpeg .png .webp) under ${inputUrl}`);
  }

  let lookup: (key: string) => number | null;
  let labelsSource: string | null;
  let labelWarnings: string | undefined;
  if (options.labels !== undefined) {
    const source = absolute(options.labels);
    const table = parseLabels((await readUrl(source, s3)).toString("utf8"), { source, synsets: options.synsets });
    lookup = (key) => table.lookup(key);
    labelWarnings = describeProblems(table);
    labelsSource = source;
  } else {
    lookup = (key) => labelFromPath(key, options.synsets);
    labelsSource = "wnid-in-key";
  }
  const labels = keys.map(lookup);

  const models: ManifestModel[] = [];
  for (const given of options.models) {
    const url = absolute(given);
    const bytes = await readUrl(url, s3);
    const { flavour } = await (options.describeModel ?? describeModelFlavour)(bytes, url, engine);
    models.push({ url, sha256: sha256OfBytes(bytes), flavour });
  }

  const count = Math.ceil(keys.length / batchSize);
  const batches: ManifestBatch[] = [];
  for (let i = 0; i < count; i++) {
    batches.push({
      id: batchId(i, count),
      keys: keys.slice(i * batchSize, (i + 1) * batchSize),
      labels: labels.slice(i * batchSize, (i + 1) * batchSize),
    });
  }
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    runId,
    createdAt: now.toISOString(),
    codeVersion: codeVersion(),
    input: inputUrl,
    out: out.url,
    models,
    crops,
    engine,
    labels: labelsSource,
    images: keys.length,
    batches,
  };
  // The manifest goes first: a worker that gets a message must find it.
  await out.write(MANIFEST_KEY, serializeManifest(manifest));
  await sendBatches(sqs, options.queueUrl, manifest);
  return {
    runId,
    images: keys.length,
    labelled: labels.filter((label) => label !== null).length,
    batches: batches.length,
    manifestUrl: `${out.url}/${MANIFEST_KEY}`,
    ...(labelWarnings !== undefined ? { labelWarnings } : {}),
  };
}

/**
 * Sends one message per batch (all of them, or only `only`), ten to a request, retrying
 * entries SQS reports as failed.
 */
export async function sendBatches(
  sqs: SQSClient,
  queueUrl: string,
  manifest: Manifest,
  only?: readonly string[],
): Promise<void> {
  const wanted = only === undefined ? manifest.batches : manifest.batches.filter((batch) => only.includes(batch.id));
  for (let start = 0; start < wanted.length; start += SEND_BATCH_ENTRIES) {
    let pending = wanted.slice(start, start + SEND_BATCH_ENTRIES);
    for (let attempt = 1; pending.length > 0; attempt++) {
      let response;
      try {
        response = await sqs.send(
          new SendMessageBatchCommand({
            QueueUrl: queueUrl,
            Entries: pending.map((batch) => ({ Id: batch.id, MessageBody: JSON.stringify(batchMessage(manifest, batch)) })),
          }),
        );
      } catch (error) {
        throw new StorageError(`cannot send batch messages to ${queueUrl}: ${(error as Error).message}`, { cause: error });
      }
      const failed = response.Failed ?? [];
      if (failed.length === 0) break;
      if (attempt >= SEND_ATTEMPTS) {
        const detail = failed.map((entry) => `${entry.Id ?? "?"} (${entry.Code ?? "?"}: ${entry.Message ?? ""})`);
        throw new StorageError(`queue ${queueUrl} refused batch messages: ${detail.join(", ")}`);
      }
      const retry = new Set(failed.map((entry) => entry.Id));
      pending = pending.filter((batch) => retry.has(batch.id));
    }
  }
}

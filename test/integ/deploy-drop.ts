/**
 * `npm run integ`: the deployment, end to end, in a real AWS account. Deploys the stack, uploads
 * the BVLC model and synset_words.txt, drops one photo under drop/, waits for its result at
 * drop-results/<key>.json, and destroys the stack (and its two retained buckets, emptied)
 * whatever happened. It needs credentials, Docker, and, for GPU workers, GPU quota; it is not part of
 * `npm test` (vitest only collects *.test.ts) and has never run in this project's sessions,
 * which have no AWS account.
 *
 * Settings (environment):
 *   INTEG_WORKERS=cpu|gpu     the fleet to deploy (default cpu: no GPU quota needed)
 *   INTEG_GPU_ENGINE=tfjs|onnxruntime   with INTEG_WORKERS=gpu (default tfjs)
 *   INTEG_TIMEOUT_MINUTES=N   how long to wait for the result (default 30)
 *   INTEG_KEEP=1              keep the stack and buckets for a look afterwards
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, DeleteBucketCommand } from "@aws-sdk/client-s3";
import { STACK_NAME } from "../../infra/googlenet-eval-app.js";
import { projectRoot } from "../../infra/project-root.js";

const root = projectRoot();
const shared = join(root, "..", "shared");
const workers = process.env.INTEG_WORKERS ?? "cpu";
const gpuEngine = process.env.INTEG_GPU_ENGINE ?? "tfjs";
const timeoutMinutes = Number(process.env.INTEG_TIMEOUT_MINUTES ?? "30");
const context = ["-c", `workers=${workers}`, "-c", `gpuEngine=${gpuEngine}`, "-c", "defaultCrops=10"];

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

/** Runs a command with the terminal attached; throws naming it when it fails. */
function run(command: string, args: string[], options: { capture?: boolean; allowFailure?: boolean } = {}): string {
  const result = spawnSync(command, args, { cwd: root, stdio: options.capture ? ["ignore", "pipe", "inherit"] : "inherit", encoding: "utf8" });
  if (result.status !== 0 && !options.allowFailure) throw new Error(`${command} ${args.join(" ")} exited ${result.status ?? result.signal}`);
  return result.stdout ?? "";
}

/** A stack of this name already in the account would be replaced and then destroyed: refuse. */
function refuseExistingStack(): void {
  const probe = spawnSync("aws", ["cloudformation", "describe-stacks", "--stack-name", STACK_NAME], { encoding: "utf8" });
  if (probe.error) throw new Error("the AWS CLI (aws) is needed for the pre-flight and the teardown");
  if (probe.status === 0) throw new Error(`a stack named ${STACK_NAME} exists in this account and region; the integration test deploys and destroys that name, so run it elsewhere`);
}

async function waitForObject(s3: S3Client, bucket: string, key: string): Promise<string> {
  const deadline = Date.now() + timeoutMinutes * 60_000;
  while (Date.now() < deadline) {
    try {
      const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return (await object.Body?.transformToString("utf8")) ?? "";
    } catch (error) {
      if ((error as { name?: string }).name !== "NoSuchKey") throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 15_000));
  }
  throw new Error(`no s3://${bucket}/${key} after ${timeoutMinutes} minutes: see the worker logs and the NoWorkerForBacklog alarm`);
}

async function emptyAndDelete(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length === 0) break;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Scale the fleet to zero first, so managed termination protection cannot hold the delete up. */
function teardown(outputs: Record<string, string>, s3: S3Client, buckets: string[]): Promise<void> {
  if (outputs.ClusterName && outputs.ServiceName) {
    run("aws", ["ecs", "update-service", "--cluster", outputs.ClusterName, "--service", outputs.ServiceName, "--desired-count", "0"], { allowFailure: true, capture: true });
  }
  run("npx", ["cdk", "destroy", "--force", ...context]);
  return buckets.reduce((chain, bucket) => chain.then(() => emptyAndDelete(s3, bucket)), Promise.resolve());
}

async function main(): Promise<void> {
  refuseExistingStack();
  const outputsFile = join(mkdtempSync(join(tmpdir(), "integ-")), "outputs.json");
  const s3 = new S3Client({});
  let outputs: Record<string, string> = {};
  const started = Date.now();
  try {
    log("deploy", { workers, gpuEngine });
    run("npx", ["cdk", "deploy", "--require-approval", "never", "--outputs-file", outputsFile, ...context]);
    outputs = (JSON.parse(readFileSync(outputsFile, "utf8")) as Record<string, Record<string, string>>)[STACK_NAME] ?? {};
    const bucket = outputs.BucketName;
    if (!bucket) throw new Error(`no BucketName in ${outputsFile}`);
    log("deployed", { seconds: Math.round((Date.now() - started) / 1000), bucket });
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "models/bvlc-googlenet.onnx", Body: readFileSync(join(shared, "models", "bvlc-googlenet.onnx")) }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "models/synset_words.txt", Body: readFileSync(join(shared, "imagenet", "synset_words.txt")) }));
    // A name without the WNID, so the check below tests the classifier, not the key.
    const key = `drop/integ/${Date.now()}/photo.JPEG`;
    const dropped = Date.now();
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: readFileSync(join(shared, "imagenet", "samples", "n01440764_tench.JPEG")) }));
    log("dropped", { key });
    const result = JSON.parse(await waitForObject(s3, bucket, `drop-results/${key}.json`)) as { top5?: Record<string, [number, number, string][]> };
    // The first result's latency from a fleet at zero: the number the README's drop-folder section lacks.
    log("result", { seconds: Math.round((Date.now() - dropped) / 1000), result });
    // Class 0 is the tench (n01440764); BVLC GoogLeNet has it in its top-5 for this photo.
    if (!Object.values(result.top5 ?? {}).some((entries) => entries.some(([index]) => index === 0))) {
      throw new Error(`the result's top-5 lacks the tench (class 0): ${JSON.stringify(result)}`);
    }
  } finally {
    if (process.env.INTEG_KEEP === "1") log("kept", { outputs });
    else {
      log("teardown");
      const buckets = [outputs.BucketName, outputs.LogBucketName].filter((b): b is string => b !== undefined);
      await teardown(outputs, s3, buckets);
      log("destroyed", { seconds: Math.round((Date.now() - started) / 1000) });
    }
  }
}

main().then(
  () => log("passed"),
  (error: unknown) => {
    log("failed", { reason: error instanceof Error ? error.message : String(error) });
    process.exitCode = 1;
  },
);

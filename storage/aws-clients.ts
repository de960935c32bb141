import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { SQSClient, type SQSClientConfig } from "@aws-sdk/client-sqs";
import { ConfigurationError } from "../model/errors.js";

/** The AWS clients scoring/ and queue/ talk to; every function that uses one takes it as a parameter. */
export interface AwsClients {
  readonly s3: S3Client;
  readonly sqs: SQSClient;
}

type Environment = Readonly<Record<string, string | undefined>>;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** The region named in `env`; undefined leaves the SDK's own lookup (profile, instance metadata). */
function regionOf(env: Environment): string | undefined {
  return nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION);
}

/**
 * Connection and request timeouts for every client, so a stalled connection or request fails
 * (and the SDK retries it) instead of holding a batch for ever. The SDK's own default is no
 * timeout at all. Requests must outlast SQS's 20 s long poll; GOOGLENET_EVAL_REQUEST_TIMEOUT_SECONDS
 * changes the request and idle-socket limits (tests use it to see a stall fail quickly).
 */
export const CONNECTION_TIMEOUT_MS = 5_000;
export const DEFAULT_REQUEST_TIMEOUT_SECONDS = 60;

function requestHandler(env: Environment): { connectionTimeout: number; requestTimeout: number; socketTimeout: number; throwOnRequestTimeout: true } {
  const raw = nonEmpty(env.GOOGLENET_EVAL_REQUEST_TIMEOUT_SECONDS);
  const seconds = raw === undefined ? DEFAULT_REQUEST_TIMEOUT_SECONDS : Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new ConfigurationError(`GOOGLENET_EVAL_REQUEST_TIMEOUT_SECONDS must be a positive number of seconds, got "${raw}"`);
  }
  // throwOnRequestTimeout: without it the SDK only logs a warning when requestTimeout passes.
  return { connectionTimeout: CONNECTION_TIMEOUT_MS, requestTimeout: seconds * 1000, socketTimeout: seconds * 1000, throwOnRequestTimeout: true };
}

/**
 * An S3 client from the environment. When AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL names a custom
 * endpoint (MinIO, LocalStack, the test emulator), requests use path-style addressing, because
 * virtual-hosted names like `bucket.localhost` do not resolve on most hosts.
 */
export function createS3Client(env: Environment = process.env, overrides: S3ClientConfig = {}): S3Client {
  const endpoint = nonEmpty(env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const region = regionOf(env);
  return new S3Client({
    requestHandler: requestHandler(env),
    ...(region === undefined ? {} : { region }),
    ...(endpoint === undefined ? {} : { endpoint, forcePathStyle: true }),
    ...overrides,
  });
}

/**
 * An SQS client from the environment. A custom endpoint is passed explicitly: without it the
 * SDK sends each request to the host inside the QueueUrl, which for emulators is a name such as
 * `sqs.us-east-1.localhost` that does not resolve.
 */
export function createSqsClient(env: Environment = process.env, overrides: SQSClientConfig = {}): SQSClient {
  const endpoint = nonEmpty(env.AWS_ENDPOINT_URL_SQS) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const region = regionOf(env);
  return new SQSClient({
    requestHandler: requestHandler(env),
    ...(region === undefined ? {} : { region }),
    ...(endpoint === undefined ? {} : { endpoint }),
    ...overrides,
  });
}

let shared: { s3?: S3Client; sqs?: SQSClient } = {};

/** The process-wide default S3 client, built on first use so importing costs nothing. */
export function defaultS3Client(): S3Client {
  shared.s3 ??= createS3Client();
  return shared.s3;
}

/** The process-wide default SQS client, built on first use. */
export function defaultSqsClient(): SQSClient {
  shared.sqs ??= createSqsClient();
  return shared.sqs;
}

/** Forgets the default clients (tests that change AWS_* variables call this). */
export function resetDefaultClients(): void {
  shared.s3?.destroy();
  shared.sqs?.destroy();
  shared = {};
}

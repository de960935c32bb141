import { S3Client } from "@aws-sdk/client-s3";
import { SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs, type FauxqsServer } from "fauxqs";

/**
 * fauxqs (SQS + S3 emulator) in this process on loopback, with SDK clients pointed at it.
 * Child processes reach it through `env` (AWS_ENDPOINT_URL and dummy credentials), the same
 * variables a real deployment would set.
 */
export interface Emulator {
  readonly server: FauxqsServer;
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  /** Variables that point storage/aws-clients.ts (in a child process) at the emulator. */
  readonly env: Record<string, string>;
  /** Creates a queue with a dead-letter queue after `maxReceiveCount` receives. */
  createQueue(name: string, settings: { visibilityTimeoutSeconds: number; maxReceiveCount: number }): QueuePair;
  stop(): Promise<void>;
}

export interface QueuePair {
  readonly queueName: string;
  readonly queueUrl: string;
  readonly dlqName: string;
  readonly dlqUrl: string;
}

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "test", secretAccessKey: "test" };

export async function startEmulator(): Promise<Emulator> {
  const server = await startFauxqs({ port: 0, host: "localhost", logger: false });
  const endpoint = `http://127.0.0.1:${server.port}`;
  const s3 = new S3Client({ region: REGION, endpoint, forcePathStyle: true, credentials: CREDENTIALS });
  const sqs = new SQSClient({ region: REGION, endpoint, credentials: CREDENTIALS });
  return {
    server,
    endpoint,
    s3,
    sqs,
    env: {
      AWS_ENDPOINT_URL: endpoint,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
      // Keep the SDK from looking for profiles or instance metadata on the test host.
      AWS_EC2_METADATA_DISABLED: "true",
    },
    createQueue(name, settings) {
      const dlq = server.createQueue(`${name}-dlq`);
      const queue = server.createQueue(name, {
        attributes: {
          VisibilityTimeout: String(settings.visibilityTimeoutSeconds),
          RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.queueArn, maxReceiveCount: String(settings.maxReceiveCount) }),
        },
      });
      return { queueName: queue.queueName, queueUrl: queue.queueUrl, dlqName: dlq.queueName, dlqUrl: dlq.queueUrl };
    },
    async stop() {
      s3.destroy();
      sqs.destroy();
      await server.stop();
    },
  };
}

/** An S3 event notification body exactly as AWS sends it to SQS for new objects. */
export function s3EventBody(bucket: string, objects: readonly { key: string; size: number }[]): string {
  return JSON.stringify({
    Records: objects.map((object) => ({
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: REGION,
      eventTime: "2026-01-01T00:00:00.000Z",
      eventName: "ObjectCreated:Put",
      userIdentity: { principalId: "AWS:AIDAEXAMPLE" },
      requestParameters: { sourceIPAddress: "127.0.0.1" },
      responseElements: { "x-amz-request-id": "EXAMPLE123456789", "x-amz-id-2": "EXAMPLE123/abcdefgh" },
      s3: {
        s3SchemaVersion: "1.0",
        configurationId: "drop-folder",
        bucket: { name: bucket, ownerIdentity: { principalId: "EXAMPLE" }, arn: `arn:aws:s3:::${bucket}` },
        object: { key: encodeS3EventKey(object.key), size: object.size, eTag: "0123456789abcdef0123456789abcdef", sequencer: "0A1B2C3D4E5F678901" },
      },
    })),
  });
}

/** The s3:TestEvent S3 sends once when a notification configuration is saved. */
export function s3TestEventBody(bucket: string): string {
  return JSON.stringify({
    Service: "Amazon S3",
    Event: "s3:TestEvent",
    Time: "2026-01-01T00:00:00.000Z",
    Bucket: bucket,
    RequestId: "EXAMPLE123456789",
    HostId: "EXAMPLE123/abcdefgh",
  });
}

/**
 * Encodes a key the way S3 does in event records: form encoding, so spaces become "+", while
 * "/" and unreserved characters stay as they are and everything else is percent-encoded.
 */
export function encodeS3EventKey(key: string): string {
  return encodeURIComponent(key).replace(/%2F/g, "/").replace(/%20/g, "+");
}

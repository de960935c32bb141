import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { StorageError } from "../storage/errors.js";

/** What the worker needs to know of its queue, read once when it starts. */
export interface QueueFacts {
  /** The queue's own visibility timeout: the worker's default, so a killed worker's batch comes back when the queue says. */
  readonly visibilityTimeoutSeconds: number;
  /** Where malformed messages go at once; undefined when the queue has no redrive policy. */
  readonly deadLetterQueueUrl: string | undefined;
  /** Receives before SQS moves a failing message to the dead-letter queue. */
  readonly maxReceiveCount: number | undefined;
}

interface RedrivePolicy {
  readonly deadLetterTargetArn?: string;
  readonly maxReceiveCount?: number | string;
}

/** arn:aws:sqs:region:account:name -> { account, name }. */
function parseQueueArn(arn: string): { account: string; name: string } {
  const parts = arn.split(":");
  const [account, name] = [parts[4], parts[5]];
  if (parts.length !== 6 || parts[2] !== "sqs" || !account || !name) {
    throw new StorageError(`the queue's RedrivePolicy names "${arn}", which is not an SQS queue ARN`);
  }
  return { account, name };
}

/**
 * Reads the queue's visibility timeout and its redrive policy, and finds the dead-letter
 * queue's URL from the policy's ARN. A queue that cannot be read fails the worker at start.
 */
export async function readQueueFacts(sqs: SQSClient, queueUrl: string): Promise<QueueFacts> {
  let attributes: Record<string, string>;
  try {
    const response = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["VisibilityTimeout", "RedrivePolicy"] }),
    );
    attributes = response.Attributes ?? {};
  } catch (error) {
    throw new StorageError(`cannot read the attributes of queue ${queueUrl}: ${(error as Error).message}`, { cause: error });
  }
  const visibilityTimeoutSeconds = Number(attributes.VisibilityTimeout);
  if (!Number.isInteger(visibilityTimeoutSeconds) || visibilityTimeoutSeconds < 0) {
    throw new StorageError(`queue ${queueUrl} reports VisibilityTimeout "${String(attributes.VisibilityTimeout)}"`);
  }
  if (attributes.RedrivePolicy === undefined || attributes.RedrivePolicy === "") {
    return { visibilityTimeoutSeconds, deadLetterQueueUrl: undefined, maxReceiveCount: undefined };
  }
  let policy: RedrivePolicy;
  try {
    policy = JSON.parse(attributes.RedrivePolicy) as RedrivePolicy;
  } catch (error) {
    throw new StorageError(`queue ${queueUrl} has a RedrivePolicy that is not JSON`, { cause: error });
  }
  if (policy.deadLetterTargetArn === undefined) {
    throw new StorageError(`queue ${queueUrl} has a RedrivePolicy without deadLetterTargetArn`);
  }
  const { account, name } = parseQueueArn(policy.deadLetterTargetArn);
  let deadLetterQueueUrl: string | undefined;
  try {
    const response = await sqs.send(new GetQueueUrlCommand({ QueueName: name, QueueOwnerAWSAccountId: account }));
    deadLetterQueueUrl = response.QueueUrl;
  } catch (error) {
    throw new StorageError(`cannot find the dead-letter queue ${policy.deadLetterTargetArn} of ${queueUrl}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const maxReceiveCount = policy.maxReceiveCount === undefined ? undefined : Number(policy.maxReceiveCount);
  return { visibilityTimeoutSeconds, deadLetterQueueUrl, maxReceiveCount };
}

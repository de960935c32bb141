import type { Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { resourcesOfType, synthStack } from "./synth-app.js";

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource?: unknown;
  Condition?: unknown;
}

/**
 * Actions AWS authorizes only on Resource "*" (no resource-level permissions), each granted
 * where the comment in the infra source says why:
 * - ecr:GetAuthorizationToken: the task execution role logs in to ECR to pull the worker image.
 * - ecs:DiscoverPollEndpoint: the ECS agent on the GPU instances finds its endpoint.
 * - ecs:ListServices: the desired-count custom resource, under an ecs:cluster condition.
 */
const STAR_RESOURCE_ACTIONS = new Set(["ecr:GetAuthorizationToken", "ecs:DiscoverPollEndpoint", "ecs:ListServices"]);

const asList = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value]);

/** Every statement of every AWS::IAM::Policy and inline role policy, labelled by where it is. */
function allStatements(template: Template): { where: string; statement: Statement }[] {
  const found: { where: string; statement: Statement }[] = [];
  for (const [id, props] of Object.entries(resourcesOfType(template, "AWS::IAM::Policy"))) {
    const document = props.PolicyDocument as { Statement: Statement[] };
    for (const statement of document.Statement) found.push({ where: id, statement });
  }
  for (const [id, props] of Object.entries(resourcesOfType(template, "AWS::IAM::Role"))) {
    for (const policy of asList(props.Policies as { PolicyName: string; PolicyDocument: { Statement: Statement[] } }[])) {
      for (const statement of policy.PolicyDocument.Statement) found.push({ where: `${id}/${policy.PolicyName}`, statement });
    }
  }
  return found;
}

describe.each([
  { variant: "defaults", context: {} },
  { variant: "CPU workers", context: { workers: "cpu" } },
  { variant: "spot, an input bucket and an alarm topic", context: { spot: "true", inputBucketName: "imagenet-val", inputPrefix: "val", alarmTopicArn: "arn:aws:sns:us-east-1:123456789012:ops" } },
])("IAM with $variant", ({ context }) => {
  let template: Template;
  let statements: { where: string; statement: Statement }[];

  beforeAll(() => {
    ({ template } = synthStack(context));
    statements = allStatements(template);
  });

  it("has policies to check", () => {
    expect(Object.keys(resourcesOfType(template, "AWS::IAM::Policy")).length).toBeGreaterThanOrEqual(4);
    expect(statements.length).toBeGreaterThanOrEqual(10);
  });

  it("grants no wildcard action anywhere", () => {
    const wildcards = statements.flatMap(({ where, statement }) =>
      asList(statement.Action).filter((action) => action.includes("*")).map((action) => `${where}: ${action}`),
    );
    expect(wildcards).toEqual([]);
  });

  it('grants Resource "*" only for actions that AWS authorizes on "*" alone', () => {
    const offenders = statements
      .filter(({ statement }) => asList(statement.Resource).includes("*"))
      .flatMap(({ where, statement }) =>
        asList(statement.Action).filter((a) => !STAR_RESOURCE_ACTIONS.has(a)).map((a) => `${where}: ${a} on *`),
      );
    expect(offenders).toEqual([]);
  });

  it("allows, never denies, in identity policies (denies live in resource policies)", () => {
    expect(statements.every(({ statement }) => statement.Effect === "Allow")).toBe(true);
  });
});

describe("the worker task role", () => {
  let byAction: Map<string, string[]>;

  beforeAll(() => {
    const { template } = synthStack();
    const [policy] = Object.entries(resourcesOfType(template, "AWS::IAM::Policy")).filter(([id]) => id.startsWith("WorkersTaskRole"));
    byAction = new Map();
    for (const statement of (policy?.[1].PolicyDocument as { Statement: Statement[] }).Statement) {
      for (const action of asList(statement.Action)) {
        const resources = asList(statement.Resource).map((r) => JSON.stringify(r));
        byAction.set(action, [...(byAction.get(action) ?? []), ...resources]);
      }
    }
  });

  it("reads models, validation images, dropped images and run manifests only", () => {
    const reads = (byAction.get("s3:GetObject") ?? []).map((r) => /"\/([^"]*)"/.exec(r)?.[1]).sort();
    expect(reads).toEqual(["drop/*", "models/*", "runs/*/manifest.json", "validation/*"]);
  });

  it("writes batch results and drop results only", () => {
    const writes = (byAction.get("s3:PutObject") ?? []).map((r) => /"\/([^"]*)"/.exec(r)?.[1]).sort();
    expect(writes).toEqual(["drop-results/*", "runs/*/batches/*"]);
    expect(byAction.has("s3:DeleteObject")).toBe(false);
  });

  it("consumes the work queue and may protect its own cluster's tasks", () => {
    for (const action of ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]) {
      expect(byAction.get(action)?.join()).toMatch(/WorkQueue/);
    }
    // Sending is for poison messages only, to the dead-letter queue, never to the work queue.
    const sends = byAction.get("sqs:SendMessage") ?? [];
    expect(sends).toHaveLength(1);
    expect(sends[0]).toMatch(/DeadLetterQueue/);
    expect(byAction.get("sqs:GetQueueUrl")?.join()).toMatch(/DeadLetterQueue/);
    expect(byAction.get("ecs:UpdateTaskProtection")?.join()).toMatch(/:task\/.*WorkersCluster.*\/\*/);
  });
});

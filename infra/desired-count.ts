import { CustomResource, Duration, RemovalPolicy, Stack, Token } from "aws-cdk-lib";
import type * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";
import { acknowledge, NAG_ARN, nagLogicalRef } from "./nag.js";

/**
 * The custom resource's handler, inline (no bundling, no asset): reads the desired count of
 * the service already running in the cluster, or 0 when there is none (the stack's first
 * deploy). CommonJS because Lambda runs an inline ZipFile as index.js; the AWS SDK v3 ships
 * with the Node.js runtime. It answers CloudFormation itself with a PUT to the pre-signed URL.
 */
export const DESIRED_COUNT_HANDLER = `
const { ECSClient, ListServicesCommand, DescribeServicesCommand } = require("@aws-sdk/client-ecs");
const ecs = new ECSClient({});

async function currentDesiredCount(cluster) {
  const arns = [];
  let nextToken;
  do {
    const page = await ecs.send(new ListServicesCommand({ cluster, nextToken }));
    arns.push(...(page.serviceArns || []));
    nextToken = page.nextToken;
  } while (nextToken);
  if (arns.length === 0) return 0;
  const { services = [] } = await ecs.send(new DescribeServicesCommand({ cluster, services: arns.slice(0, 10) }));
  return Math.max(0, ...services.filter((s) => s.status === "ACTIVE").map((s) => s.desiredCount || 0));
}

exports.handler = async (event) => {
  let status = "SUCCESS";
  let reason = "";
  let data = {};
  try {
    if (event.RequestType !== "Delete") {
      const count = await currentDesiredCount(event.ResourceProperties.Cluster);
      data = { DesiredCount: String(count) };
      console.log(JSON.stringify({ event: "desired-count", request: event.RequestType, desiredCount: count }));
    }
  } catch (error) {
    status = "FAILED";
    reason = String((error && error.message) || error).slice(0, 500);
    console.error(JSON.stringify({ event: "desired-count-failed", request: event.RequestType, reason }));
  }
  const body = JSON.stringify({
    Status: status,
    Reason: reason || "ok",
    PhysicalResourceId: event.PhysicalResourceId || event.LogicalResourceId,
    StackId: event.StackId,
    RequestId: event.RequestId,
    LogicalResourceId: event.LogicalResourceId,
    Data: data,
  });
  const response = await fetch(event.ResponseURL, { method: "PUT", body, headers: { "content-type": "" } });
  if (!response.ok) throw new Error("CloudFormation did not take the response: HTTP " + response.status);
};
`;

export interface ServiceDesiredCountProps {
  /** The cluster whose (single) worker service's desired count is read. */
  readonly cluster: ecs.ICluster;
  /**
   * Changes whenever the service will be updated, so the count is read again just before:
   * the task definition's ARN, which changes on every image or environment change.
   */
  readonly revision: string;
  readonly logRetention?: logs.RetentionDays;
}

/**
 * The desired count to put in the service's template: 0 when the stack is created, and the
 * count the service has at that moment on every later deploy. CloudFormation sends a service's
 * DesiredCount with every update, so a constant (0) would stop a busy fleet on any deploy, and
 * leaving it out makes ECS start one task on creation (a GPU instance booting, and a worker
 * failing on an empty bucket, before the first deploy can finish).
 */
export class ServiceDesiredCount extends Construct {
  /** A token for the service's desiredCount. */
  public readonly desiredCount: number;

  constructor(scope: Construct, id: string, props: ServiceDesiredCountProps) {
    super(scope, id);
    const logGroup = new logs.LogGroup(this, "Logs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = new iam.Role(this, "Role", {
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      description: "googlenet-eval: read the worker service's desired count at deploy time",
    });
    logGroup.grantWrite(role);
    this.grantRead(role, props.cluster);
    const handler = new lambda.Function(this, "Function", {
      description: "googlenet-eval: keep the worker service's desired count across deploys",
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      handler: "index.handler",
      code: lambda.Code.fromInline(DESIRED_COUNT_HANDLER),
      timeout: Duration.minutes(1),
      memorySize: 256,
      role,
      logGroup,
    });
    const resource = new CustomResource(this, "Resource", {
      serviceToken: handler.functionArn,
      resourceType: "Custom::ServiceDesiredCount",
      properties: { Cluster: props.cluster.clusterArn, Revision: props.revision },
    });
    this.desiredCount = Token.asNumber(resource.getAtt("DesiredCount"));
  }

  private grantRead(role: iam.Role, cluster: ecs.ICluster): void {
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: "ListServicesInCluster",
        // ListServices has no resource-level permission; the condition keeps it to this cluster.
        actions: ["ecs:ListServices"],
        resources: ["*"],
        conditions: { ArnEquals: { "ecs:cluster": cluster.clusterArn } },
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        sid: "DescribeServicesInCluster",
        actions: ["ecs:DescribeServices"],
        resources: [Stack.of(this).formatArn({ service: "ecs", resource: "service", resourceName: `${cluster.clusterName}/*` })],
      }),
    );
    acknowledge(role, "IAM5[Resource::*]", "ecs:ListServices has no resource-level permission; the statement's ecs:cluster condition limits it to the worker cluster.");
    acknowledge(
      role,
      `IAM5[Resource::${NAG_ARN}:ecs:<AWS::Region>:<AWS::AccountId>:service/${nagLogicalRef(cluster)}/*]`,
      "ecs:DescribeServices (read only) on the worker cluster's services; the service name is generated by CloudFormation after this resource runs, so it cannot be named.",
    );
  }
}

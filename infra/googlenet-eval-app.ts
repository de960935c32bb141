import type { App } from "aws-cdk-lib";
import type * as ecs from "aws-cdk-lib/aws-ecs";
import { settingsFromContext } from "./deploy-settings.js";
import { GoogLeNetEvalStack } from "./googlenet-eval-stack.js";
import { projectRoot } from "./project-root.js";

/** The stack's name in CloudFormation; README.md's commands and the integration test use it. */
export const STACK_NAME = "GoogLeNetEval";

export interface BuildAppOptions {
  /** Repository root. Default: found from this file. */
  readonly projectRoot?: string;
  /** The worker image. Default: built from the Dockerfile at deploy time. */
  readonly workerImage?: ecs.ContainerImage;
}

/**
 * Adds the stack to `app` exactly as `cdk synth` and `cdk deploy` do, with the settings read
 * from the app's context. infra/app.ts calls it on a fresh App; the tests call it on one that
 * skips bundling and add cdk-nag, so what they check is what deploys.
 */
export function buildApp(app: App, options: BuildAppOptions = {}): GoogLeNetEvalStack {
  // S3 delivers the bucket's access logs under a bucket policy on the log bucket, which keeps
  // ACLs disabled there (without the flag CDK grants delivery through the LogDeliveryWrite ACL).
  // Set here rather than in cdk.json so the tests' apps build the same stack.
  app.node.setContext("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", true);
  const settings = settingsFromContext(app.node);
  return new GoogLeNetEvalStack(app, STACK_NAME, {
    description: "googlenet-eval: score GoogLeNet-style classifiers on workers that scale from zero on an SQS backlog",
    settings,
    projectRoot: options.projectRoot ?? projectRoot(),
    ...(options.workerImage ? { workerImage: options.workerImage } : {}),
    // Environment-agnostic unless a VPC is imported: a lookup needs a concrete account and region
    // (from the CLI's credentials), everything else synthesizes offline.
    ...(settings.vpcId === undefined
      ? {}
      : { env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION } }),
  });
}

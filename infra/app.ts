import { App } from "aws-cdk-lib";
import { settingsFromContext } from "./deploy-settings.js";
import { GoogLeNetEvalStack } from "./googlenet-eval-stack.js";
import { projectRoot } from "./project-root.js";

const app = new App();
const settings = settingsFromContext(app.node);

new GoogLeNetEvalStack(app, "GoogLeNetEval", {
  description: "googlenet-eval: score GoogLeNet-style classifiers on GPU workers that scale from zero on an SQS backlog",
  settings,
  projectRoot: projectRoot(),
  // Environment-agnostic unless a VPC is imported: a lookup needs a concrete account and region
  // (from the CLI's credentials), everything else synthesizes offline.
  ...(settings.vpcId === undefined
    ? {}
    : { env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION } }),
});

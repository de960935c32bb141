import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { settingsFromContext } from "../../infra/deploy-settings.js";
import { GoogLeNetEvalStack } from "../../infra/googlenet-eval-stack.js";
import { projectRoot } from "../../infra/project-root.js";

/**
 * Synthesizes the real stack offline, as `cdk synth` would, but without bundling the Lambda
 * (`aws:cdk:bundling-stacks` = []): no esbuild run, no Docker, no AWS credentials. CDK's
 * built-in CloudFormation validation (a WASM rule engine, 4-10 s a synth on these shared
 * cores) is left to `cdk synth`, which always runs it.
 */
export function synthStack(context: Record<string, unknown> = {}): { stack: GoogLeNetEvalStack; template: Template } {
  const app = new App({
    outdir: mkdtempSync(join(tmpdir(), "cdk-test-")),
    context: { "aws:cdk:bundling-stacks": [], ...context },
    builtinCloudFormationValidation: false,
  });
  const stack = new GoogLeNetEvalStack(app, "TestStack", { settings: settingsFromContext(app.node), projectRoot: projectRoot() });
  return { stack, template: Template.fromStack(stack) };
}

/** Every resource of one type, as logical id -> Properties. */
export function resourcesOfType(template: Template, type: string): Record<string, Record<string, unknown>> {
  const found = template.findResources(type);
  return Object.fromEntries(Object.entries(found).map(([id, resource]) => [id, (resource as { Properties?: Record<string, unknown> }).Properties ?? {}]));
}

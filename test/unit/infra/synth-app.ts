import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App, Validations } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { AwsSolutionsChecks } from "cdk-nag";
import { buildApp } from "../../../infra/googlenet-eval-app.js";
import type { GoogLeNetEvalStack } from "../../../infra/googlenet-eval-stack.js";

/**
 * The app exactly as infra/app.ts builds it, offline: no bundling of the Lambda
 * (`aws:cdk:bundling-stacks` = []), no Docker (an image asset is only staged at synth), no
 * credentials. CDK's built-in CloudFormation validation (a WASM rule engine, 4-10 s a synth on
 * these shared cores) is left to `cdk synth`, which always runs it.
 */
export function testApp(context: Record<string, unknown> = {}): App {
  return new App({
    outdir: mkdtempSync(join(tmpdir(), "cdk-test-")),
    context: { "aws:cdk:bundling-stacks": [], ...context },
    builtinCloudFormationValidation: false,
  });
}

/** The stack and its template, for assertion tests. */
export function synthStack(context: Record<string, unknown> = {}): { stack: GoogLeNetEvalStack; template: Template } {
  const stack = buildApp(testApp(context));
  return { stack, template: Template.fromStack(stack) };
}

/** One AwsSolutions finding in CDK's validation report. */
export interface NagFinding {
  readonly rule: string;
  readonly path: string;
  readonly severity: string;
  /** The acknowledgement's reason, for findings that were acknowledged. */
  readonly reason?: string;
}

interface ReportJson {
  pluginReports: {
    pluginName: string;
    violations: { ruleName: string; severity: string; violatingConstructs: { constructPath: string }[] }[];
    suppressedViolations?: { ruleName: string; severity: string; reason?: string; violatingConstructs: { constructPath: string }[] }[];
  }[];
}

/**
 * Synthesizes the app with cdk-nag's AwsSolutions pack registered through aws-cdk-lib's
 * Validations API, as a team would in CI, and returns the findings left open and those
 * acknowledged. Synthesis throws when any error is open; the report is read either way.
 */
export function nagReport(context: Record<string, unknown> = {}): { open: NagFinding[]; acknowledged: NagFinding[]; thrown?: string } {
  const app = testApp(context);
  buildApp(app);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  let thrown: string | undefined;
  try {
    app.synth();
  } catch (error) {
    thrown = (error as Error).message;
  }
  const file = readdirSync(app.outdir).find((name) => name === "validation-report.json");
  if (file === undefined) throw new Error(`no validation report in ${app.outdir}${thrown ? `: ${thrown}` : ""}`);
  const report = JSON.parse(readFileSync(join(app.outdir, file), "utf8")) as ReportJson;
  type Violation = { ruleName: string; severity: string; reason?: string; violatingConstructs: { constructPath: string }[] };
  const flatten = (list: Violation[] | undefined): NagFinding[] =>
    (list ?? []).flatMap((v) =>
      v.violatingConstructs.map((c) => ({ rule: v.ruleName, path: c.constructPath, severity: v.severity, ...(v.reason ? { reason: v.reason } : {}) })),
    );
  const nag = report.pluginReports.filter((r) => r.pluginName === "AwsSolutions");
  return {
    open: nag.flatMap((r) => flatten(r.violations)),
    acknowledged: nag.flatMap((r) => flatten(r.suppressedViolations)),
    ...(thrown === undefined ? {} : { thrown }),
  };
}

/** Every resource of one type, as logical id -> Properties. */
export function resourcesOfType(template: Template, type: string): Record<string, Record<string, unknown>> {
  const found = template.findResources(type);
  return Object.fromEntries(Object.entries(found).map(([id, resource]) => [id, (resource as { Properties?: Record<string, unknown> }).Properties ?? {}]));
}

/** The Dockerfile target of the stack's worker image asset, from the synthesized asset manifest. */
export function workerImageTarget(stack: GoogLeNetEvalStack): string | undefined {
  const assembly = stack.node.root as App;
  const outdir = assembly.synth().directory;
  const manifest = JSON.parse(readFileSync(join(outdir, `${stack.artifactId}.assets.json`), "utf8")) as {
    dockerImages: Record<string, { source: { dockerBuildTarget?: string; dockerFile?: string } }>;
  };
  const images = Object.values(manifest.dockerImages);
  if (images.length !== 1) throw new Error(`expected one image asset, found ${images.length}`);
  return images[0]?.source.dockerBuildTarget;
}

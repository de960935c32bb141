import { readFileSync } from "node:fs";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import { Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_SETTINGS, SETTING_KEYS, settingsFromContext } from "../../../infra/deploy-settings.js";
import { OUTPUT_NAMES } from "../../../infra/googlenet-eval-stack.js";
import { projectRoot } from "../../../infra/project-root.js";
import { synthStack } from "./synth-app.js";

const root = projectRoot();
// The deployment guide: README.md links to docs/deploy.md, which holds outputs, context keys, alarms and teardown.
const deployDoc = readFileSync(join(root, "docs", "deploy.md"), "utf8");
const cdkJson = JSON.parse(readFileSync(join(root, "cdk.json"), "utf8")) as { app: string; context: Record<string, unknown> };

let template: Template;

beforeAll(() => {
  ({ template } = synthStack());
});

describe("the stack outputs", () => {
  it.each(Object.values(OUTPUT_NAMES))("%s is an output and is named in docs/deploy.md", (name) => {
    template.hasOutput(name, { Value: Match.anyValue() });
    expect(deployDoc).toContain(`\`${name}\``);
    expect(deployDoc).toContain(`out ${name}`);
  });

  it("resolve to the bucket, the queues, the cluster and the log groups", () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const refOf = (name: string) => JSON.stringify(outputs[name]?.Value);
    expect(refOf(OUTPUT_NAMES.bucketName)).toMatch(/^\{"Ref":"StorageBucket/);
    expect(refOf(OUTPUT_NAMES.queueUrl)).toMatch(/^\{"Ref":"WorkQueue[0-9A-F]+"\}$/);
    expect(refOf(OUTPUT_NAMES.deadLetterQueueUrl)).toMatch(/^\{"Ref":"WorkQueueDeadLetterQueue/);
    expect(refOf(OUTPUT_NAMES.clusterName)).toMatch(/^\{"Ref":"WorkersCluster/);
    expect(refOf(OUTPUT_NAMES.workerLogGroup)).toMatch(/^\{"Ref":"WorkersLogs/);
    expect(refOf(OUTPUT_NAMES.aggregatorLogGroup)).toMatch(/^\{"Ref":"AggregatorLogs/);
  });
});

describe("cdk.json", () => {
  it("runs the app through tsx and holds exactly the documented defaults", () => {
    expect(cdkJson.app).toBe("npx tsx infra/app.ts");
    expect(Object.keys(cdkJson.context).sort()).toEqual([...SETTING_KEYS].sort());
    expect(settingsFromContext(new App({ context: cdkJson.context }).node)).toEqual(DEFAULT_SETTINGS);
  });

  it.each([...SETTING_KEYS])("context key %s is documented in docs/deploy.md", (key) => {
    expect(deployDoc).toContain(`| \`${key}\` |`);
  });
});

describe("docs/deploy.md", () => {
  it("counts the alarms that notify the topic as the template has them", () => {
    const notifying = Object.values(template.findResources("AWS::CloudWatch::Alarm")).filter((alarm) =>
      JSON.stringify((alarm as { Properties?: { AlarmActions?: unknown } }).Properties?.AlarmActions ?? "").includes("AlarmTopic"),
    );
    expect(notifying).toHaveLength(4);
    expect(deployDoc).toContain("four alarms on one SNS topic");
    for (const id of ["DeadLetterAlarm", "OldestMessageAlarm", "NoWorkerForBacklog", "AggregatorErrors"]) expect(deployDoc).toContain(`\`${id}\``);
  });

  it("gives the GPU quota pre-flight and a teardown that scales the fleet to 0 first", () => {
    expect(deployDoc).toContain("--quota-code L-DB2E81BA");
    expect(deployDoc).toContain("--quota-code L-3819A6DF");
    const teardown = deployDoc.slice(deployDoc.indexOf("## Tear down"));
    expect(teardown.indexOf("--desired-count 0")).toBeLessThan(teardown.indexOf("npx cdk destroy"));
  });
});

describe("npm run integ", () => {
  it("runs the deploy test, which vitest does not collect", async () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.integ).toBe("tsx test/integ/deploy-drop.ts");
    const { default: config } = (await import("../../../vitest.config.js")) as { default: { test?: { include?: string[] } } };
    expect(config.test?.include).toEqual(["test/**/*.test.ts"]);
    expect("test/integ/deploy-drop.ts".endsWith(".test.ts")).toBe(false);
  });
});

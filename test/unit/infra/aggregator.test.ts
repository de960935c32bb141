import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { AGGREGATE_OUTPUTS } from "../../../infra/aggregator.js";
import { STATUS_FILE } from "../../../queue/aggregate.js";
import { RESULTS_FILE, SUMMARY_FILE } from "../../../scoring/results.js";
import { resourcesOfType, synthStack } from "./synth-app.js";

let template: Template;

beforeAll(() => {
  ({ template } = synthStack());
});

describe("the aggregator Lambda", () => {
  it("runs the bundled handler on Node 24, the latest Lambda runtime", () => {
    template.hasResourceProperties("AWS::Lambda::Function", {
      Runtime: "nodejs24.x",
      Handler: "index.handler",
      Role: { "Fn::GetAtt": [Match.stringLikeRegexp("^AggregatorRole"), "Arn"] },
      LoggingConfig: { LogGroup: { Ref: Match.stringLikeRegexp("^AggregatorLogs") } },
    });
  });

  it("is invoked for .jsonl objects created under runs/", () => {
    // Prepare
    const lambdaRules = new Capture();

    // Act
    template.hasResourceProperties("Custom::S3BucketNotifications", {
      NotificationConfiguration: { LambdaFunctionConfigurations: lambdaRules },
    });

    // Assess
    const [rule, ...others] = lambdaRules.asArray() as {
      Events: string[];
      LambdaFunctionArn: { "Fn::GetAtt": [string, string] };
      Filter: { Key: { FilterRules: { Name: string; Value: string }[] } };
    }[];
    expect(others).toEqual([]);
    expect(rule?.Events).toEqual(["s3:ObjectCreated:*"]);
    expect(Object.fromEntries(rule?.Filter.Key.FilterRules.map((r) => [r.Name.toLowerCase(), r.Value]) ?? [])).toEqual({
      prefix: "runs/",
      suffix: ".jsonl",
    });
    const target = resourcesOfType(template, "AWS::Lambda::Function")[rule?.LambdaFunctionArn["Fn::GetAtt"][0] ?? ""];
    expect(target?.Runtime).toBe("nodejs24.x");
    template.hasResourceProperties("AWS::Lambda::Permission", {
      Action: "lambda:InvokeFunction",
      Principal: "s3.amazonaws.com",
    });
  });

  it("sends events it failed on, after Lambda's retries, to its failure queue", () => {
    // Prepare
    const destination = new Capture();

    // Act
    template.hasResourceProperties("AWS::Lambda::EventInvokeConfig", {
      FunctionName: { Ref: Match.stringLikeRegexp("^AggregatorFunction") },
      DestinationConfig: { OnFailure: { Destination: { "Fn::GetAtt": [destination, "Arn"] } } },
    });

    // Assess
    expect(destination.asString()).toMatch(/^AggregatorFailureQueue/);
    template.hasResourceProperties("AWS::SQS::Queue", { MessageRetentionPeriod: 14 * 24 * 3600, SqsManagedSseEnabled: true });
    template.hasResourceProperties("AWS::IAM::Policy", {
      PolicyName: Match.stringLikeRegexp("^AggregatorRole"),
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Action: Match.arrayWith(["sqs:SendMessage"]), Resource: { "Fn::GetAtt": [destination.asString(), "Arn"] } })]),
      },
    });
  });

  it("may write exactly the files queue/aggregate.ts writes, and the report", () => {
    // Prepare
    const resources = new Capture();

    // Act
    template.hasResourceProperties("AWS::IAM::Policy", {
      PolicyName: Match.stringLikeRegexp("^AggregatorRole"),
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Action: ["s3:PutObject", "s3:AbortMultipartUpload"], Resource: resources })]),
      },
    });

    // Assess
    expect([...AGGREGATE_OUTPUTS].sort()).toEqual([RESULTS_FILE, SUMMARY_FILE, STATUS_FILE, "report.html"].sort());
    const keys = (resources.asArray() as { "Fn::Join": [string, unknown[]] }[]).map((r) => r["Fn::Join"][1][1]);
    expect(keys).toEqual(AGGREGATE_OUTPUTS.map((file) => `/runs/*/${file}`));
  });
});

import { Capture, Match, type Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { planDropEvent } from "../../../queue/s3-events.js";
import { LOG_BUCKET_EXPIRY_DAYS, LOG_PREFIXES } from "../../../infra/storage.js";
import { HEARTBEAT_SECONDS, MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_SECONDS } from "../../../queue/queue-timing.js";
import { resourcesOfType, synthStack } from "./synth-app.js";

let template: Template;

beforeAll(() => {
  ({ template } = synthStack());
});

describe("the bucket", () => {
  it("blocks public access, encrypts, keeps no versions and aborts stale multipart uploads", () => {
    // Prepare / Act: synthesized once above
    // Assess
    template.resourceCountIs("AWS::S3::Bucket", 2);
    template.hasResourceProperties("AWS::S3::Bucket", {
      LoggingConfiguration: { DestinationBucketName: { Ref: Match.stringLikeRegexp("^StorageLogBucket") }, LogFilePrefix: LOG_PREFIXES.accessLogs },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" } }],
      },
      VersioningConfiguration: Match.absent(),
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Status: "Enabled", AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }),
        ]),
      },
    });
  });

  it("is retained when the stack is destroyed, and so is its log bucket", () => {
    const buckets = template.findResources("AWS::S3::Bucket");
    for (const bucket of Object.values(buckets)) expect(bucket).toMatchObject({ DeletionPolicy: "Retain", UpdateReplacePolicy: "Retain" });
  });

  it("logs access and VPC flows to a log bucket that expires them and takes deliveries by bucket policy", () => {
    // Prepare
    const [logBucketId] = Object.keys(resourcesOfType(template, "AWS::S3::Bucket")).filter((id) => id.startsWith("StorageLogBucket"));

    // Assess
    template.hasResourceProperties("AWS::S3::Bucket", {
      OwnershipControls: { Rules: [{ ObjectOwnership: "BucketOwnerEnforced" }] },
      LifecycleConfiguration: { Rules: [Match.objectLike({ ExpirationInDays: LOG_BUCKET_EXPIRY_DAYS, Status: "Enabled" })] },
    });
    template.hasResourceProperties("AWS::S3::BucketPolicy", {
      Bucket: { Ref: logBucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: "logging.s3.amazonaws.com" }, Action: "s3:PutObject" })]),
      },
    });
    template.hasResourceProperties("AWS::EC2::FlowLog", {
      ResourceType: "VPC",
      TrafficType: "ALL",
      LogDestinationType: "s3",
      LogDestination: { "Fn::Join": ["", Match.arrayWith([{ "Fn::GetAtt": [logBucketId, "Arn"] }, `/${LOG_PREFIXES.flowLogs}`])] },
    });
  });

  it("denies every request not made over TLS", () => {
    template.hasResourceProperties("AWS::S3::BucketPolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Deny",
            Action: "s3:*",
            Principal: { AWS: "*" },
            Condition: { Bool: { "aws:SecureTransport": "false" } },
          }),
        ]),
      },
    });
  });
});

describe("the work queue", () => {
  it("has the shared visibility timeout, longer than the worker heartbeat", () => {
    // Prepare
    const visibility = new Capture();

    // Act
    template.hasResourceProperties("AWS::SQS::Queue", {
      VisibilityTimeout: visibility,
      RedrivePolicy: Match.objectLike({ maxReceiveCount: Match.anyValue() }),
    });

    // Assess
    expect(visibility.asNumber()).toBe(VISIBILITY_TIMEOUT_SECONDS);
    expect(visibility.asNumber()).toBeGreaterThan(HEARTBEAT_SECONDS);
  });

  it("is encrypted, sends a batch to the dead-letter queue after 5 receives and keeps messages for less time than it", () => {
    // Prepare
    const dlqArn = new Capture();

    // Act
    template.hasResourceProperties("AWS::SQS::Queue", {
      SqsManagedSseEnabled: true,
      RedrivePolicy: { deadLetterTargetArn: { "Fn::GetAtt": [dlqArn, "Arn"] }, maxReceiveCount: MAX_RECEIVE_COUNT },
      MessageRetentionPeriod: 4 * 24 * 3600,
    });

    // Assess
    expect(MAX_RECEIVE_COUNT).toBeGreaterThanOrEqual(5);
    const dlq = resourcesOfType(template, "AWS::SQS::Queue")[dlqArn.asString()];
    expect(dlq).toMatchObject({ MessageRetentionPeriod: 14 * 24 * 3600, SqsManagedSseEnabled: true });
  });

  it("raises an alarm as soon as the dead-letter queue holds a message", () => {
    // Prepare
    const queueRef = new Capture();

    // Act
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      Namespace: "AWS/SQS",
      MetricName: "ApproximateNumberOfMessagesVisible",
      Dimensions: [{ Name: "QueueName", Value: { "Fn::GetAtt": [queueRef, "QueueName"] } }],
      ComparisonOperator: "GreaterThanThreshold",
      Threshold: 0,
    });

    // Assess: the alarm watches the dead-letter queue, not the work queue
    const workQueue = resourcesOfType(template, "AWS::SQS::Queue");
    const watched = workQueue[queueRef.asString()];
    expect(watched?.RedrivePolicy).toBeUndefined();
    expect(Object.values(workQueue).some((q) => q.RedrivePolicy !== undefined)).toBe(true);
  });
});

describe("the drop folder", () => {
  it("sends object-created events under drop/ to the work queue", () => {
    // Prepare
    const configurations = new Capture();

    // Act
    template.hasResourceProperties("Custom::S3BucketNotifications", {
      NotificationConfiguration: { QueueConfigurations: configurations },
    });

    // Assess
    const rules = configurations.asArray() as {
      Events: string[];
      QueueArn: unknown;
      Filter: { Key: { FilterRules: { Name: string; Value: string }[] } };
    }[];
    const filters = rules.map((rule) => Object.fromEntries(rule.Filter.Key.FilterRules.map((r) => [r.Name.toLowerCase(), r.Value])));
    expect(filters.every((f) => f.prefix === "drop/")).toBe(true);
    expect(rules.every((rule) => rule.Events.length === 1 && rule.Events[0] === "s3:ObjectCreated:*")).toBe(true);
    const queueIds = Object.keys(resourcesOfType(template, "AWS::SQS::Queue"));
    for (const rule of rules) {
      const target = (rule.QueueArn as { "Fn::GetAtt": [string, string] })["Fn::GetAtt"][0];
      const queue = resourcesOfType(template, "AWS::SQS::Queue")[target];
      expect(queueIds).toContain(target);
      // The work queue (whose redrive policy names the dead-letter queue), not the dead-letter queue itself.
      const redrive = queue?.RedrivePolicy as { deadLetterTargetArn: { "Fn::GetAtt": [string, string] }; maxReceiveCount: number };
      expect(redrive.maxReceiveCount).toBe(5);
      expect(redrive.deadLetterTargetArn["Fn::GetAtt"]).toEqual([expect.stringMatching(/DeadLetterQueue/), "Arn"]);
      expect(redrive.deadLetterTargetArn["Fn::GetAtt"][0]).not.toBe(target);
    }
  });

  it.each(["drop/IMG.Jpg", "drop/photo.JPEG", "drop/x.PnG", "drop/a/b.webP"])(
    "delivers %s and the worker scores it: image suffixes match in any case",
    (key) => {
      // Prepare
      const configurations = new Capture();
      template.hasResourceProperties("Custom::S3BucketNotifications", {
        NotificationConfiguration: { QueueConfigurations: configurations },
      });
      const rules = configurations.asArray() as { Filter: { Key: { FilterRules: { Name: string; Value: string }[] } } }[];

      // Act: S3 matches prefix and suffix rules byte for byte (case-sensitive), as documented in
      // "Configuring event notifications using object key name filtering".
      const delivered = rules.some((rule) =>
        rule.Filter.Key.FilterRules.every((r) =>
          r.Name.toLowerCase() === "prefix" ? key.startsWith(r.Value) : key.endsWith(r.Value),
        ),
      );
      const [decision] = planDropEvent([{ bucket: "b", key, size: 1, eventName: "ObjectCreated:Put" }]);

      // Assess
      expect(delivered).toBe(true);
      expect(decision?.action).toBe("score");
    },
  );

  it("lets only S3, from this bucket, send to the queue", () => {
    template.hasResourceProperties("AWS::SQS::QueuePolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Allow",
            Principal: { Service: "s3.amazonaws.com" },
            Action: Match.arrayWith(["sqs:SendMessage"]),
            Condition: { ArnLike: { "aws:SourceArn": Match.anyValue() } },
          }),
        ]),
      },
    });
  });
});

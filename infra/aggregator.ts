import { join } from "node:path";
import { Duration, RemovalPolicy } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as destinations from "aws-cdk-lib/aws-lambda-destinations";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as s3n from "aws-cdk-lib/aws-s3-notifications";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { acknowledge, nagRef } from "./nag.js";
import { PREFIXES } from "./storage.js";

/**
 * The files aggregation writes into a run folder: queue/aggregate.ts's results, summary and
 * status files, and the report beside them. The Lambda may write these and nothing else; a new
 * output file must be added here.
 */
export const AGGREGATE_OUTPUTS = ["results.jsonl", "summary.json", "aggregate-status.json", "report.html"] as const;

/**
 * data/ files the Lambda reads at run time, copied beside its bundle: the ReaL labels
 * (scoring/imagenet-validation.ts REAL_LABELS_FILE; infra/ imports no scoring code, so named
 * here) that summaries judge validation-named keys by.
 */
export const AGGREGATOR_DATA_FILES = ["real.json"] as const;

export interface AggregatorProps {
  readonly bucket: s3.Bucket;
  /** The repository root: the handler's entry and package-lock.json are found from it. */
  readonly projectRoot: string;
  /**
   * Days the function's logs are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Function timeout; the last trigger of a 50,000-image run reads ~1,600 batch files and
   * writes ~30 MB of results plus the report.
   * @default Duration.minutes(10)
   */
  readonly timeout?: Duration;
}

/**
 * Aggregation without a person: every batch result that lands under `runs/<RUN>/batches/`
 * invokes a Lambda that calls aggregateRun on the run. Until the last batch lands it only
 * lists the run and logs what is missing (it writes no "waiting" status, which could land over
 * the last call's "complete"); the invocation that sees every batch writes results.jsonl,
 * summary.json, report.html and aggregate-status.json. After that, an event whose batch file
 * still holds the bytes the status records (S3 delivers events at least once) reads that file,
 * the manifest and the status, and writes nothing. aggregateRun writes deterministic bytes from
 * the batch files, so concurrent invocations converge on the same files (no reserved
 * concurrency needed, which new accounts with a concurrency quota of 10 could not spare anyway).
 */
export class Aggregator extends Construct {
  public readonly function: nodejs.NodejsFunction;
  public readonly role: iam.Role;
  public readonly logGroup: logs.LogGroup;
  /** S3 events the function failed on after Lambda's two retries, kept 14 days to be re-run. */
  public readonly failureQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: AggregatorProps) {
    super(scope, id);
    const { bucket } = props;

    this.logGroup = new logs.LogGroup(this, "Logs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // An explicit role instead of AWSLambdaBasicExecutionRole: that managed policy may create
    // any log group and write to all of them; this one writes to its own group only.
    this.role = new iam.Role(this, "Role", {
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      description: "googlenet-eval aggregator: reads run folders, writes their results and summary",
    });
    this.logGroup.grantWrite(this.role);
    this.grantRunAccess(bucket);
    this.failureQueue = new sqs.Queue(this, "FailureQueue", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    acknowledge(
      this.failureQueue,
      "SQS3",
      "This queue is itself a dead-letter destination: the aggregator's on-failure destination for asynchronous S3 invocations. Nothing consumes it automatically; an operator re-runs `googlenet-eval aggregate` for the run a record names.",
    );
    this.function = this.aggregateFunction(props);
    // S3 filters take one prefix and one suffix, so `runs/` + `.jsonl` also matches the
    // results.jsonl this function writes; the handler acts only on runs/<RUN>/batches/ keys.
    bucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(this.function), {
      prefix: PREFIXES.runs,
      suffix: ".jsonl",
    });
  }

  private grantRunAccess(bucket: s3.Bucket): void {
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: "ReadRuns",
        actions: ["s3:GetObject"],
        resources: [bucket.arnForObjects(`${PREFIXES.runs}*`)],
      }),
    );
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: "ListBucketFor404",
        // Listing the batches is how a run's missing batches are found; and without ListBucket
        // S3 answers a missing key with 403 instead of 404, which would turn "batch not there
        // yet" into an access error. It reveals key names only, never contents.
        actions: ["s3:ListBucket"],
        resources: [bucket.bucketArn],
      }),
    );
    this.role.addToPolicy(
      new iam.PolicyStatement({
        sid: "WriteRunOutputs",
        // AbortMultipartUpload: results.jsonl of a large run goes up in parts.
        actions: ["s3:PutObject", "s3:AbortMultipartUpload"],
        resources: AGGREGATE_OUTPUTS.map((file) => bucket.arnForObjects(`${PREFIXES.runs}*/${file}`)),
      }),
    );
    const ref = nagRef(bucket);
    acknowledge(
      this.role,
      `IAM5[Resource::${ref}/${PREFIXES.runs}*]`,
      "Aggregation reads a run's manifest and every batch file under runs/<run id>/; run ids are made by `plan` at run time.",
    );
    for (const file of AGGREGATE_OUTPUTS) {
      acknowledge(
        this.role,
        `IAM5[Resource::${ref}/${PREFIXES.runs}*/${file}]`,
        `Writes only ${file} at the top of each run folder runs/<run id>/; the run id is made at run time.`,
      );
    }
  }

  private aggregateFunction(props: AggregatorProps): nodejs.NodejsFunction {
    return new nodejs.NodejsFunction(this, "Function", {
      description: "googlenet-eval: aggregate a run when its batch results land",
      entry: join(props.projectRoot, "handlers", "aggregate-lambda.ts"),
      handler: "handler",
      projectRoot: props.projectRoot,
      depsLockFilePath: join(props.projectRoot, "package-lock.json"),
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 2048,
      timeout: props.timeout ?? Duration.minutes(10),
      role: this.role,
      logGroup: this.logGroup,
      environment: { NODE_OPTIONS: "--enable-source-maps" },
      // After Lambda's two retries the S3 event lands here instead of vanishing.
      onFailure: new destinations.SqsDestination(this.failureQueue),
      bundling: {
        format: nodejs.OutputFormat.ESM,
        target: "node24",
        mainFields: ["module", "main"],
        sourceMap: true,
        // ESM output still meets CommonJS dependencies that call require().
        banner: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
        // Bundle the AWS SDK too: the pinned versions from package-lock.json, not whatever the
        // runtime ships. Native engines are never used by aggregation; keeping them external
        // lets esbuild succeed should an import chain reach one.
        externalModules: ["sharp", "onnxruntime-node", "@tensorflow/tfjs-node", "@tensorflow/tfjs-node-gpu"],
        // The ReaL labels summaries judge validation-named keys by (scoring/imagenet-validation.ts
        // looks for data/ beside the bundle): without them the Lambda's summary.json would lack
        // `real` where `googlenet-eval aggregate` has it.
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir: string, outputDir: string) => [
            `mkdir -p "${outputDir}/data"`,
            ...AGGREGATOR_DATA_FILES.map((file) => `cp "${inputDir}/data/${file}" "${outputDir}/data/${file}"`),
          ],
        },
      },
    });
  }
}

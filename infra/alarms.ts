import { Duration } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as cloudwatchActions from "aws-cdk-lib/aws-cloudwatch-actions";
import type * as ecs from "aws-cdk-lib/aws-ecs";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sns from "aws-cdk-lib/aws-sns";
import { Construct } from "constructs";
import type { WorkQueue } from "./work-queue.js";

/** How long a backlog may wait with no running worker before anyone is told. */
export const NO_WORKER_MINUTES = 30;

/**
 * The topic every alarm (and the GPU group's scaling notifications) goes to: the operator's,
 * when context names one, else a new topic to subscribe an email address to.
 */
export function alarmTopic(scope: Construct, topicArn: string | undefined): sns.ITopic {
  if (topicArn !== undefined) return sns.Topic.fromTopicArn(scope, "AlarmTopic", topicArn);
  // No KMS key: notifications carry alarm names, states and instance ids, no data, and a
  // customer-managed key would need key-policy grants for CloudWatch and Auto Scaling.
  return new sns.Topic(scope, "AlarmTopic", { displayName: "googlenet-eval alarms", enforceSSL: true });
}

export interface OperationsAlarmsProps {
  readonly topic: sns.ITopic;
  readonly workQueue: WorkQueue;
  /** The worker fleet's cluster and service (Container Insights publishes their task counts). */
  readonly cluster: ecs.ICluster;
  readonly service: ecs.BaseService;
  readonly aggregator: lambda.IFunction;
}

/**
 * The alarms that are not the work queue's own (its dead-letter and oldest-message alarms live
 * in work-queue.ts): a backlog with no running worker, and a failing aggregator. All notify
 * the alarm topic.
 */
export class OperationsAlarms extends Construct {
  public readonly noWorkerAlarm: cloudwatch.Alarm;
  public readonly aggregatorErrorsAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: OperationsAlarmsProps) {
    super(scope, id);
    this.noWorkerAlarm = this.noWorker(props);
    this.aggregatorErrorsAlarm = new cloudwatch.Alarm(this, "AggregatorErrors", {
      alarmDescription:
        "The aggregator Lambda failed (after its retries the S3 event goes to the aggregator's failure queue); the run's summary is not written until `googlenet-eval aggregate` runs for it.",
      metric: props.aggregator.metricErrors({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    for (const alarm of [this.noWorkerAlarm, this.aggregatorErrorsAlarm]) alarm.addAlarmAction(new cloudwatchActions.SnsAction(props.topic));
  }

  /**
   * Messages have been waiting for 30 minutes while no worker task ran: no GPU quota or
   * capacity, an image that does not start, a task that fails its health check. Task counts
   * come from Container Insights, which publishes nothing for a service with no tasks, and an
   * idle queue publishes no SQS metrics either: FILL makes both missing values 0.
   */
  private noWorker(props: OperationsAlarmsProps): cloudwatch.Alarm {
    const period = Duration.minutes(5);
    const expression = new cloudwatch.MathExpression({
      label: "Backlog waiting with no running worker (1 = yes)",
      expression: "IF(FILL(visible, 0) > 0 AND FILL(running, 0) < 1, 1, 0)",
      usingMetrics: {
        visible: props.workQueue.queue.metricApproximateNumberOfMessagesVisible({ period, statistic: cloudwatch.Stats.MINIMUM }),
        running: new cloudwatch.Metric({
          namespace: "ECS/ContainerInsights",
          metricName: "RunningTaskCount",
          dimensionsMap: { ClusterName: props.cluster.clusterName, ServiceName: props.service.serviceName },
          period,
          statistic: cloudwatch.Stats.MAXIMUM,
        }),
      },
      period,
    });
    const periods = NO_WORKER_MINUTES / period.toMinutes();
    return new cloudwatch.Alarm(this, "NoWorkerForBacklog", {
      alarmDescription: `Messages have waited in the work queue for ${NO_WORKER_MINUTES} minutes with no worker task running: check GPU quota (Service Quotas), the service's events and stopped tasks.`,
      metric: expression,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: periods,
      datapointsToAlarm: periods,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }
}

import { type CfnElement, Stack, Validations } from "aws-cdk-lib";
import type { IConstruct } from "constructs";

/** cdk-nag's rule namespace in CDK's validation report (the plugin's name). */
const NAMESPACE = "AwsSolutions";

/**
 * Acknowledges one AwsSolutions finding on the construct it concerns, with the reason a
 * reviewer reads in the validation report. `finding` is the rule and, for rules with several
 * findings per resource (IAM4, IAM5), the finding in brackets: `IAM5[Resource::*]`.
 * Namespaced ids (`AwsSolutions::AwsSolutions-...`) let CDK's own validation framework match
 * the acknowledgement and list it, with its reason, in validation-report.json.
 */
export function acknowledge(scope: IConstruct, finding: string, reason: string): void {
  Validations.of(scope).acknowledge({ id: `${NAMESPACE}::${NAMESPACE}-${finding}`, reason });
}

/**
 * How cdk-nag spells a resource attribute in a finding: `<LogicalId.Arn>`, e.g. the bucket ARN
 * that prefixes `arn.../models/*`. Resolved now, from the construct path, so an
 * acknowledgement follows a renamed construct instead of silently matching nothing.
 */
export function nagRef(resource: IConstruct, attribute = "Arn"): string {
  const element = resource.node.defaultChild as CfnElement | undefined;
  if (element === undefined) throw new Error(`${resource.node.path} has no CloudFormation resource to reference`);
  return `<${Stack.of(resource).resolve(element.logicalId) as string}.${attribute}>`;
}

/** How cdk-nag spells a plain Ref in a finding: `<LogicalId>`. */
export function nagLogicalRef(resource: IConstruct): string {
  const element = resource.node.defaultChild as CfnElement | undefined;
  if (element === undefined) throw new Error(`${resource.node.path} has no CloudFormation resource to reference`);
  return `<${Stack.of(resource).resolve(element.logicalId) as string}>`;
}

/** The ARN prefix cdk-nag writes for an ARN built from the partition, region and account. */
export const NAG_ARN = "arn:<AWS::Partition>";

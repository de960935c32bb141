import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DESIRED_COUNT_HANDLER } from "../../../infra/desired-count.js";

interface FakeService {
  serviceArn: string;
  status: string;
  desiredCount: number;
}

/** The inline handler, loaded as Lambda would load index.js, with a stand-in for the ECS SDK. */
function loadHandler(services: FakeService[], calls: string[]): (event: Record<string, unknown>) => Promise<void> {
  class ListServicesCommand {
    constructor(readonly input: unknown) {}
  }
  class DescribeServicesCommand {
    constructor(readonly input: { services: string[] }) {}
  }
  class ECSClient {
    async send(command: unknown): Promise<unknown> {
      if (command instanceof ListServicesCommand) {
        calls.push("ListServices");
        return { serviceArns: services.map((s) => s.serviceArn) };
      }
      calls.push("DescribeServices");
      return { services: services.filter((s) => (command as DescribeServicesCommand).input.services.includes(s.serviceArn)) };
    }
  }
  const fakeRequire = (name: string) => {
    if (name !== "@aws-sdk/client-ecs") throw new Error(`unexpected require ${name}`);
    return { ECSClient, ListServicesCommand, DescribeServicesCommand };
  };
  const module = { exports: {} as { handler?: (event: Record<string, unknown>) => Promise<void> } };
  new Function("require", "exports", "module", DESIRED_COUNT_HANDLER)(fakeRequire, module.exports, module);
  if (!module.exports.handler) throw new Error("the inline code exports no handler");
  return module.exports.handler;
}

let server: Server;
let responseUrl: string;
let responses: { method: string | undefined; contentType: string | undefined; body: Record<string, unknown> }[];

beforeEach(async () => {
  responses = [];
  // CloudFormation's pre-signed response URL, on loopback.
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      responses.push({ method: request.method, contentType: request.headers["content-type"], body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown> });
      response.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  responseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/response`;
});

afterEach(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const event = (requestType: string) => ({
  RequestType: requestType,
  ResponseURL: responseUrl,
  StackId: "arn:aws:cloudformation:us-east-1:123456789012:stack/GoogLeNetEval/1",
  RequestId: "r-1",
  LogicalResourceId: "WorkersDesiredCount",
  ...(requestType === "Create" ? {} : { PhysicalResourceId: "WorkersDesiredCount" }),
  ResourceProperties: { Cluster: "arn:aws:ecs:us-east-1:123456789012:cluster/workers", Revision: "td:1" },
});

describe("the desired-count custom resource's handler", () => {
  it("answers 0 when the cluster has no service yet (the stack's first deploy)", async () => {
    // Act
    await loadHandler([], [])(event("Create"));

    // Assess
    expect(responses).toHaveLength(1);
    expect(responses[0]).toMatchObject({ method: "PUT", contentType: "", body: { Status: "SUCCESS", Data: { DesiredCount: "0" }, RequestId: "r-1" } });
  });

  it("answers the running service's desired count on a later deploy, so the update does not reset it", async () => {
    // Prepare
    const services = [
      { serviceArn: "arn:service/workers/old", status: "INACTIVE", desiredCount: 9 },
      { serviceArn: "arn:service/workers/gpu", status: "ACTIVE", desiredCount: 3 },
    ];
    const calls: string[] = [];

    // Act
    await loadHandler(services, calls)(event("Update"));

    // Assess
    expect(calls).toEqual(["ListServices", "DescribeServices"]);
    expect(responses[0]?.body).toMatchObject({ Status: "SUCCESS", PhysicalResourceId: "WorkersDesiredCount", Data: { DesiredCount: "3" } });
  });

  it("succeeds on delete without reading anything", async () => {
    // Prepare
    const calls: string[] = [];

    // Act
    await loadHandler([], calls)(event("Delete"));

    // Assess
    expect(calls).toEqual([]);
    expect(responses[0]?.body).toMatchObject({ Status: "SUCCESS", Data: {} });
  });

  it("reports FAILED with the reason when ECS refuses", async () => {
    // Prepare
    const handler = loadHandler([], []);
    const broken = { ...event("Update"), ResourceProperties: undefined };

    // Act
    await handler(broken);

    // Assess
    expect(responses[0]?.body).toMatchObject({ Status: "FAILED" });
    expect(String(responses[0]?.body.Reason)).not.toBe("");
  });
});

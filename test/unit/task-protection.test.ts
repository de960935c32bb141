import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { taskProtectionFromEnvironment } from "../../queue/task-protection.js";

interface SeenRequest {
  method: string | undefined;
  url: string | undefined;
  contentType: string | undefined;
  body: string;
}

/** A real HTTP server on loopback standing in for the ECS agent's task-protection endpoint. */
class FakeAgent {
  readonly requests: SeenRequest[] = [];
  reply: { status: number; body: string } = {
    status: 200,
    body: JSON.stringify({ protection: { ProtectionEnabled: true, TaskArn: "arn:aws:ecs:us-east-1:1:task/c/t" } }),
  };
  private server: Server | undefined;

  async start(): Promise<string> {
    this.server = createServer((request: IncomingMessage, response: ServerResponse) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        this.requests.push({
          method: request.method,
          url: request.url,
          contentType: request.headers["content-type"],
          body: Buffer.concat(chunks).toString("utf8"),
        });
        response.writeHead(this.reply.status, { "content-type": "application/json" });
        response.end(this.reply.body);
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    // The agent injects the URI with a path (v4 metadata style); the client appends to it.
    return `http://127.0.0.1:${port}/api/4f2c`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

describe("taskProtectionFromEnvironment against a local agent", () => {
  let agent: FakeAgent;
  let agentUri: string;
  let logged: string[];

  beforeEach(async () => {
    agent = new FakeAgent();
    agentUri = await agent.start();
    logged = [];
  });

  afterEach(async () => {
    await agent.stop();
  });

  it("protects with PUT {ProtectionEnabled: true, ExpiresInMinutes} on the state path", async () => {
    // Prepare
    const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: agentUri }, fetch, (l) => logged.push(l));

    // Act
    await protection.protect(30);

    // Assess
    expect(agent.requests).toHaveLength(1);
    const [request] = agent.requests;
    expect(request?.method).toBe("PUT");
    expect(request?.url).toBe("/api/4f2c/task-protection/v1/state");
    expect(request?.contentType).toBe("application/json");
    expect(JSON.parse(request?.body ?? "")).toEqual({ ProtectionEnabled: true, ExpiresInMinutes: 30 });
    expect(logged).toEqual([]);
  });

  it("releases with PUT {ProtectionEnabled: false} and no expiry", async () => {
    // Prepare
    const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: `${agentUri}/` }, fetch, (l) => logged.push(l));

    // Act
    await protection.release();

    // Assess
    expect(agent.requests.map((r) => [r.method, r.url])).toEqual([["PUT", "/api/4f2c/task-protection/v1/state"]]);
    expect(JSON.parse(agent.requests[0]?.body ?? "")).toEqual({ ProtectionEnabled: false });
    expect(logged).toEqual([]);
  });

  describe.each([
    { asked: 0, sent: 1 },
    { asked: 12.2, sent: 13 },
    { asked: 10_000, sent: 2880 },
  ])("expiry $asked minutes", ({ asked, sent }) => {
    it(`is sent as ${sent} (ECS accepts 1..2880 whole minutes)`, async () => {
      // Prepare
      const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: agentUri }, fetch, (l) => logged.push(l));

      // Act
      await protection.protect(asked);

      // Assess
      expect(JSON.parse(agent.requests[0]?.body ?? "").ExpiresInMinutes).toBe(sent);
    });
  });

  describe.each([
    {
      name: "an HTTP error with an error body",
      reply: { status: 400, body: JSON.stringify({ error: { Code: "InvalidParameterException", Message: "bad expiry" } }) },
      expectInLog: "InvalidParameterException",
    },
    {
      name: "a 200 carrying an ECS failure",
      reply: { status: 200, body: JSON.stringify({ failure: { Reason: "TASK_NOT_IN_SERVICE", Arn: "arn:t" } }) },
      expectInLog: "TASK_NOT_IN_SERVICE",
    },
  ])("when the agent answers $name", ({ reply, expectInLog }) => {
    it("logs the status and response body and does not throw", async () => {
      // Prepare
      agent.reply = reply;
      const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: agentUri }, fetch, (l) => logged.push(l));

      // Act
      await expect(protection.protect(5)).resolves.toBeUndefined();

      // Assess
      expect(agent.requests).toHaveLength(1);
      expect(logged).toHaveLength(1);
      const line = JSON.parse(logged[0] ?? "");
      expect(line).toMatchObject({ event: "task-protection-failed", action: "protect", status: reply.status });
      expect(line.body).toContain(expectInLog);
    });
  });

  it("logs, and does not throw, when the agent cannot be reached", async () => {
    // Prepare: a port nobody listens on any more
    await agent.stop();
    const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: agentUri }, fetch, (l) => logged.push(l));

    // Act
    await expect(protection.release()).resolves.toBeUndefined();

    // Assess
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0] ?? "")).toMatchObject({ event: "task-protection-failed", action: "release" });
    agent = new FakeAgent();
    await agent.start(); // so afterEach has a server to stop
  });
});

describe("taskProtectionFromEnvironment without ECS_AGENT_URI", () => {
  it("is a no-op that says so once, and calls nothing", async () => {
    // Prepare
    const logged: string[] = [];
    const calls: string[] = [];
    const countingFetch = async (input: string): Promise<Response> => {
      calls.push(input);
      return new Response("{}");
    };
    const protection = taskProtectionFromEnvironment({ ECS_AGENT_URI: "" }, countingFetch, (l) => logged.push(l));

    // Act
    await protection.protect(10);
    await protection.release();
    await protection.protect(10);

    // Assess
    expect(calls).toEqual([]);
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0] ?? "")).toMatchObject({ event: "task-protection-disabled" });
    expect(logged[0]).toContain("ECS_AGENT_URI");
  });
});

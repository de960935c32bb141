import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";

/**
 * A loopback HTTP proxy in front of the S3/SQS emulator that answers chosen requests with the
 * failures real AWS produces (403, 500, 503, a stalled or reset connection), so tests exercise
 * the SDK's own error and retry handling instead of mocking it.
 */

/** What a firing rule does to the request instead of forwarding it. */
export type Fault = "403" | "500" | "503" | "stall" | "reset";

/** What became of one request: forwarded (`pass`), a fault, or `upstream-error` (502 sent). */
export type Outcome = "pass" | Fault | "upstream-error";

/** Which protocol a request speaks; decides the shape of injected error bodies. */
export type Service = "s3" | "sqs";

export interface FaultRuleOptions {
  /** HTTP method, case-insensitive. Default: any method. */
  readonly method?: string;
  /**
   * Tested against the percent-decoded path without the query (`/bucket/key with space.jpg`):
   * a string must be a prefix of it, a RegExp must match it. Default: any path.
   */
  readonly path?: string | RegExp;
  /**
   * Tested against the raw query string without `?` (`partNumber=2&uploadId=...`), e.g. to hit
   * one part of a multipart upload. Default: any query.
   */
  readonly query?: RegExp;
  /**
   * SQS action, the part of `x-amz-target` after `AmazonSQS.` (`"ReceiveMessage"`). A rule with
   * an action never matches S3 requests. Default: any request, S3 or SQS.
   */
  readonly action?: string;
  readonly fault: Fault;
  /** How many times the rule fires before it stops matching. Default: unlimited. */
  readonly times?: number;
  /** How many matching requests pass (or fall to later rules) before the rule fires. Default: 0. */
  readonly skip?: number;
  /**
   * Error code in the body of a 403/500/503 answer. Default: S3 `AccessDenied`, `InternalError`,
   * `SlowDown`; SQS `AccessDenied`, `InternalError`, `ServiceUnavailable`.
   */
  readonly code?: string;
}

export interface FaultRule {
  readonly options: FaultRuleOptions;
  /** Requests that matched this rule while it was installed, skipped ones included. */
  readonly matches: number;
  /** Times the fault was applied. */
  readonly hits: number;
  /** Uninstalls the rule; requests already stalled stay stalled until the client or close() ends them. */
  remove(): void;
}

export interface ProxiedRequest {
  readonly method: string;
  /** Path and query exactly as received and forwarded. */
  readonly url: string;
  /** Percent-decoded path without the query, the string rules test. */
  readonly path: string;
  readonly service: Service;
  /** SQS action, or undefined for S3. */
  readonly action: string | undefined;
  readonly outcome: Outcome;
  /** Milliseconds after the proxy started that the request headers arrived. */
  readonly at: number;
  /** Milliseconds after the proxy started that the exchange ended (response sent or socket closed). */
  readonly endedAt: number | undefined;
  /** Status sent to the client; undefined for stall and reset. */
  readonly status: number | undefined;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT, to use as the SDK endpoint or AWS_ENDPOINT_URL. */
  readonly url: string;
  /** Every request in arrival order; records fill in `endedAt` and `status` as exchanges end. */
  readonly requests: readonly ProxiedRequest[];
  /** Rules are tried in the order added; the first that fires decides the request. */
  addRule(options: FaultRuleOptions): FaultRule;
  clearRules(): void;
  /** Milliseconds since the proxy started, on the clock `at` and `endedAt` use. */
  now(): number;
  /** Stops listening and destroys every client socket, stalled ones included. */
  close(): Promise<void>;
}

interface RequestInfo {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly service: Service;
  readonly action: string | undefined;
}

interface RuleState extends FaultRule {
  matches: number;
  hits: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What the request handler shares with the proxy handle. */
interface ProxyState {
  readonly target: URL;
  readonly agent: http.Agent;
  readonly rules: RuleState[];
  readonly requests: Mutable<ProxiedRequest>[];
  readonly stalled: Set<Socket>;
  readonly now: () => number;
}

/** Starts the proxy on 127.0.0.1 on a free port, forwarding to `target` (e.g. the emulator endpoint). */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const started = performance.now();
  const state: ProxyState = {
    target: new URL(target),
    // Keep-alive to the emulator so pass-through requests do not pay a connect each time.
    agent: new http.Agent({ keepAlive: true }),
    rules: [],
    requests: [],
    stalled: new Set(),
    now: () => performance.now() - started,
  };
  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => handleRequest(req, res, state);
  const server = http.createServer(handle);
  // Never close an idle keep-alive socket first: Node's default (5 s) races a client reusing it,
  // and on a loaded machine that race becomes an ECONNRESET the test did not inject, using up
  // one of the SDK's attempts (seen as a lost retry under three parallel suites).
  server.keepAliveTimeout = 600_000;
  // Answering "checkContinue" ourselves means a faulted upload is refused before its body is sent,
  // as S3 does; forwarded ones get their 100 Continue from the emulator (see forward()).
  server.on("checkContinue", handle);
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;

  return {
    url: `http://127.0.0.1:${port}`,
    requests: state.requests,
    addRule(options) {
      const rule: RuleState = {
        options,
        matches: 0,
        hits: 0,
        remove() {
          const index = state.rules.indexOf(rule);
          if (index >= 0) state.rules.splice(index, 1);
        },
      };
      state.rules.push(rule);
      return rule;
    },
    clearRules() {
      state.rules.length = 0;
    },
    now: state.now,
    close() {
      closing ??= (async () => {
        // server.close() can call back before destroyed sockets emit "close"; wait for those
        // events, so every record has its endedAt once close() resolves.
        const socketsClosed = [...sockets].map((socket) => new Promise((resolve) => socket.once("close", resolve)));
        const serverClosed = new Promise((resolve) => server.close(resolve));
        for (const socket of state.stalled) socket.destroy();
        // Keep-alive sockets held by SDK clients would otherwise keep server.close() waiting.
        server.closeAllConnections();
        state.agent.destroy();
        await Promise.all([serverClosed, ...socketsClosed]);
      })();
      return closing;
    },
  };
}

function handleRequest(req: http.IncomingMessage, res: http.ServerResponse, state: ProxyState): void {
  const info = describeRequest(req);
  const rule = pickRule(state.rules, info);
  const record: Mutable<ProxiedRequest> = {
    method: info.method,
    url: req.url ?? "/",
    path: info.path,
    service: info.service,
    action: info.action,
    outcome: rule?.options.fault ?? "pass",
    at: state.now(),
    endedAt: undefined,
    status: undefined,
  };
  state.requests.push(record);
  // "close" also fires when the client gives up on a stall or the socket is reset.
  res.once("close", () => (record.endedAt ??= state.now()));
  res.once("finish", () => (record.status = res.statusCode));
  const fault = rule?.options.fault;
  if (fault === undefined) {
    forward(req, res, state.target, state.agent, () => (record.outcome = "upstream-error"));
  } else if (fault === "stall") {
    // Never read or answer: the client's body backs up and its timeout has to end the exchange.
    const socket = req.socket;
    state.stalled.add(socket);
    socket.once("close", () => {
      state.stalled.delete(socket);
      // The response's own "close" may come a tick later, after close() has resolved.
      record.endedAt ??= state.now();
    });
  } else if (fault === "reset") {
    // An RST rather than a FIN, as a load balancer dropping the connection sends.
    req.socket.resetAndDestroy();
  } else {
    answerError(req, res, info, fault, rule?.options.code);
  }
}

function describeRequest(req: http.IncomingMessage): RequestInfo {
  const url = req.url ?? "/";
  const queryStart = url.indexOf("?");
  const rawPath = queryStart < 0 ? url : url.slice(0, queryStart);
  const target = req.headers["x-amz-target"];
  // SQS JSON protocol: "AmazonSQS.ReceiveMessage"; everything else fauxqs serves here is S3.
  const action = typeof target === "string" && target.startsWith("AmazonSQS.") ? target.slice("AmazonSQS.".length) : undefined;
  return {
    method: (req.method ?? "GET").toUpperCase(),
    path: safeDecode(rawPath),
    query: queryStart < 0 ? "" : url.slice(queryStart + 1),
    service: action === undefined ? "s3" : "sqs",
    action,
  };
}

function safeDecode(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    // A malformed escape cannot name a real key; match on the raw text rather than fail the request.
    return path;
  }
}

function pickRule(rules: readonly RuleState[], info: RequestInfo): RuleState | undefined {
  for (const rule of rules) {
    if (!ruleMatches(rule.options, info)) continue;
    rule.matches += 1;
    if (rule.matches <= (rule.options.skip ?? 0)) continue;
    if (rule.hits >= (rule.options.times ?? Infinity)) continue;
    rule.hits += 1;
    return rule;
  }
  return undefined;
}

function ruleMatches(options: FaultRuleOptions, info: RequestInfo): boolean {
  if (options.method !== undefined && options.method.toUpperCase() !== info.method) return false;
  if (options.action !== undefined && options.action !== info.action) return false;
  if (options.query !== undefined && !options.query.test(info.query)) return false;
  const { path } = options;
  if (typeof path === "string") return info.path.startsWith(path);
  if (path instanceof RegExp) return path.test(info.path);
  return true;
}

// Connection management belongs to each hop, so these never cross the proxy.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]);

function endToEndHeaders(raw: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (!HOP_BY_HOP.has(name.toLowerCase())) kept.push(name, raw[i + 1] as string);
  }
  return kept;
}

function forward(req: http.IncomingMessage, res: http.ServerResponse, target: URL, agent: http.Agent, onUpstreamError: () => void): void {
  const upstream = http.request({
    host: target.hostname,
    port: target.port,
    method: req.method,
    // Byte-identical path and query, and the client's Host header: the SDK signed both.
    path: req.url,
    headers: endToEndHeaders(req.rawHeaders),
    agent,
  });
  // The client holds an Expect: 100-continue body until told to send it.
  upstream.on("continue", () => res.writeContinue());
  upstream.on("response", (upstreamRes) => {
    res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, endToEndHeaders(upstreamRes.rawHeaders));
    upstreamRes.pipe(res);
    upstreamRes.once("error", () => res.destroy());
  });
  upstream.on("error", (error) => {
    onUpstreamError();
    if (res.headersSent) {
      res.destroy(error);
    } else {
      res.writeHead(502, { "content-type": "text/plain" }).end(`fault proxy: upstream ${target.host} failed: ${error.message}`);
    }
  });
  // A client that gives up mid-exchange must not leave the emulator request dangling.
  res.once("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  upstream.flushHeaders();
  req.pipe(upstream);
}

interface ErrorShape {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  /** SQS JSON protocol error type (the part after `#` in `__type`). */
  readonly sqsType: string;
  readonly senderFault: boolean;
}

const ERRORS: Record<"403" | "500" | "503", { s3: ErrorShape; sqs: ErrorShape }> = {
  "403": {
    s3: { status: 403, code: "AccessDenied", message: "Access Denied", sqsType: "", senderFault: true },
    sqs: {
      status: 403,
      code: "AccessDenied",
      message: "User is not authorized to perform this action (injected by the fault proxy).",
      sqsType: "AccessDeniedException",
      senderFault: true,
    },
  },
  "500": {
    s3: { status: 500, code: "InternalError", message: "We encountered an internal error. Please try again.", sqsType: "", senderFault: false },
    sqs: { status: 500, code: "InternalError", message: "Internal failure (injected by the fault proxy).", sqsType: "InternalFailure", senderFault: false },
  },
  "503": {
    s3: { status: 503, code: "SlowDown", message: "Please reduce your request rate.", sqsType: "", senderFault: false },
    sqs: {
      status: 503,
      code: "ServiceUnavailable",
      message: "Service is unavailable (injected by the fault proxy).",
      sqsType: "ServiceUnavailable",
      senderFault: false,
    },
  },
};

function answerError(req: http.IncomingMessage, res: http.ServerResponse, info: RequestInfo, fault: "403" | "500" | "503", code: string | undefined): void {
  const shape = ERRORS[fault][info.service];
  const requestId = randomBytes(8).toString("hex").toUpperCase();
  if (info.service === "sqs") {
    const type = code ?? shape.sqsType;
    // The SQS client is query-compatible: it names the error from x-amzn-query-error, as real SQS sends.
    res.writeHead(shape.status, {
      "content-type": "application/x-amz-json-1.0",
      "x-amzn-requestid": requestId,
      "x-amzn-query-error": `${code ?? shape.code};${shape.senderFault ? "Sender" : "Receiver"}`,
    });
    res.end(JSON.stringify({ __type: `com.amazon.coral.service#${type}`, message: shape.message }));
    return;
  }
  res.writeHead(shape.status, {
    "content-type": "application/xml",
    "x-amz-request-id": requestId,
    "x-amz-id-2": "fault-proxy",
  });
  // HEAD answers carry no body on the wire; the SDK then names the error from the status alone.
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  res.end(
    [
      `<?xml version="1.0" encoding="UTF-8"?>`,
      `<Error><Code>${code ?? shape.code}</Code><Message>${shape.message}</Message>`,
      `<Resource>${escapeXml(info.path)}</Resource><RequestId>${requestId}</RequestId><HostId>fault-proxy</HostId></Error>`,
    ].join("\n"),
  );
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

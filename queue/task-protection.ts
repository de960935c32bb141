/**
 * ECS task scale-in protection, set through the ECS container agent's local endpoint
 * (`${ECS_AGENT_URI}/task-protection/v1/state`). A worker protects its task while it holds a
 * batch, so a scale-in of the service (the backlog fell) or a deployment never stops a task in
 * the middle of 144-crop work it would have to redo; it releases protection after the batch.
 *
 * The agent calls ECS UpdateTaskProtection with the TASK ROLE's credentials, so the task role
 * needs `ecs:UpdateTaskProtection` on the cluster's tasks (infra/gpu-workers.ts grants it);
 * reaching the agent endpoint itself needs no IAM.
 *
 * Protection is an optimisation, never a precondition: every failure here is logged (with the
 * agent's response body) and swallowed, so a hiccup of the agent cannot fail a batch.
 */

/** Sets and clears scale-in protection for the task this process runs in. */
export interface TaskProtection {
  /** Protects the task for `expiresInMinutes` (clamped to ECS's 1..2880). Never throws. */
  protect(expiresInMinutes: number): Promise<void>;
  /** Clears protection so the task may be scaled in. Never throws. */
  release(): Promise<void>;
}

/** ECS accepts 1 minute to 48 hours. */
export const MIN_PROTECTION_MINUTES = 1;
export const MAX_PROTECTION_MINUTES = 2880;

/** How long one call to the agent may take before it is abandoned (and logged). */
export const AGENT_TIMEOUT_MS = 5_000;

/** The fetch this module needs; `globalThis.fetch` satisfies it. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** Receives one JSON log line per event; the default writes to stderr like the worker's logs. */
export type LogLine = (line: string) => void;

const defaultLog: LogLine = (line) => {
  process.stderr.write(`${line}\n`);
};

/**
 * The task protection for this process: the agent client when `ECS_AGENT_URI` is set (it is,
 * inside every ECS task), else a no-op that says so once, so local and test runs need no agent.
 *
 * @param env - environment to read `ECS_AGENT_URI` from; default `process.env`.
 * @param fetchImpl - HTTP client; default the global `fetch`.
 * @param log - where log lines go; default stderr.
 */
export function taskProtectionFromEnvironment(
  env: NodeJS.ProcessEnv = process.env,
  fetchImpl: FetchLike = fetch,
  log: LogLine = defaultLog,
): TaskProtection {
  const agentUri = env.ECS_AGENT_URI?.trim();
  if (!agentUri) return new NoTaskProtection(log);
  return new AgentTaskProtection(agentUri, fetchImpl, log);
}

class NoTaskProtection implements TaskProtection {
  private told = false;

  constructor(private readonly log: LogLine) {}

  async protect(): Promise<void> {
    this.tellOnce();
  }

  async release(): Promise<void> {
    this.tellOnce();
  }

  private tellOnce(): void {
    if (this.told) return;
    this.told = true;
    this.log(
      JSON.stringify({
        event: "task-protection-disabled",
        reason: "ECS_AGENT_URI is not set (not running in an ECS task); scale-in protection is a no-op",
      }),
    );
  }
}

class AgentTaskProtection implements TaskProtection {
  private readonly url: string;

  constructor(
    agentUri: string,
    private readonly fetchImpl: FetchLike,
    private readonly log: LogLine,
  ) {
    this.url = `${agentUri.replace(/\/+$/, "")}/task-protection/v1/state`;
  }

  async protect(expiresInMinutes: number): Promise<void> {
    const minutes = clampMinutes(expiresInMinutes);
    await this.put({ ProtectionEnabled: true, ExpiresInMinutes: minutes });
  }

  async release(): Promise<void> {
    await this.put({ ProtectionEnabled: false });
  }

  private async put(body: { ProtectionEnabled: boolean; ExpiresInMinutes?: number }): Promise<void> {
    const action = body.ProtectionEnabled ? "protect" : "release";
    let status: number | undefined;
    let text = "";
    try {
      const response = await this.fetchImpl(this.url, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(AGENT_TIMEOUT_MS),
      });
      status = response.status;
      text = await response.text();
      // The agent answers 200 with {"failure": ...} when ECS refused (e.g. the task is not part
      // of a service), and 4xx/5xx with {"error": ...}; only {"protection": ...} is success.
      if (response.ok && !/"(failure|error)"\s*:/.test(text)) return;
    } catch (error) {
      this.log(
        JSON.stringify({
          event: "task-protection-failed",
          action,
          url: this.url,
          error: (error as Error).message,
        }),
      );
      return;
    }
    this.log(JSON.stringify({ event: "task-protection-failed", action, url: this.url, status, body: text }));
  }
}

function clampMinutes(minutes: number): number {
  if (!Number.isFinite(minutes)) return MAX_PROTECTION_MINUTES;
  return Math.min(MAX_PROTECTION_MINUTES, Math.max(MIN_PROTECTION_MINUTES, Math.ceil(minutes)));
}

/**
 * The messages the benchmark's processes exchange over Node's IPC channel.
 * The orchestrator (bench/hot-path.ts) only waits while a phase runs; the
 * server child and the load-generator child share the machine's cores.
 */

/** A server child tells the orchestrator where it listens. */
export interface ServerReady {
  readonly type: "ready";
  readonly port: number;
  /** What the server is, for the report. */
  readonly description: string;
}

/** The orchestrator asks an instrumented server child for its counters. */
export interface StatsRequest {
  readonly type: "stats";
  /** Reset the counters after reading them. */
  readonly reset: boolean;
}

export interface ServerStats {
  readonly type: "stats";
  /** Name → value; see the server child for what each counts. */
  readonly counters: Readonly<Record<string, number>>;
}

export type RpcMethod = "generateDataKey" | "decrypt";
export type ClientLibrary = "grpc-js" | "connect";

/** One measured phase, as the load generator runs it. */
export interface RunCommand {
  readonly type: "run";
  readonly phase: string;
  readonly port: number;
  /** Directory holding ca.pem, client.pem, client-key.pem. */
  readonly tlsDir: string;
  readonly client: ClientLibrary;
  readonly method: RpcMethod;
  /** JSON file of WorkItem[]; the generator cycles through it. */
  readonly workFile: string;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /**
   * GenerateDataKey only: write one returned reference per key (with its
   * plaintext) to this file, as WorkItem[], for a later Decrypt phase.
   */
  readonly collectReferencesTo?: string;
}

/** One request's inputs, and what the answer must contain (base64). */
export interface WorkItem {
  readonly tenantId: string;
  readonly keyId: string;
  /** Decrypt: the reference to send. */
  readonly reference?: string;
  /** The plaintext DEK the server must return; checked on every answer when present. */
  readonly plaintext?: string;
}

export interface LatencySummary {
  readonly count: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface RunResult {
  readonly type: "result";
  readonly phase: string;
  readonly client: ClientLibrary;
  readonly method: RpcMethod;
  readonly concurrency: number;
  readonly windowMs: number;
  /** Calls completed (successfully) inside the measuring window. */
  readonly completed: number;
  readonly errors: number;
  /** Answers whose plaintext differed from the expected one (counted in errors too). */
  readonly wrongAnswers: number;
  readonly errorSamples: readonly string[];
  readonly reqPerSec: number;
  readonly latency: LatencySummary;
  /** Calls made during warm-up (not measured). */
  readonly warmupCalls: number;
  readonly collectedReferences?: number;
}

/** The load generator marks the edges of the measuring window so the orchestrator can sample CPU. */
export interface WindowEdge {
  readonly type: "window-start" | "window-end";
  readonly phase: string;
}

export interface RunFailed {
  readonly type: "failed";
  readonly phase: string;
  readonly message: string;
}

export type LoadGeneratorMessage = RunResult | WindowEdge | RunFailed | { readonly type: "ready" };

/**
 * Helpers for end-to-end tests of the real server PROCESS: spawn
 * `node_modules/.bin/tsx <script>` from the repository root with a minimal
 * environment, capture its output, wait (always with a deadline) for it to be
 * healthy or to exit, and kill what is left at the end.
 *
 * Each child is started in a process group of its own (`detached`), because
 * tsx runs the script in a child node process: `killGroup` (SIGKILL to the
 * group) takes both down, while `child.kill("SIGTERM")` signals tsx alone,
 * which relays the signal to the script the way a process manager's stop does.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as https from "node:https";
import * as net from "node:net";
import { join } from "node:path";
import { shippedNodeFlags } from "../../bench/lib/shipped-node-flags.js";
import { repoRoot } from "./e2e-clients.js";

export const TSX = join(repoRoot, "node_modules/.bin/tsx");

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface ChildUnderTest {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitStatus>;
  hasExited(): boolean;
  /** SIGKILL to the child's whole process group (tsx and the script), if still running. */
  killGroup(): void;
}

/**
 * The environment a child gets: PATH and HOME and nothing else from this
 * process (no DATABASE_URL, KMS_* or NODE_OPTIONS leaking in), plus `extra`.
 */
export function childEnv(extra: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ["PATH", "HOME", "TMPDIR", "LANG"]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

/** Starts `tsx <script> ...args` in the repository root; the server's main with the Node flags `npm start` gives it. */
export function spawnTsx(script: string, args: readonly string[], env: NodeJS.ProcessEnv): ChildUnderTest {
  const nodeFlags = script === "server/src/main.ts" ? shippedNodeFlags() : [];
  const child = spawn(TSX, [...nodeFlags, script, ...args], { cwd: repoRoot, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid === undefined) throw new Error(`could not start ${TSX} ${script}`);
  const pid = child.pid;
  let out = "";
  let err = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (err += chunk));
  let done = false;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  return {
    child,
    pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    hasExited: () => done,
    killGroup() {
      if (done) return;
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/** Runs `tsx <script> ...args` to completion (killed after `timeoutMs`). */
export async function runTsx(
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<ExitStatus & { stdout: string; stderr: string }> {
  const run = spawnTsx(script, args, env);
  try {
    const status = await withTimeout(run.exited, timeoutMs, `tsx ${script} ${args.join(" ")} to exit`);
    // Let the pipes drain after exit.
    await Promise.all([streamEnd(run.child.stdout), streamEnd(run.child.stderr)]);
    return { ...status, stdout: run.stdout(), stderr: run.stderr() };
  } finally {
    run.killGroup();
  }
}

function streamEnd(stream: NodeJS.ReadableStream | null): Promise<void> {
  if (stream === null) return Promise.resolve();
  return withTimeout(
    new Promise<void>((resolve) => {
      if ((stream as NodeJS.ReadableStream & { readableEnded?: boolean }).readableEnded === true) resolve();
      else stream.once("end", () => resolve()).once("close", () => resolve());
    }),
    5_000,
    "the child's output to end",
  ).catch(() => undefined);
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Polls `probe` until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? "" : ` (last error: ${String(lastError)})`}`);
}

/** GET /healthz over HTTPS/1.1 trusting `ca`: the status, or "refused" when nothing accepts the connection. */
export function healthz(port: number, ca: string, timeoutMs = 5_000): Promise<{ status: number; body: string } | "refused"> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: "/healthz", method: "GET", ca, agent: false, timeout: timeoutMs });
    req.on("timeout", () => req.destroy(new Error(`GET /healthz on port ${port}: no answer within ${timeoutMs} ms`)));
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED" || error.code === "ECONNRESET") resolve("refused");
      else reject(error);
    });
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.end();
  });
}

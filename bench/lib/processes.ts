/**
 * Child processes for the benchmark, and what /proc says about them.
 * Children run TypeScript through tsx's loader (`node --import tsx`), so
 * their pid is the Node process itself: /proc/<pid>/status is the server's.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLOCK_TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

export interface Child {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly logFile: string;
  send(message: object): void;
  /** The next IPC message of this type, or of one of these types (rejects if the child exits first). */
  next<T extends { type: string }>(type: T["type"] | ReadonlyArray<T["type"]>, timeoutMs?: number): Promise<T>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

export interface SpawnOptions {
  readonly script: string;
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Node flags before the script, e.g. --cpu-prof. */
  readonly nodeFlags?: readonly string[];
  /** stdout and stderr go here. */
  readonly logFile: string;
}

export function spawnChild(options: SpawnOptions): Child {
  const log = openSync(options.logFile, "a");
  const child = spawn(
    process.execPath,
    [...(options.nodeFlags ?? []), "--import", "tsx", `${REPO_ROOT}${options.script}`, ...(options.args ?? [])],
    { cwd: REPO_ROOT, env: options.env ?? process.env, stdio: ["ignore", log, log, "ipc"] },
  );
  closeSync(log);
  if (child.pid === undefined) throw new Error(`could not start ${options.script}`);
  const pid = child.pid;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const queue: Array<{ type: string }> = [];
  const waiters: Array<{ types: readonly string[]; resolve: (m: { type: string }) => void }> = [];
  child.on("message", (raw) => {
    const message = raw as { type: string };
    const index = waiters.findIndex((w) => w.types.includes(message.type));
    if (index >= 0) waiters.splice(index, 1)[0]!.resolve(message);
    else queue.push(message);
  });

  return {
    process: child,
    pid,
    logFile: options.logFile,
    exited,
    send(message) {
      child.send(message);
    },
    next<T extends { type: string }>(wanted: T["type"] | ReadonlyArray<T["type"]>, timeoutMs = 600_000): Promise<T> {
      const types: readonly string[] = typeof wanted === "string" ? [wanted] : wanted;
      const type = types.join("|");
      const queued = queue.findIndex((m) => types.includes(m.type));
      if (queued >= 0) return Promise.resolve(queue.splice(queued, 1)[0] as T);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${options.script}: no "${type}" message within ${timeoutMs} ms (log: ${options.logFile})`)), timeoutMs);
        const waiter = {
          types,
          resolve: (m: { type: string }) => {
            clearTimeout(timer);
            resolve(m as T);
          },
        };
        waiters.push(waiter);
        void exited.then((code) => {
          const index = waiters.indexOf(waiter);
          if (index < 0) return;
          waiters.splice(index, 1);
          clearTimeout(timer);
          reject(new Error(`${options.script} exited (code ${code}) before sending "${type}"; log: ${options.logFile}\n${tail(options.logFile)}`));
        });
      });
    },
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/** Memory figures from /proc/<pid>/status, in MiB (VmHWM is the peak resident set). */
export function memoryOf(pid: number): { peakRssMiB: number; rssMiB: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { peakRssMiB: kib("VmHWM") / 1024, rssMiB: kib("VmRSS") / 1024 };
  } catch {
    return undefined;
  }
}

/** User + system CPU time of a process so far, in milliseconds (all its threads). */
export function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** CPU time all processes on the machine spent busy so far, in milliseconds (from /proc/stat). */
export function machineBusyMs(): number {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const ticks = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
    // guest and guest_nice are already counted in user and nice.
    const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
    return ((total - idle) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

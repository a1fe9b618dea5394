/**
 * The background loop of one server process: two loops sharing its context.
 *
 * - The job loop: every tick (or at once when woken), runs the claimable jobs
 *   (job-runner.ts) until none is left to claim.
 * - The task loop: every tick, runs each periodic task that is due
 *   (periodic-tasks.ts: scheduled rotation, purge, destruction, ...), one
 *   after the other; a task that throws is logged and the others still run.
 *
 * Everything they change is claimed through the database, so every replica
 * runs the same loops. `stop()` lets the batch and the task in flight finish,
 * then gives up this worker's leases so another replica carries on at once;
 * call it before the database is closed.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { KmsContext } from "../service/kms-context.js";
import type { BackgroundLogger, JobSettings } from "./job-handler.js";
import { runJobsOnce } from "./job-runner.js";
import { releaseLeases } from "./job-store.js";
import type { PeriodicTask } from "./periodic-tasks.js";

export interface BackgroundWorkerOptions {
  /** Time between two ticks of each loop. */
  readonly intervalMs: number;
  readonly jobs: Omit<JobSettings, "workerId">;
  readonly tasks: readonly PeriodicTask[];
  readonly logger: BackgroundLogger;
  /** Default: host/pid/random. */
  readonly workerId?: string;
}

export interface BackgroundWorkers {
  /** This process's name in job leases and job_batches rows. */
  readonly workerId: string;
  /** Starts the job loop's next pass now instead of at its next tick. */
  wake(): void;
  /** Stops both loops after the work in flight, then gives up this worker's leases. */
  stop(): Promise<void>;
}

export function newWorkerId(): string {
  return `${hostname()}/${process.pid}/${randomBytes(4).toString("hex")}`;
}

export function startBackgroundWorkers(context: KmsContext, options: BackgroundWorkerOptions): BackgroundWorkers {
  const workerId = options.workerId ?? newWorkerId();
  const settings: JobSettings = { ...options.jobs, workerId };
  const { logger } = options;
  let stopping = false;
  const jobSleep = sleeper();
  const taskSleep = sleeper();

  const jobLoop = async (): Promise<void> => {
    while (!stopping) {
      try {
        await runJobsOnce(context, settings, { logger, shouldStop: () => stopping });
      } catch (error) {
        logger.error("background jobs: a pass failed", { worker: workerId, err: error });
      }
      if (!stopping) await jobSleep.sleep(options.intervalMs);
    }
  };

  const lastRun = new Map<string, number>();
  const taskLoop = async (): Promise<void> => {
    while (!stopping) {
      for (const task of options.tasks) {
        if (stopping) break;
        const last = lastRun.get(task.name);
        if (last !== undefined && Date.now() - last < (task.everyMs ?? options.intervalMs)) continue;
        lastRun.set(task.name, Date.now());
        await runTask(context, task, logger);
      }
      if (!stopping) await taskSleep.sleep(options.intervalMs);
    }
  };

  logger.info("background workers started", {
    worker: workerId,
    interval_ms: options.intervalMs,
    batch_size: settings.batchSize,
    concurrency: settings.concurrency,
    lease_ms: settings.leaseMs,
    tasks: options.tasks.map((task) => task.name),
  });
  const loops = Promise.all([jobLoop(), taskLoop()]);
  let stopped: Promise<void> | undefined;

  return {
    workerId,
    wake: () => jobSleep.wake(),
    stop() {
      stopped ??= (async () => {
        stopping = true;
        jobSleep.wake();
        taskSleep.wake();
        await loops;
        const released = await releaseLeases(context.db, workerId, context.clock.now()).catch((error: unknown) => {
          logger.warn("background workers: could not give up the job leases; they expire on their own", { worker: workerId, err: error });
          return 0;
        });
        logger.info("background workers stopped", { worker: workerId, leases_released: released });
      })();
      return stopped;
    },
  };
}

/** Runs every task once, in order, at the context clock's now; failures are logged, not thrown. For tests. */
export async function runPeriodicTasksOnce(context: KmsContext, tasks: readonly PeriodicTask[], logger: BackgroundLogger): Promise<void> {
  for (const task of tasks) await runTask(context, task, logger);
}

async function runTask(context: KmsContext, task: PeriodicTask, logger: BackgroundLogger): Promise<void> {
  try {
    await task.run(context, context.clock.now());
  } catch (error) {
    logger.warn("periodic task failed; retrying on its next tick", { task: task.name, err: error });
  }
}

/** A sleep that `wake()` cuts short; a wake with nobody asleep makes the next sleep return at once. */
function sleeper(): { sleep(ms: number): Promise<void>; wake(): void } {
  let pending: (() => void) | undefined;
  let woken = false;
  return {
    sleep(ms) {
      if (woken) {
        woken = false;
        return Promise.resolve();
      }
      return new Promise<void>((resolve) => {
        const timer = setTimeout(done, ms);
        function done(): void {
          clearTimeout(timer);
          pending = undefined;
          resolve();
        }
        pending = done;
      });
    },
    wake() {
      if (pending === undefined) woken = true;
      else pending();
    },
  };
}

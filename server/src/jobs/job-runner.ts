/**
 * Runs the claimable jobs: `concurrency` lanes, each claiming a job (or
 * joining one this worker already holds) and applying batches until the job is
 * finished or has nothing left to take for now. Each batch is one transaction
 * (see job-store.ts for the lease and batch guarantees); a failure is recorded
 * on its job with a back-off, and the lanes carry on with the other jobs.
 */
import type { KmsContext } from "../service/kms-context.js";
import { abandonJob, claimJob, LeaseLostError, recordFailure, type JobKind, type JobRow } from "./job-store.js";
import { JobCannotCompleteError, type BackgroundLogger, type JobHandler, type JobSession, type JobSettings } from "./job-handler.js";
import { kekRewrapJob } from "./kek-rewrap.js";
import { rootRewrapJob } from "./root-rewrap.js";

const HANDLERS: Readonly<Record<JobKind, JobHandler>> = {
  KEK_REWRAP: kekRewrapJob,
  ROOT_REWRAP: rootRewrapJob,
};

export interface JobPassResult {
  /** Batches committed. */
  readonly batches: number;
  /** Jobs this pass saw finish. */
  readonly finished: number;
  /** Failed attempts recorded. */
  readonly failures: number;
}

export interface JobPassOptions {
  readonly logger: BackgroundLogger;
  /** Checked between batches: true stops the lanes after the batch in flight. */
  readonly shouldStop?: () => boolean;
}

/** One pass: the lanes work until no job is left to claim. */
export async function runJobsOnce(context: KmsContext, settings: JobSettings, options: JobPassOptions): Promise<JobPassResult> {
  const done = new Set<number>();
  const totals = { batches: 0, finished: 0, failures: 0 };
  const stop = options.shouldStop ?? (() => false);

  const lane = async (): Promise<void> => {
    while (!stop()) {
      const job = await claimJob(context.db, {
        workerId: settings.workerId,
        now: context.clock.now(),
        leaseMs: settings.leaseMs,
        excluding: [...done],
      });
      if (job === undefined) return;
      const jobId = Number(job.job_id);
      const handler = HANDLERS[job.kind as JobKind];
      if (handler === undefined) {
        done.add(jobId);
        await abandonJob(context.db, jobId, context.clock.now(), `unknown job kind ${job.kind}`);
        continue;
      }
      let session: JobSession | undefined;
      try {
        session = await handler.open(context, job, settings);
        for (;;) {
          if (stop()) return;
          const outcome = await session.runBatch();
          if (outcome === "applied") {
            totals.batches++;
            // Let I/O in: PGlite answers through microtasks alone, so a long job would otherwise starve the server's sockets and timers.
            await new Promise((resolve) => setImmediate(resolve));
            continue;
          }
          done.add(jobId);
          if (outcome === "finished") {
            totals.finished++;
            options.logger.info("job finished", jobFields(job));
          }
          break;
        }
      } catch (error) {
        done.add(jobId);
        if (error instanceof LeaseLostError) {
          options.logger.warn("job lease lost; the batch in flight was rolled back", { ...jobFields(job), worker: settings.workerId });
        } else if (error instanceof JobCannotCompleteError) {
          await abandonJob(context.db, jobId, context.clock.now(), error.message);
          options.logger.error("job cannot complete; marked FAILED", { ...jobFields(job), reason: error.message });
        } else {
          totals.failures++;
          const message = error instanceof Error ? error.message : String(error);
          const attempts = await recordFailure(context.db, jobId, settings.workerId, message, context.clock.now()).catch(() => undefined);
          options.logger.warn("job attempt failed; retrying after a back-off", { ...jobFields(job), attempts, err: error });
        }
      } finally {
        session?.close();
      }
    }
  };

  await Promise.all(Array.from({ length: Math.max(1, settings.concurrency) }, lane));
  return totals;
}

/**
 * Runs passes until one finds nothing to do: every job that can run now has
 * run to completion (jobs backing off after a failure are left). For tests and
 * benchmarks that drive the work by hand.
 */
export async function drainJobs(context: KmsContext, settings: JobSettings, options: JobPassOptions): Promise<JobPassResult> {
  const totals = { batches: 0, finished: 0, failures: 0 };
  for (;;) {
    const pass = await runJobsOnce(context, settings, options);
    totals.batches += pass.batches;
    totals.finished += pass.finished;
    totals.failures += pass.failures;
    if (pass.batches === 0 && pass.finished === 0) return totals;
    if (options.shouldStop?.() === true) return totals;
  }
}

function jobFields(job: JobRow): Record<string, unknown> {
  return {
    job_id: Number(job.job_id),
    kind: job.kind,
    ...(job.tenant_id === null ? {} : { tenant_id: job.tenant_id }),
    ...(job.key_id === null ? {} : { key_id: job.key_id }),
    ...(job.kek_version === null ? {} : { kek_version: job.kek_version }),
    ...(job.root_key_id === null ? {} : { root_key_id: job.root_key_id }),
  };
}

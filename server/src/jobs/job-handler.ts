/**
 * What a kind of job provides to the runner, and the settings it runs under.
 * One file per kind implements it: kek-rewrap.ts, root-rewrap.ts.
 */
import type { KmsContext } from "../service/kms-context.js";
import type { JobKind, JobRow } from "./job-store.js";

/** How a worker runs jobs. */
export interface JobSettings {
  /** Names this worker in leases and job_batches rows; unique per process. */
  readonly workerId: string;
  /** Rows per batch (one transaction each). */
  readonly batchSize: number;
  /** How long a claimed job stays ours without a batch committed. */
  readonly leaseMs: number;
  /** Batches applied at once by this process (lanes); 1 on PGlite, whose one session serialises them anyway. */
  readonly concurrency: number;
}

export const DEFAULT_BATCH_SIZE = 1_000;
export const DEFAULT_LEASE_MS = 30_000;

/** The log port background work writes to (the API logger fits it). */
export interface BackgroundLogger {
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
  error(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

/**
 * - applied: a batch committed; there may be more.
 * - finished: this call marked the job DONE.
 * - idle: nothing to take now: what is left is locked by batches in flight (whose lanes finish the job),
 *   or the job is no longer PENDING (finished elsewhere, or superseded).
 */
export type BatchOutcome = "applied" | "finished" | "idle";

/** One lane's hold on one job: whatever was unwrapped for it lives until `close`. */
export interface JobSession {
  /** Applies one batch in one transaction, or finishes the job when nothing is left. */
  runBatch(): Promise<BatchOutcome>;
  /** Wipes what the session unwrapped. */
  close(): void;
}

export interface JobHandler {
  readonly kind: JobKind;
  open(context: KmsContext, job: JobRow, settings: JobSettings): Promise<JobSession>;
}

/** Thrown by a handler when its job can never complete (its subject is gone): the job is marked FAILED. */
export class JobCannotCompleteError extends Error {
  override readonly name = "JobCannotCompleteError";
}

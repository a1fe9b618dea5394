/**
 * The jobs table: background work claimed through the database, so several
 * replicas on one PostgreSQL share it and none is lost when one dies.
 *
 * - A job is claimed with a lease (`lease_owner`, `lease_until`). A free job
 *   is one with no lease or an expired one; the claim takes it with
 *   `FOR UPDATE SKIP LOCKED`, so two workers never take the same job at once,
 *   and a dead worker's job is taken over once its lease runs out.
 * - Every batch is applied in one transaction that ends by advancing the job
 *   (`done`, `batches`, the lease) WHERE the lease is still ours: a worker
 *   that lost its lease (paused, cut off) finds no row and rolls its batch
 *   back. The same statement writes the job_batches row numbered from the
 *   job's counter; its primary key (job_id, batch_no) is the proof that no
 *   batch was applied twice.
 * - A failure is recorded on the job (attempts, last_error) and the lease is
 *   given up with a back-off: `lease_until` in the future and no owner keeps
 *   the job unclaimable until then, and other jobs go on meanwhile.
 */
import { sql, type Selectable } from "kysely";
import type { Executor, JobsTable } from "../storage/database.js";

export type JobKind = "KEK_REWRAP" | "ROOT_REWRAP";
export type JobRow = Selectable<JobsTable>;

export interface NewJob {
  readonly kind: JobKind;
  readonly tenantId?: string;
  readonly keyId?: string;
  readonly kekVersion?: number;
  readonly rootKeyId?: string;
  readonly total: number;
  readonly now: Date;
}

/** Inserts a PENDING job in the caller's transaction; returns its id. */
export async function enqueueJob(tx: Executor, job: NewJob): Promise<number> {
  const row = await tx
    .insertInto("jobs")
    .values({
      kind: job.kind,
      tenant_id: job.tenantId ?? null,
      key_id: job.keyId ?? null,
      kek_version: job.kekVersion ?? null,
      root_key_id: job.rootKeyId ?? null,
      state: "PENDING",
      total: job.total,
      done: 0,
      lease_owner: null,
      lease_until: null,
      attempts: 0,
      last_error: null,
      create_time: job.now,
      update_time: job.now,
      finish_time: null,
    })
    .returning("job_id")
    .executeTakeFirstOrThrow();
  return Number(row.job_id);
}

export interface ClaimOptions {
  readonly workerId: string;
  readonly now: Date;
  readonly leaseMs: number;
  /** Jobs this pass is done with (finished, failed, or nothing left to take for now). */
  readonly excluding: readonly number[];
}

/**
 * A job for this worker: first a free one (no lease, or an expired one),
 * which it leases; else one it already holds, for another lane to help with.
 * Taking over a lease another worker let expire counts as that worker's
 * failed attempt.
 */
export async function claimJob(db: Executor, options: ClaimOptions): Promise<JobRow | undefined> {
  const { workerId, now } = options;
  const leaseUntil = new Date(now.getTime() + options.leaseMs);
  const excluded = options.excluding.length === 0 ? [-1] : [...options.excluding];
  const { rows } = await sql<JobRow>`
    update jobs set
      lease_owner = ${workerId},
      lease_until = ${leaseUntil},
      update_time = ${now},
      attempts = case when lease_owner is null or lease_owner = ${workerId} then attempts else attempts + 1 end,
      last_error = case when lease_owner is null or lease_owner = ${workerId} then last_error
                        else 'the lease of worker ' || lease_owner || ' expired before it finished' end
    where job_id = (
      select job_id from jobs
      where state = 'PENDING'
        and (lease_until is null or lease_until <= ${now})
        and job_id <> all(${excluded}::bigint[])
      order by job_id
      limit 1
      for update skip locked)
    returning *`.execute(db);
  if (rows[0] !== undefined) return rows[0];
  return db
    .selectFrom("jobs")
    .selectAll()
    .where("state", "=", "PENDING")
    .where("lease_owner", "=", workerId)
    .where("lease_until", ">", now)
    .where("job_id", "not in", excluded)
    .orderBy("job_id")
    .limit(1)
    .executeTakeFirst();
}

/** Thrown inside a batch's transaction when the job's lease is no longer ours: the batch rolls back. */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  constructor(jobId: number, workerId: string) {
    super(`job ${jobId}: worker ${workerId} no longer holds its lease (another worker took it over, or it was superseded)`);
  }
}

/**
 * Records an applied batch inside its transaction: advances `done` by `rows`,
 * counts the batch, renews the lease, and writes the job_batches row — all in
 * one statement, only while the lease is ours. Returns the batch number;
 * throws LeaseLostError (the caller's transaction then rolls back) otherwise.
 */
export async function recordBatch(
  tx: Executor,
  job: { readonly jobId: number; readonly workerId: string },
  rows: number,
  now: Date,
  leaseMs: number,
): Promise<number> {
  const leaseUntil = new Date(now.getTime() + leaseMs);
  const { rows: result } = await sql<{ batch_no: number }>`
    with advanced as (
      update jobs set done = done + ${rows}, batches = batches + 1, lease_until = ${leaseUntil}, update_time = ${now}
      where job_id = ${job.jobId} and state = 'PENDING' and lease_owner = ${job.workerId}
      returning job_id, batches)
    insert into job_batches (job_id, batch_no, rows, worker, apply_time)
    select job_id, batches, ${rows}, ${job.workerId}, ${now} from advanced
    returning batch_no`.execute(tx);
  const batch = result[0];
  if (batch === undefined) throw new LeaseLostError(job.jobId, job.workerId);
  return batch.batch_no;
}

/** Locks a job's row for the rest of the transaction; undefined unless it is still PENDING. */
export async function lockPendingJob(tx: Executor, jobId: number): Promise<JobRow | undefined> {
  return tx.selectFrom("jobs").selectAll().where("job_id", "=", jobId).where("state", "=", "PENDING").forUpdate().executeTakeFirst();
}

/** Marks a job DONE (call with its row locked); `note` is kept in last_error for a job that ended without its work (superseded). */
export async function finishJob(tx: Executor, jobId: number, now: Date, note?: string): Promise<void> {
  await tx
    .updateTable("jobs")
    .set({
      state: "DONE",
      finish_time: now,
      update_time: now,
      lease_owner: null,
      lease_until: null,
      ...(note === undefined ? {} : { last_error: note }),
    })
    .where("job_id", "=", jobId)
    .execute();
}

/** Marks a job FAILED for good: its subject is gone and it can never complete. */
export async function abandonJob(db: Executor, jobId: number, now: Date, reason: string): Promise<void> {
  await db
    .updateTable("jobs")
    .set({ state: "FAILED", finish_time: now, update_time: now, lease_owner: null, lease_until: null, last_error: truncated(reason) })
    .where("job_id", "=", jobId)
    .where("state", "=", "PENDING")
    .execute();
}

/** The first retry waits this long; each further failure doubles it, up to BACKOFF_MAX_MS. */
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_MAX_MS = 15 * 60_000;

export function backoffMs(attempts: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
}

/**
 * Records a failed attempt and gives the lease up with a back-off, if the
 * lease is still ours. Returns the job's attempts so far (undefined when the
 * lease was no longer ours).
 */
export async function recordFailure(db: Executor, jobId: number, workerId: string, message: string, now: Date): Promise<number | undefined> {
  // The back-off after the n-th failure is backoffMs(n): attempts here is still n - 1.
  const { rows } = await sql<{ attempts: number }>`
    update jobs set
      attempts = attempts + 1,
      last_error = ${truncated(message)},
      lease_owner = null,
      lease_until = ${now}::timestamptz + make_interval(secs => least(
        ${BACKOFF_MAX_MS / 1000}::double precision,
        ${BACKOFF_BASE_MS / 1000}::double precision * power(2, least(attempts, 30)))),
      update_time = ${now}
    where job_id = ${jobId} and state = 'PENDING' and lease_owner = ${workerId}
    returning attempts`.execute(db);
  return rows[0]?.attempts;
}

/** Gives up every lease this worker holds (on shutdown), so other replicas continue at once. */
export async function releaseLeases(db: Executor, workerId: string, now: Date): Promise<number> {
  const result = await db
    .updateTable("jobs")
    .set({ lease_owner: null, lease_until: null, update_time: now })
    .where("lease_owner", "=", workerId)
    .where("state", "=", "PENDING")
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

function truncated(message: string): string {
  return message.length <= 1_000 ? message : `${message.slice(0, 997)}...`;
}

/**
 * The queries of the lifecycle jobs (scheduled rotation, purge, destruction)
 * and of decrypt tracking. Work is claimed through the database — row locks
 * with SKIP LOCKED, and a lease on next_rotation_time — so several replicas
 * on one PostgreSQL share it without doing anything twice.
 */
import { sql } from "kysely";
import type { Executor, KeyRow } from "./database.js";
import { NO_REPLICA_SYNC } from "./key-row-writes.js";
import { withTransaction } from "./with-transaction.js";

export interface KeyName {
  readonly tenantId: string;
  readonly keyId: string;
}

/**
 * Claims up to `limit` ENABLED keys whose next_rotation_time has come, oldest
 * due first, skipping rows another replica holds, and moves their
 * next_rotation_time to `leaseUntil` so no other replica claims them again
 * until this one has rotated them (which sets the real next time) or died
 * (then the lease runs out and another replica retries). Uses the partial
 * index on next_rotation_time. Call it in its own short transaction.
 */
export async function claimDueRotations(tx: Executor, now: Date, limit: number, leaseUntil: Date): Promise<KeyName[]> {
  const due = await tx
    .selectFrom("keys")
    .select(["tenant_id", "key_id"])
    .where("state", "=", "ENABLED")
    .where("next_rotation_time", "<=", now)
    .orderBy("next_rotation_time")
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
  if (due.length > 0) {
    await tx
      .updateTable("keys")
      .set({ next_rotation_time: leaseUntil })
      .where((eb) => eb(eb.refTuple("tenant_id", "key_id"), "in", due.map((row) => eb.tuple(row.tenant_id, row.key_id))))
      .execute();
  }
  return due.map((row) => ({ tenantId: row.tenant_id, keyId: row.key_id }));
}

/** Sets next_rotation_time of an ENABLED key (a revoked or destroyed one keeps null). */
export async function setNextRotationTime(db: Executor, key: KeyName, time: Date): Promise<void> {
  await db
    .updateTable("keys")
    .set({ next_rotation_time: time })
    .where("tenant_id", "=", key.tenantId)
    .where("key_id", "=", key.keyId)
    .where("state", "=", "ENABLED")
    .execute();
}

/**
 * Records a failed scheduled rotation on the key (one more consecutive
 * attempt) and when to retry it. A successful rotation clears it.
 */
export async function recordRotationFailure(
  db: Executor,
  key: KeyName,
  failure: { time: Date; message: string; retryAt: (attempts: number) => Date },
): Promise<number | undefined> {
  return withTransaction(db, async (tx) => {
    const row = await tx
      .selectFrom("keys")
      .select("rotation_failure_attempts")
      .where("tenant_id", "=", key.tenantId)
      .where("key_id", "=", key.keyId)
      .where("state", "=", "ENABLED")
      .forUpdate()
      .executeTakeFirst();
    if (row === undefined) return undefined;
    const attempts = row.rotation_failure_attempts + 1;
    await tx
      .updateTable("keys")
      .set({
        rotation_failure_time: failure.time,
        rotation_failure_message: failure.message,
        rotation_failure_attempts: attempts,
        next_rotation_time: failure.retryAt(attempts),
      })
      .where("tenant_id", "=", key.tenantId)
      .where("key_id", "=", key.keyId)
      .execute();
    return attempts;
  });
}

/** Moves a DEK version's last_decrypt_time forward to `time` (never back). */
export async function recordLastDecrypt(db: Executor, key: KeyName, version: number, time: Date): Promise<void> {
  await db
    .updateTable("dek_versions")
    .set({ last_decrypt_time: time })
    .where("tenant_id", "=", key.tenantId)
    .where("key_id", "=", key.keyId)
    .where("version", "=", version)
    .where((eb) => eb.or([eb("last_decrypt_time", "is", null), eb("last_decrypt_time", "<", time)]))
    .execute();
}

export interface DecryptRecord {
  readonly tenantId: string;
  readonly keyId: string;
  readonly version: number;
  readonly time: Date;
}

/**
 * `recordLastDecrypt` for many versions in one statement (each moves forward
 * only). Its commit does not wait for replicas (replica-synced-dialect.ts):
 * it makes nothing less usable, and a Decrypt may be waiting for it.
 */
export async function recordLastDecrypts(db: Executor, records: readonly DecryptRecord[]): Promise<void> {
  if (records.length === 0) return;
  const rows = sql.join(
    records.map((r) => sql`(${r.tenantId}::text, ${r.keyId}::text, ${r.version}::integer, ${r.time}::timestamptz)`),
  );
  await sql`
    ${sql.raw(NO_REPLICA_SYNC)}
    update dek_versions as d set last_decrypt_time = v.time
    from (values ${rows}) as v(tenant_id, key_id, version, time)
    where d.tenant_id = v.tenant_id and d.key_id = v.key_id and d.version = v.version
      and (d.last_decrypt_time is null or d.last_decrypt_time < v.time)
  `.execute(db);
}

/**
 * ENABLED keys with a superseded DEK version the purge may move now, after
 * the key `after` in (tenant_id, key_id) order. A prefilter in SQL of the
 * rule in domain/dek-purge-rules.ts, so that keys whose versions are all
 * still held back are not visited on every run; the rule itself decides,
 * under the key's lock.
 */
export async function findPurgeCandidateKeys(db: Executor, now: Date, after: KeyName | undefined, limit: number): Promise<KeyName[]> {
  const afterClause = after === undefined ? sql`true` : sql`(d.tenant_id, d.key_id) > (${after.tenantId}, ${after.keyId})`;
  const { rows } = await sql<{ tenant_id: string; key_id: string }>`
    select distinct d.tenant_id, d.key_id
    from dek_versions d
    join keys k on k.tenant_id = d.tenant_id and k.key_id = d.key_id
    where k.state = 'ENABLED'
      and d.state in ('DECRYPT_ONLY', 'PENDING_PURGE')
      and d.rotate_time + make_interval(secs => k.dek_grace_period_seconds) <= ${now}
      and (d.state = 'DECRYPT_ONLY' or (
        (d.last_decrypt_time is null or d.last_decrypt_time + make_interval(secs => k.decrypt_quiet_window_seconds) <= ${now})
        and not exists (select 1 from dataset_counts c
                        where c.tenant_id = d.tenant_id and c.key_id = d.key_id and c.dek_version = d.version)
        and not exists (select 1 from datasets s
                        where s.tenant_id = d.tenant_id and s.key_id = d.key_id
                          and (s.last_report_time is null or s.last_report_time < d.rotate_time))))
      and ${afterClause}
    order by d.tenant_id, d.key_id
    limit ${limit}`.execute(db);
  return rows.map((row) => ({ tenantId: row.tenant_id, keyId: row.key_id }));
}

/** REVOKED keys whose waiting period is over, after `after` in (tenant_id, key_id) order. */
export async function findKeysDueForDestruction(db: Executor, now: Date, after: KeyName | undefined, limit: number): Promise<KeyName[]> {
  let query = db
    .selectFrom("keys")
    .select(["tenant_id", "key_id"])
    .where("state", "=", "REVOKED")
    .where("scheduled_destroy_time", "<=", now);
  if (after !== undefined) {
    query = query.where((eb) => eb(eb.refTuple("tenant_id", "key_id"), ">", eb.tuple(after.tenantId, after.keyId)));
  }
  const rows = await query.orderBy("tenant_id").orderBy("key_id").limit(limit).execute();
  return rows.map((row) => ({ tenantId: row.tenant_id, keyId: row.key_id }));
}

/** Locks a key row unless another transaction holds it (then undefined: someone else is on it). */
export async function lockKeyUnlessBusy(tx: Executor, key: KeyName): Promise<KeyRow | undefined> {
  return tx
    .selectFrom("keys")
    .selectAll()
    .where("tenant_id", "=", key.tenantId)
    .where("key_id", "=", key.keyId)
    .forUpdate()
    .skipLocked()
    .executeTakeFirst();
}

/** Locks a key row against change (FOR SHARE) for the rest of the transaction; undefined when absent. */
export async function lockKeyShared(tx: Executor, key: KeyName): Promise<KeyRow | undefined> {
  return tx
    .selectFrom("keys")
    .selectAll()
    .where("tenant_id", "=", key.tenantId)
    .where("key_id", "=", key.keyId)
    .forShare()
    .executeTakeFirst();
}

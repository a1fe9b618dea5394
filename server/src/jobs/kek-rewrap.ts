/**
 * KEK_REWRAP: after a KEK rotation, re-wraps every DEK version still under the
 * retired KEK version with the key's primary KEK version, in batches; when
 * none is left the retired version is DESTROYED (its material erased).
 *
 * One batch, one transaction:
 *   1. the key row FOR SHARE — a rotation of the key (FOR UPDATE) waits for
 *      the batch, and the batch wraps under the primary version of the moment;
 *   2. up to `batchSize` DEK rows under the old version, in version order
 *      from where this lane's last batch ended (index on tenant, key, KEK
 *      version, version), FOR UPDATE SKIP LOCKED, so concurrent lanes and
 *      replicas take disjoint rows;
 *   3. unwrap with the old KEK, wrap with the primary (same AAD: tenant, key,
 *      DEK version), in memory, each plaintext wiped at once;
 *   4. one UPDATE for the whole batch (`FROM unnest(versions, blobs)`);
 *   5. the job advanced and the batch recorded (job-store `recordBatch`,
 *      only while our lease holds), then the KEK version's progress counter.
 * A customer-managed (BYOK) key's KEK versions are unwrapped through the
 * customer's KMS (the old one under the key it was wrapped with, which an
 * UpdateKey of customer_key leaves behind). If that KMS cannot be reached or
 * refuses, the session fails before a batch is applied (or the batch rolls
 * back); the runner records the failure and retries after a back-off, so the
 * job waits for the customer's key and resumes where it stopped.
 * The hot path reads a DEK row and the KEK version that wraps it in one
 * statement, so it sees either the old pair or the new one, never a mix:
 * GenerateDataKey and Decrypt never wait for or fail because of a batch.
 */
import { sql } from "kysely";
import { importRsaPublicKey } from "../crypto/rsa-oaep.js";
import { CryptoFailure } from "../crypto/crypto-failure.js";
import { wipe } from "../crypto/secure-buffer.js";
import type { KekAlgorithm } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import type { Executor } from "../storage/database.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { dekWrapContext, importKek, unwrapDek, wipeKek, wrapDek, type KekForWrapping, type UnwrappedKek } from "../service/kek-material.js";
import { unwrapKekSecret } from "../service/kek-access.js";
import type { KmsContext } from "../service/kms-context.js";
import { JobCannotCompleteError, type BatchOutcome, type JobHandler, type JobSession, type JobSettings } from "./job-handler.js";
import { enqueueJob, finishJob, lockPendingJob, recordBatch, type JobRow } from "./job-store.js";

/** RSA-OAEP unwrapping costs milliseconds a DEK: smaller batches keep each transaction short. */
const RSA_BATCH_MAX = 64;

/**
 * In the rotating transaction (key row locked): marks `kekVersion` RETIRING,
 * counts the DEK versions it wraps as the total to re-wrap, and enqueues the
 * job. Returns the job id.
 */
export async function enqueueKekRewrap(
  tx: Executor,
  input: { readonly tenantId: string; readonly keyId: string; readonly kekVersion: number; readonly now: Date },
): Promise<number> {
  const { tenantId, keyId, kekVersion, now } = input;
  const counted = await tx
    .selectFrom("dek_versions")
    .select((eb) => eb.fn.countAll<number | bigint | string>().as("n"))
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("kek_version", "=", kekVersion)
    .where("wrapped_material", "is not", null)
    .executeTakeFirstOrThrow();
  const total = Number(counted.n);
  await tx
    .updateTable("kek_versions")
    .set({ state: "RETIRING", retire_time: now, total_dek_count: total, rewrapped_dek_count: 0 })
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", kekVersion)
    .execute();
  return enqueueJob(tx, { kind: "KEK_REWRAP", tenantId, keyId, kekVersion, total, now });
}

export const kekRewrapJob: JobHandler = {
  kind: "KEK_REWRAP",
  open: openKekRewrap,
};

interface PrimaryWrapping {
  readonly version: number;
  readonly kek: KekForWrapping;
}

async function openKekRewrap(context: KmsContext, job: JobRow, settings: JobSettings): Promise<JobSession> {
  const jobId = Number(job.job_id);
  const { tenant_id: tenantId, key_id: keyId, kek_version: oldVersion } = job;
  if (tenantId === null || keyId === null || oldVersion === null) {
    throw new JobCannotCompleteError(`job ${jobId}: a KEK re-wrap must name tenant, key and KEK version`);
  }
  const key = await context.db.selectFrom("keys").select("kek_algorithm").where("tenant_id", "=", tenantId).where("key_id", "=", keyId).executeTakeFirst();
  const old = await context.db
    .selectFrom("kek_versions")
    .select(["wrapped_material", "root_key_id", "root_provider"])
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", oldVersion)
    .executeTakeFirst();
  if (key === undefined || old === undefined) {
    throw new JobCannotCompleteError(`job ${jobId}: key ${tenantId}/${keyId} or its KEK version ${oldVersion} no longer exists`);
  }
  const algorithm = key.kek_algorithm as KekAlgorithm;
  const limit = algorithm === "RSA_4096" ? Math.min(settings.batchSize, RSA_BATCH_MAX) : settings.batchSize;
  // Under the master key, or under the tenant's own key for a customer-managed (BYOK) KEK version.
  const kekRow = (kekVersion: number, wrappedKek: Uint8Array, row: { readonly root_key_id: string; readonly root_provider: string }) => ({
    tenantId,
    keyId,
    keyUid: new Uint8Array(0),
    kekVersion,
    kekAlgorithm: algorithm,
    wrappedKek,
    rootKeyId: row.root_key_id,
    rootProvider: row.root_provider,
  });
  // Null once destroyed (by this job's end, or with the whole key): then only the finish is left to do.
  const oldKek: UnwrappedKek | undefined =
    old.wrapped_material === null
      ? undefined
      : importKek(algorithm, await unwrapKekSecret(context, kekRow(oldVersion, old.wrapped_material, old)));
  let primary: PrimaryWrapping | undefined;
  let closed = false;
  // Where this session's next batch starts (in DEK version order): past what it re-wrapped already, so
  // a batch never steps over the index entries earlier batches left behind. Rows below it that others
  // held locked (or whose batch rolled back) are found by one pass from the start before finishing.
  let cursor = 0;
  const takeBatch = async (tx: Executor, after: number) =>
    (
      await sql<{ version: number; wrapped_material: Buffer }>`
        select version, wrapped_material from dek_versions
        where tenant_id = ${tenantId} and key_id = ${keyId} and kek_version = ${oldVersion} and version > ${after}
          and wrapped_material is not null
        order by version
        limit ${limit}
        for update skip locked`.execute(tx)
    ).rows;

  const wrappingFor = async (tx: Executor, version: number): Promise<PrimaryWrapping> => {
    if (primary?.version === version) return primary;
    releasePrimary();
    const row = await tx
      .selectFrom("kek_versions")
      .select(["wrapped_material", "public_key", "root_key_id", "root_provider"])
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .where("version", "=", version)
      .executeTakeFirst();
    if (row === undefined) throw new Error(`key ${tenantId}/${keyId} has no row for its primary KEK version ${version}`);
    let kek: KekForWrapping;
    if (algorithm === "RSA_4096") {
      if (row.public_key === null) throw new Error(`RSA KEK version ${version} of key ${keyId} has no public key`);
      kek = { algorithm, publicKey: importRsaPublicKey(Buffer.from(row.public_key)) };
    } else {
      if (row.wrapped_material === null) throw new Error(`primary KEK version ${version} of key ${keyId} has no material`);
      kek = { algorithm, key: await unwrapKekSecret(context, kekRow(version, row.wrapped_material, row)) };
    }
    primary = { version, kek };
    return primary;
  };
  const releasePrimary = (): void => {
    if (primary?.kek.algorithm === "AES_256") wipe(primary.kek.key);
    primary = undefined;
  };

  const finish = async (tx: Executor, now: Date): Promise<BatchOutcome> => {
    if ((await lockPendingJob(tx, jobId)) === undefined) return "idle"; // finished by another lane or worker, or superseded
    const left = await tx
      .selectFrom("dek_versions")
      .select("version")
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .where("kek_version", "=", oldVersion)
      .where("wrapped_material", "is not", null)
      .limit(1)
      .executeTakeFirst();
    // What is left is locked by batches in flight; the lane that commits the last one finishes.
    if (left !== undefined) return "idle";
    const destroyed = await tx
      .updateTable("kek_versions")
      .set({ state: "DESTROYED", wrapped_material: null, destroy_time: now })
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .where("version", "=", oldVersion)
      .where("state", "<>", "DESTROYED")
      .returning("version")
      .executeTakeFirst();
    await finishJob(tx, jobId, now);
    if (destroyed !== undefined) await appendKeyEvent(tx, { tenantId, keyId, type: "KEK_VERSION_DESTROYED", kekVersion: oldVersion, time: now });
    return "finished";
  };

  const runBatch = async (): Promise<BatchOutcome> => {
    if (closed) throw new Error("the job session is closed");
    if (primary === undefined && oldKek !== undefined) {
      // A customer-managed primary is unwrapped by the customer's KMS: do it before the batch's transaction
      // holds row locks (the transaction re-reads the primary, and takes another only if it moved meanwhile).
      const current = await context.db.selectFrom("keys").select("primary_kek_version").where("tenant_id", "=", tenantId).where("key_id", "=", keyId).executeTakeFirst();
      if (current !== undefined && current.primary_kek_version !== oldVersion) await wrappingFor(context.db, current.primary_kek_version);
    }
    const outcome = await context.db.transaction().execute(async (tx): Promise<BatchOutcome> => {
      const now = context.clock.now();
      const keyRow = await tx
        .selectFrom("keys")
        .select("primary_kek_version")
        .where("tenant_id", "=", tenantId)
        .where("key_id", "=", keyId)
        .forShare()
        .executeTakeFirst();
      if (keyRow === undefined) throw new JobCannotCompleteError(`job ${jobId}: key ${tenantId}/${keyId} no longer exists`);
      let rows = await takeBatch(tx, cursor);
      if (rows.length === 0 && cursor > 0) rows = await takeBatch(tx, (cursor = 0));
      if (rows.length === 0) return finish(tx, now);
      cursor = rows[rows.length - 1]!.version;
      if (oldKek === undefined) {
        throw new JobCannotCompleteError(`job ${jobId}: DEK versions of key ${tenantId}/${keyId} are under KEK version ${oldVersion}, whose material is gone`);
      }
      if (keyRow.primary_kek_version === oldVersion) throw new Error(`KEK version ${oldVersion} of key ${keyId} is still the primary one`);
      const target = await wrappingFor(tx, keyRow.primary_kek_version);

      const versions: number[] = [];
      const blobs: Buffer[] = [];
      for (const row of rows) {
        const aad = dekWrapContext(tenantId, keyId, row.version);
        let plaintext: Buffer;
        try {
          plaintext = unwrapDek(oldKek, row.wrapped_material, aad);
        } catch (error) {
          if (error instanceof CryptoFailure) {
            throw new KmsError("INTERNAL", `DEK version ${row.version} of key ${tenantId}/${keyId} failed to unwrap under KEK version ${oldVersion}`, { cause: error });
          }
          throw error;
        }
        try {
          blobs.push(wrapDek(target.kek, plaintext, aad));
        } finally {
          wipe(plaintext);
        }
        versions.push(row.version);
      }
      // The rows are locked by this transaction, so no "kek_version = old" test is needed here; leaving it
      // out keeps the plan on primary-key probes whatever the statistics say about the old version's rows.
      const updated = await sql`
        update dek_versions as d set kek_version = ${target.version}, wrapped_material = v.wrapped
        from unnest(${versions}::integer[], ${blobs}::bytea[]) as v (version, wrapped)
        where d.tenant_id = ${tenantId} and d.key_id = ${keyId} and d.version = v.version`.execute(tx);
      if (Number(updated.numAffectedRows ?? 0n) !== rows.length) {
        throw new Error(`re-wrap of key ${tenantId}/${keyId}: ${rows.length} rows locked but ${String(updated.numAffectedRows)} updated`);
      }
      await recordBatch(tx, { jobId, workerId: settings.workerId }, rows.length, now, settings.leaseMs);
      await tx
        .updateTable("kek_versions")
        .set((eb) => ({ rewrapped_dek_count: eb("rewrapped_dek_count", "+", rows.length) }))
        .where("tenant_id", "=", tenantId)
        .where("key_id", "=", keyId)
        .where("version", "=", oldVersion)
        .execute();
      return "applied";
    });
    // This process's copy of the destroyed material goes at once; other replicas' caches expire it.
    if (outcome === "finished") context.kekCache.deleteKey(tenantId, keyId);
    return outcome;
  };

  return {
    runBatch,
    close() {
      closed = true;
      if (oldKek !== undefined) wipeKek(oldKek);
      releasePrimary();
    },
  };
}


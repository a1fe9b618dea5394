/**
 * ROOT_REWRAP: after a master-key rotation, re-wraps every KEK version still
 * under an older master key (`kek_versions.root_key_id` other than the job's
 * target) with the target, in batches; when none is left, the RETIRING master
 * keys become RETIRED. Customer-managed (BYOK) KEK versions are wrapped by the
 * tenant's own key, not the master key, and are left alone.
 *
 * Same guarantees as the KEK re-wrap: one transaction a batch, rows taken
 * FOR UPDATE SKIP LOCKED, one UPDATE for the batch, the batch recorded under
 * our lease. A KEK's material does not change, only its wrapping, so the KEK
 * cache stays valid and the hot path reads either wrapping whole.
 *
 * The job belongs to one target. A newer rotation supersedes it (marks it
 * DONE and enqueues its own), and a batch that finds its target no longer
 * CURRENT stops.
 */
import { sql } from "kysely";
import { constantTimeEqual, wipe } from "../crypto/secure-buffer.js";
import type { KekWrapContext, RootKeyProvider } from "../domain/root-key-provider.js";
import type { Executor } from "../storage/database.js";
import { CUSTOMER_KEY_PROVIDERS } from "../service/customer-keys.js";
import type { KmsContext } from "../service/kms-context.js";
import { syncRootKey } from "../service/root-key-registry.js";
import { JobCannotCompleteError, type BatchOutcome, type JobHandler, type JobSession, type JobSettings } from "./job-handler.js";
import { finishJob, lockPendingJob, recordBatch, type JobRow } from "./job-store.js";

/** Each KEK is a provider call (an HSM or cloud round trip): batches stay small. */
const ROOT_BATCH_MAX = 200;
/** Provider calls in flight at once within a batch. */
const PROVIDER_PARALLELISM = 8;

export const rootRewrapJob: JobHandler = {
  kind: "ROOT_REWRAP",
  open: openRootRewrap,
};

interface KekToRewrap {
  readonly tenant_id: string;
  readonly key_id: string;
  readonly version: number;
  readonly wrapped_material: Buffer;
  readonly root_key_id: string;
}

async function openRootRewrap(context: KmsContext, job: JobRow, settings: JobSettings): Promise<JobSession> {
  const jobId = Number(job.job_id);
  const target = job.root_key_id;
  if (target === null) throw new JobCannotCompleteError(`job ${jobId}: a master-key re-wrap must name its target master key`);
  const limit = Math.min(settings.batchSize, ROOT_BATCH_MAX);
  const provider = context.rootProvider;

  const finish = async (tx: Executor, now: Date, superseded: boolean): Promise<BatchOutcome> => {
    if ((await lockPendingJob(tx, jobId)) === undefined) return "idle"; // finished by another lane or worker, or superseded
    if (superseded) {
      await finishJob(tx, jobId, now, `superseded: master key ${target} is no longer the current one`);
      return "finished";
    }
    const left = await tx
      .selectFrom("kek_versions")
      .select("version")
      .where("wrapped_material", "is not", null)
      .where("root_provider", "not in", CUSTOMER_KEY_PROVIDERS)
      .where("root_key_id", "<>", target)
      .limit(1)
      .executeTakeFirst();
    if (left !== undefined) return "idle";
    await tx.updateTable("root_keys").set({ state: "RETIRED" }).where("state", "=", "RETIRING").execute();
    await finishJob(tx, jobId, now);
    return "finished";
  };

  const runBatch = async (): Promise<BatchOutcome> =>
    context.db.transaction().execute(async (tx): Promise<BatchOutcome> => {
      const now = context.clock.now();
      // A rotation (which locks the CURRENT row FOR UPDATE) waits for this batch, and vice versa.
      const targetRow = await tx.selectFrom("root_keys").select("state").where("root_key_id", "=", target).forShare().executeTakeFirst();
      if (targetRow?.state !== "CURRENT") return finish(tx, now, true);
      const { rows } = await sql<KekToRewrap>`
        select tenant_id, key_id, version, wrapped_material, root_key_id from kek_versions
        where wrapped_material is not null and root_key_id <> ${target}
          and root_provider <> all(${[...CUSTOMER_KEY_PROVIDERS]}::text[])
        limit ${limit}
        for update skip locked`.execute(tx);
      if (rows.length === 0) return finish(tx, now, false);
      if (provider.currentKeyId !== target) {
        throw new Error(`this server's ${provider.name} provider wraps under ${provider.currentKeyId}, not the current master key ${target}`);
      }
      // Read before the wraps: the record must name the provider that wrapped.
      const targetProvider = provider.name;
      const blobs = await mapLimited(rows, PROVIDER_PARALLELISM, async (row) => {
        const wrapContext = { tenantId: row.tenant_id, keyId: row.key_id, kekVersion: row.version };
        const plaintext = await provider.unwrap(row.wrapped_material, wrapContext, row.root_key_id);
        try {
          const blob = await provider.wrap(plaintext, wrapContext);
          // Each batch proves the target can open what it wraps before any old blob is replaced (a key
          // allowed to encrypt but not decrypt would otherwise strand every KEK it re-wraps).
          if (row === rows[0]) await proveUnwraps(provider, blob, plaintext, wrapContext, target);
          return blob;
        } finally {
          wipe(plaintext);
        }
      });
      // The target row's share lock keeps a switch or rotation out until this batch commits; this guards the rest.
      if (provider.currentKeyId !== target || provider.name !== targetProvider) throw new Error(`the master key changed during a re-wrap batch of job ${jobId}; the batch is rolled back`);
      const updated = await sql`
        update kek_versions as k set wrapped_material = v.wrapped, root_key_id = ${target}, root_provider = ${targetProvider}
        from unnest(${rows.map((r) => r.tenant_id)}::text[], ${rows.map((r) => r.key_id)}::text[],
                    ${rows.map((r) => r.version)}::integer[], ${blobs}::bytea[]) as v (tenant_id, key_id, version, wrapped)
        where k.tenant_id = v.tenant_id and k.key_id = v.key_id and k.version = v.version and k.wrapped_material is not null`.execute(tx);
      if (Number(updated.numAffectedRows ?? 0n) !== rows.length) {
        throw new Error(`master-key re-wrap: ${rows.length} KEK versions locked but ${String(updated.numAffectedRows)} updated`);
      }
      await recordBatch(tx, { jobId, workerId: settings.workerId }, rows.length, now, settings.leaseMs);
      return "applied";
    });

  // Wrap under the target: this replica's provider may not know yet that it is current.
  const current = await syncRootKey(context);
  if (current.root_key_id !== target) {
    return { runBatch: () => context.db.transaction().execute((tx) => finish(tx, context.clock.now(), true)), close() {} };
  }
  return { runBatch, close() {} };
}

async function mapLimited<T, R>(items: readonly T[], parallelism: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallelism, items.length) }, worker));
  return results;
}

async function proveUnwraps(
  provider: RootKeyProvider,
  blob: Buffer,
  plaintext: Uint8Array,
  wrapContext: KekWrapContext,
  target: string,
): Promise<void> {
  const back = await provider.unwrap(blob, wrapContext, target);
  try {
    if (!constantTimeEqual(back, plaintext)) throw new Error(`master key ${target} did not give back what it wrapped; the re-wrap batch is rolled back`);
  } finally {
    wipe(back);
  }
}

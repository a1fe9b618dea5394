/**
 * RotateRootKey: a new master-key version becomes CURRENT (new KEKs are
 * wrapped under it at once), the previous one RETIRING, and a ROOT_REWRAP job
 * re-wraps every KEK still under an older version in the background
 * (jobs/root-rewrap.ts) — recorded in one transaction, which holds the
 * CURRENT row's lock so two rotations (from any replicas) serialise.
 *
 * The provider's new version is made inside that transaction but used only
 * after it commits: a rotation that fails to commit leaves an unused version
 * behind, never a current one the database does not know.
 */
import { KmsError } from "../domain/kms-error.js";
import { enqueueJob } from "../jobs/job-store.js";
import type { KmsContext } from "./kms-context.js";
import { countKeksByRootKey, nextRootKeyRotationTime, syncRootKey } from "./root-key-registry.js";

export interface RotateRootKeyOptions {
  /** Scheduled rotation: rotate only if the current version is at least this many days old. */
  readonly onlyIfOlderThanDays?: number;
}

/** Returns the new CURRENT master key id, or undefined when a scheduled rotation was not due. */
export async function rotateRootKey(context: KmsContext, options: RotateRootKeyOptions = {}): Promise<string | undefined> {
  const provider = context.rootProvider;
  const { createKeyVersion, useKeyVersion } = provider;
  if (createKeyVersion === undefined || useKeyVersion === undefined) {
    throw new KmsError(
      "INVALID_STATE_TRANSITION",
      `the ${provider.name} master key rotates inside its provider (automatic key rotation under one key reference): there is nothing for matih-kms to re-wrap`,
    );
  }
  await syncRootKey(context);
  const created = await context.db.transaction().execute(async (tx) => {
    const current = await tx.selectFrom("root_keys").selectAll().where("state", "=", "CURRENT").forUpdate().executeTakeFirst();
    if (current === undefined) throw new Error("no master key is registered as CURRENT");
    const now = context.clock.now();
    if (options.onlyIfOlderThanDays !== undefined) {
      const due = nextRootKeyRotationTime(current, options.onlyIfOlderThanDays);
      if (due === undefined || due > now) return undefined;
    }
    const newId = await createKeyVersion.call(provider);
    await tx.updateTable("root_keys").set({ state: "RETIRING", retire_time: now }).where("root_key_id", "=", current.root_key_id).execute();
    await tx.insertInto("root_keys").values({ root_key_id: newId, provider: provider.name, state: "CURRENT", create_time: now, retire_time: null }).execute();
    // A re-wrap still under way for an older target is superseded: the new job covers every KEK not under newId.
    await tx
      .updateTable("jobs")
      .set({ state: "DONE", finish_time: now, update_time: now, lease_owner: null, lease_until: null, last_error: `superseded by the rotation to master key ${newId}` })
      .where("kind", "=", "ROOT_REWRAP")
      .where("state", "=", "PENDING")
      .execute();
    const { pending } = await countKeksByRootKey({ db: tx }, newId);
    await enqueueJob(tx, { kind: "ROOT_REWRAP", rootKeyId: newId, total: pending, now });
    return newId;
  });
  if (created !== undefined) await useKeyVersion.call(provider, created);
  return created;
}

/**
 * Re-enqueues the master-key re-wrap when KEKs are left under an older master
 * key and none is under way (a replica wrapped a KEK under its previous view
 * of the current key after the last re-wrap finished). Returns the job id, if one was enqueued.
 */
export async function resumeRootRewrapIfNeeded(context: KmsContext): Promise<number | undefined> {
  return context.db.transaction().execute(async (tx) => {
    const current = await tx.selectFrom("root_keys").selectAll().where("state", "=", "CURRENT").forUpdate().executeTakeFirst();
    if (current === undefined) return undefined;
    const running = await tx.selectFrom("jobs").select("job_id").where("kind", "=", "ROOT_REWRAP").where("state", "=", "PENDING").limit(1).executeTakeFirst();
    if (running !== undefined) return undefined;
    const { pending } = await countKeksByRootKey({ db: tx }, current.root_key_id);
    if (pending === 0) return undefined;
    return enqueueJob(tx, { kind: "ROOT_REWRAP", rootKeyId: current.root_key_id, total: pending, now: context.clock.now() });
  });
}

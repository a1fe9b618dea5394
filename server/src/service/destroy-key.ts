/**
 * Destruction (crypto-shredding) of a REVOKED key whose waiting period is
 * over: every wrapped KEK version and every wrapped DEK version is erased
 * (set to null), the KEK versions become DESTROYED and the DEK versions
 * PURGED; the key row stays as a tombstone (DESTROYED, destroy_time, its
 * metadata, datasets and history), so every later use answers KEY_DESTROYED
 * and the key id is never handed out again. One transaction, under the key's
 * row lock, re-checking the state: a restore that won the lock wins.
 */
import { isDueForDestruction } from "../domain/key-state-machine.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { lockKeyUnlessBusy, type KeyName } from "../storage/lifecycle.repository.js";
import type { KmsContext } from "./kms-context.js";

/** True when this call destroyed the key; false when it was busy, restored, or not due. */
export async function destroyKeyIfDue(context: KmsContext, name: KeyName, now: Date): Promise<boolean> {
  const { tenantId, keyId } = name;
  const destroyed = await context.db.transaction().execute(async (tx) => {
    const row = await lockKeyUnlessBusy(tx, name);
    if (row === undefined || !isDueForDestruction({ state: row.state, scheduledDestroyTime: row.scheduled_destroy_time ?? undefined }, now)) {
      return false;
    }
    await tx
      .updateTable("dek_versions")
      .set((eb) => ({ state: "PURGED", wrapped_material: null, purge_time: eb.fn.coalesce("purge_time", eb.val(now)) }))
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .execute();
    await tx
      .updateTable("kek_versions")
      .set((eb) => ({
        state: "DESTROYED",
        wrapped_material: null,
        public_key: null,
        destroy_time: eb.fn.coalesce("destroy_time", eb.val(now)),
        retire_time: eb.fn.coalesce("retire_time", eb.val(now)),
      }))
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .execute();
    await tx
      .updateTable("keys")
      .set({ state: "DESTROYED", destroy_time: now, update_time: now, next_rotation_time: null })
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .execute();
    await appendKeyEvent(tx, { tenantId, keyId, type: "KEY_DESTROYED", time: now });
    return true;
  });
  // Revocation already dropped this replica's cached KEKs; drop them again in case a use raced it.
  if (destroyed) context.kekCache.deleteKey(tenantId, keyId);
  return destroyed;
}

/**
 * RevokeKey: the key becomes REVOKED at once. GenerateDataKey and Decrypt read
 * the key's state from the database on every call, so the very next call
 * fails whatever is cached; the local KEK cache is dropped too, so this
 * replica also stops holding the material. Revoking a revoked key is a no-op
 * (DELETE is idempotent); a destroyed key stays destroyed.
 */
import { requireValidId } from "../domain/identifiers.js";
import type { TenantKey } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import { addSeconds } from "../domain/rotation-policy.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { updateKey } from "../storage/key.repository.js";
import type { KmsContext } from "./kms-context.js";
import { readKeyRow, readTenantKey } from "./key-reader.js";

export interface RevokeKeyInput {
  readonly tenantId: string;
  readonly keyId: string;
}

export async function revokeKey(context: KmsContext, input: RevokeKeyInput): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  await context.db.transaction().execute(async (tx) => {
    const row = await readKeyRow(tx, tenantId, keyId, true);
    if (row.state === "DESTROYED") {
      throw new KmsError("KEY_DESTROYED", `key ${keyId} of tenant ${tenantId} is destroyed: it cannot be revoked again`);
    }
    if (row.state === "REVOKED") return;
    const now = context.clock.now();
    await updateKey(tx, tenantId, keyId, {
      state: "REVOKED",
      revoke_time: now,
      update_time: now,
      scheduled_destroy_time: addSeconds(now, row.revocation_waiting_period_seconds),
      next_rotation_time: null,
    });
    await appendKeyEvent(tx, { tenantId, keyId, type: "KEY_REVOKED", time: now });
  });
  context.kekCache.deleteKey(tenantId, keyId);
  return readTenantKey(context.db, tenantId, keyId);
}

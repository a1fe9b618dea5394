/**
 * RestoreKey: a REVOKED key whose waiting period is still running becomes
 * ENABLED again, with every version as it was; its next rotation time is
 * recomputed (a rotation that fell due meanwhile happens at the next
 * scheduler run). Anything else is refused (domain/key-state-machine.ts).
 */
import { requireValidId } from "../domain/identifiers.js";
import type { TenantKey } from "../domain/key-model.js";
import { assertRestorable } from "../domain/key-state-machine.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { updateKey } from "../storage/key.repository.js";
import type { KmsContext } from "./kms-context.js";
import { nextRotationTimeFor } from "./key-schedule.js";
import { readKeyRow, readTenantKey } from "./key-reader.js";

export async function restoreKey(context: KmsContext, input: { tenantId: string; keyId: string }): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  await context.db.transaction().execute(async (tx) => {
    const row = await readKeyRow(tx, tenantId, keyId, true);
    const now = context.clock.now();
    assertRestorable(
      { tenantId, keyId, state: row.state as TenantKey["state"], scheduledDestroyTime: row.scheduled_destroy_time ?? undefined },
      now,
    );
    await updateKey(tx, tenantId, keyId, {
      state: "ENABLED",
      revoke_time: null,
      scheduled_destroy_time: null,
      update_time: now,
      next_rotation_time: await nextRotationTimeFor(tx, row, { state: "ENABLED" }),
    });
    await appendKeyEvent(tx, { tenantId, keyId, type: "KEY_RESTORED", time: now });
  });
  return readTenantKey(context.db, tenantId, keyId);
}

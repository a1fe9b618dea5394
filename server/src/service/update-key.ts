/**
 * UpdateKey (PATCH): changes the description, the rotation policy or the
 * lifecycle policy of an ENABLED key — only the fields the update mask names.
 *
 * Mask paths, as AIP-134 has them:
 *  - "description";
 *  - "rotation_policy" / "lifecycle_policy": every period set in the request
 *    replaces the key's; periods left unset keep the key's current value;
 *  - "rotation_policy.dek_rotation_period" (and the other leaves): that one
 *    period; left unset in the request, it goes back to the platform default.
 * Everything is validated before anything is written; an invalid value is
 * refused with INVALID_FIELD naming it and nothing changes. The next rotation
 * time is recomputed from the new policy in the same transaction, so a
 * shortened period that makes a rotation overdue is picked up by the very
 * next scheduler run.
 */
import { requireValidId } from "../domain/identifiers.js";
import type { TenantKey } from "../domain/key-model.js";
import { assertUpdatable } from "../domain/key-state-machine.js";
import { invalidField } from "../domain/kms-error.js";
import { DEFAULT_LIFECYCLE_POLICY, resolveLifecyclePolicy, type LifecyclePolicy, type LifecyclePolicyInput } from "../domain/lifecycle-policy.js";
import { DEFAULT_ROTATION_POLICY, resolveRotationPolicy, type RotationPolicy, type RotationPolicyInput } from "../domain/rotation-policy.js";
import type { KeyPatch, KeyRow } from "../storage/database.js";
import { updateKey as updateKeyRow } from "../storage/key.repository.js";
import { DESCRIPTION_MAX_LENGTH } from "./create-key.js";
import type { KmsContext } from "./kms-context.js";
import { nextRotationTimeFor } from "./key-schedule.js";
import { readKeyRow, readTenantKey } from "./key-reader.js";

export interface UpdateKeyInput {
  readonly tenantId: string;
  readonly keyId: string;
  /** Field paths in proto (snake_case) form. */
  readonly updateMask: readonly string[];
  readonly description?: string | undefined;
  readonly rotationPolicy?: RotationPolicyInput | undefined;
  readonly lifecyclePolicy?: LifecyclePolicyInput | undefined;
}

const ROTATION_LEAVES = {
  "rotation_policy.dek_rotation_period": "dekRotationPeriodSeconds",
  "rotation_policy.kek_rotation_period": "kekRotationPeriodSeconds",
} as const satisfies Record<string, keyof RotationPolicy>;

const LIFECYCLE_LEAVES = {
  "lifecycle_policy.dek_grace_period": "dekGracePeriodSeconds",
  "lifecycle_policy.decrypt_quiet_window": "decryptQuietWindowSeconds",
  "lifecycle_policy.revocation_waiting_period": "revocationWaitingPeriodSeconds",
} as const satisfies Record<string, keyof LifecyclePolicy>;

export const UPDATABLE_PATHS: readonly string[] = [
  "description",
  "rotation_policy",
  ...Object.keys(ROTATION_LEAVES),
  "lifecycle_policy",
  ...Object.keys(LIFECYCLE_LEAVES),
  "customer_key",
];

export async function updateKey(context: KmsContext, input: UpdateKeyInput): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const mask = checkMask(input.updateMask);
  if (mask.has("description") && (input.description ?? "").length > DESCRIPTION_MAX_LENGTH) {
    throw invalidField("description", `must be at most ${DESCRIPTION_MAX_LENGTH} characters`, { maxLength: String(DESCRIPTION_MAX_LENGTH) });
  }

  await context.db.transaction().execute(async (tx) => {
    const row = await readKeyRow(tx, tenantId, keyId, true);
    assertUpdatable({ tenantId, keyId, state: row.state as TenantKey["state"] });
    if (mask.has("customer_key")) {
      throw invalidField(
        "customer_key",
        row.protection === "PLATFORM_MANAGED"
          ? "a platform-managed key cannot be moved to a customer's KMS; create a customer-managed key instead"
          : "moving a customer-managed key to another customer key is not available on this server yet",
      );
    }
    const patch: KeyPatch = { update_time: context.clock.now() };
    if (mask.has("description")) patch.description = input.description ?? "";

    const rotation = mergedRotationPolicy(mask, row, input.rotationPolicy);
    if (rotation !== undefined) {
      patch.dek_rotation_period_seconds = rotation.dekRotationPeriodSeconds;
      patch.kek_rotation_period_seconds = rotation.kekRotationPeriodSeconds;
      patch.next_rotation_time = await nextRotationTimeFor(tx, row, { rotationPolicy: rotation });
    }
    const lifecycle = mergedLifecyclePolicy(mask, row, input.lifecyclePolicy);
    if (lifecycle !== undefined) {
      patch.dek_grace_period_seconds = lifecycle.dekGracePeriodSeconds;
      patch.decrypt_quiet_window_seconds = lifecycle.decryptQuietWindowSeconds;
      patch.revocation_waiting_period_seconds = lifecycle.revocationWaitingPeriodSeconds;
    }
    await updateKeyRow(tx, tenantId, keyId, patch);
  });
  return readTenantKey(context.db, tenantId, keyId);
}

function checkMask(paths: readonly string[]): Set<string> {
  if (paths.length === 0) {
    throw invalidField("update_mask", `is required: name the fields to change (${UPDATABLE_PATHS.join(", ")})`);
  }
  for (const path of paths) {
    if (!UPDATABLE_PATHS.includes(path)) {
      throw invalidField("update_mask", `"${path}" cannot be updated; updatable fields: ${UPDATABLE_PATHS.join(", ")}`, { path });
    }
  }
  return new Set(paths);
}

/** The key's new rotation policy, validated; undefined when the mask leaves it alone. */
function mergedRotationPolicy(mask: Set<string>, row: KeyRow, given: RotationPolicyInput | undefined): RotationPolicy | undefined {
  const whole = mask.has("rotation_policy");
  const leaves = Object.entries(ROTATION_LEAVES).filter(([path]) => mask.has(path));
  if (!whole && leaves.length === 0) return undefined;
  const merged: Record<keyof RotationPolicy, number> = {
    dekRotationPeriodSeconds: row.dek_rotation_period_seconds,
    kekRotationPeriodSeconds: row.kek_rotation_period_seconds,
  };
  if (whole) {
    for (const field of Object.values(ROTATION_LEAVES)) merged[field] = given?.[field] ?? merged[field];
  }
  for (const [, field] of leaves) merged[field] = given?.[field] ?? DEFAULT_ROTATION_POLICY[field];
  return resolveRotationPolicy(merged);
}

/** The key's new lifecycle policy, validated; undefined when the mask leaves it alone. */
function mergedLifecyclePolicy(mask: Set<string>, row: KeyRow, given: LifecyclePolicyInput | undefined): LifecyclePolicy | undefined {
  const whole = mask.has("lifecycle_policy");
  const leaves = Object.entries(LIFECYCLE_LEAVES).filter(([path]) => mask.has(path));
  if (!whole && leaves.length === 0) return undefined;
  const merged: Record<keyof LifecyclePolicy, number> = {
    dekGracePeriodSeconds: row.dek_grace_period_seconds,
    decryptQuietWindowSeconds: row.decrypt_quiet_window_seconds,
    revocationWaitingPeriodSeconds: row.revocation_waiting_period_seconds,
  };
  if (whole) {
    for (const field of Object.values(LIFECYCLE_LEAVES)) merged[field] = given?.[field] ?? merged[field];
  }
  for (const [, field] of leaves) merged[field] = given?.[field] ?? DEFAULT_LIFECYCLE_POLICY[field];
  return resolveLifecyclePolicy(merged);
}

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
 *  - "customer_key" (customer-managed keys only): point the key at another
 *    customer key — another key, key version, or another cloud's key. The
 *    new key is checked as CreateKey checks one and proven (wrap + unwrap of
 *    the new KEK version) before anything is stored; the old KEK version's
 *    DEKs are then re-wrapped in the background (decision 0024). Naming the
 *    key's current customer key changes nothing.
 * Everything is validated before anything is written; an invalid value is
 * refused with INVALID_FIELD naming it and nothing changes. The next rotation
 * time is recomputed from the new policy in the same transaction, so a
 * shortened period that makes a rotation overdue is picked up by the very
 * next scheduler run.
 */
import { requireValidId } from "../domain/identifiers.js";
import { isCustomerKeyAvailable } from "../domain/customer-key-health.js";
import type { CustomerKey, TenantKey } from "../domain/key-model.js";
import { assertUpdatable } from "../domain/key-state-machine.js";
import { invalidField } from "../domain/kms-error.js";
import { DEFAULT_LIFECYCLE_POLICY, resolveLifecyclePolicy, type LifecyclePolicy, type LifecyclePolicyInput } from "../domain/lifecycle-policy.js";
import { DEFAULT_ROTATION_POLICY, resolveRotationPolicy, type RotationPolicy, type RotationPolicyInput } from "../domain/rotation-policy.js";
import type { Executor, KeyPatch, KeyRow } from "../storage/database.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { updateKey as updateKeyRow } from "../storage/key.repository.js";
import { DESCRIPTION_MAX_LENGTH } from "./create-key.js";
import { replaceCustomerKek } from "./customer-kek-replacement.js";
import { checkCustomerKeyRequest } from "./customer-keys.js";
import { replaceKekInTransaction } from "./kek-replacement.js";
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
  /** With "customer_key" in the mask: the customer key a customer-managed key is to be wrapped under from now on. */
  readonly customerKey?: CustomerKey | undefined;
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

  if (mask.has("customer_key")) {
    const preview = await readKeyRow(context.db, tenantId, keyId);
    assertUpdatable({ tenantId, keyId, state: preview.state as TenantKey["state"] });
    const target = checkCustomerKeyChange(context, preview, input.customerKey);
    // Every other masked field is validated too before the customer's KMS is called.
    await maskedPatch(context.db, mask, preview, input, context.clock.now());
    if (target !== undefined) {
      await pointAtCustomerKey(context, { tenantId, keyId }, target, mask, input);
      return readTenantKey(context.db, tenantId, keyId);
    }
  }

  await context.db.transaction().execute(async (tx) => {
    const row = await readKeyRow(tx, tenantId, keyId, true);
    assertUpdatable({ tenantId, keyId, state: row.state as TenantKey["state"] });
    await updateKeyRow(tx, tenantId, keyId, await maskedPatch(tx, mask, row, input, context.clock.now()));
  });
  return readTenantKey(context.db, tenantId, keyId);
}

/**
 * The customer key a BYOK key is to be pointed at, checked as CreateKey checks
 * one; undefined when it is the key's current one already (the PATCH is then
 * a no-op for it, so a retried request succeeds).
 */
function checkCustomerKeyChange(context: KmsContext, row: KeyRow, requested: CustomerKey | undefined): CustomerKey | undefined {
  if (row.protection === "PLATFORM_MANAGED") {
    throw invalidField("customer_key", "a platform-managed key cannot be moved to a customer's KMS; create a customer-managed key instead");
  }
  if (requested === undefined) throw invalidField("customer_key", "is required when the update mask names it");
  const { customer } = checkCustomerKeyRequest(context, row.tenant_id, requested);
  return customer.provider === row.customer_provider && customer.keyUri === row.customer_key_uri ? undefined : customer;
}

/**
 * A new KEK version wrapped under the new customer key (proven by a wrap and
 * an unwrap before anything is stored) becomes primary; the old version's
 * DEKs are re-wrapped in the background (KEK_REWRAP), which needs the old
 * customer key until it is done. The key's reference, its health (the new key
 * was just used) and the other masked fields change in the same transaction.
 */
async function pointAtCustomerKey(
  context: KmsContext,
  key: { readonly tenantId: string; readonly keyId: string },
  target: CustomerKey,
  mask: Set<string>,
  input: UpdateKeyInput,
): Promise<void> {
  await replaceCustomerKek(context, key, {
    target: () => target,
    async commit(tx, row, kek, _unwrapped, now) {
      assertUpdatable({ tenantId: key.tenantId, keyId: key.keyId, state: row.state as TenantKey["state"] });
      const wasAvailable = isCustomerKeyAvailable(row.customer_key_last_success_time, row.customer_key_last_error_time);
      const replaced = await replaceKekInTransaction(tx, key, kek, now);
      const patch: KeyPatch = {
        ...(await maskedPatch(tx, mask, replaced, input, now)),
        customer_provider: target.provider,
        customer_key_uri: target.keyUri,
        // The health shown is the new key's: it was just used, and the old key's errors are not about it.
        customer_key_last_success_time: now,
        customer_key_last_error_time: null,
        customer_key_last_error_class: null,
        customer_key_last_error: null,
      };
      await updateKeyRow(tx, key.tenantId, key.keyId, patch);
      if (!wasAvailable) await appendKeyEvent(tx, { tenantId: key.tenantId, keyId: key.keyId, type: "CUSTOMER_KEY_AVAILABLE", time: now });
    },
  });
}

/** The masked fields other than customer_key, validated, as a patch of the key row. */
async function maskedPatch(db: Executor, mask: Set<string>, row: KeyRow, input: UpdateKeyInput, now: Date): Promise<KeyPatch> {
  const patch: KeyPatch = { update_time: now };
  if (mask.has("description")) patch.description = input.description ?? "";

  const rotation = mergedRotationPolicy(mask, row, input.rotationPolicy);
  if (rotation !== undefined) {
    patch.dek_rotation_period_seconds = rotation.dekRotationPeriodSeconds;
    patch.kek_rotation_period_seconds = rotation.kekRotationPeriodSeconds;
    patch.next_rotation_time = await nextRotationTimeFor(db, row, { rotationPolicy: rotation });
  }
  const lifecycle = mergedLifecyclePolicy(mask, row, input.lifecyclePolicy);
  if (lifecycle !== undefined) {
    patch.dek_grace_period_seconds = lifecycle.dekGracePeriodSeconds;
    patch.decrypt_quiet_window_seconds = lifecycle.decryptQuietWindowSeconds;
    patch.revocation_waiting_period_seconds = lifecycle.revocationWaitingPeriodSeconds;
  }
  return patch;
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

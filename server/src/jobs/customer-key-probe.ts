/**
 * BYOK health: probes each ENABLED customer-managed key (one wrap+unwrap round
 * trip under the customer's key) and records the last success, or the last
 * error and its class, on the key. A change from usable to not (or back)
 * appends CUSTOMER_KEY_UNAVAILABLE / CUSTOMER_KEY_AVAILABLE in the same
 * transaction. On a failure the key's KEK-cache entries are dropped, so a
 * customer's revocation takes effect within one probe interval; the next use
 * after access returns unwraps afresh, so service resumes by itself.
 *
 * Every replica may probe; the key row is locked while the outcome is
 * recorded, so a transition is reported once. The probe follows the key's
 * current customer key (keys.customer_key_uri, which UpdateKey changes).
 */
import { isCustomerKeyAvailable } from "../domain/customer-key-health.js";
import type { CustomerKeyErrorClass, CustomerKeyProvider } from "../domain/key-model.js";
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { probeCustomerKey } from "../service/customer-keys.js";
import type { KmsContext } from "../service/kms-context.js";

const ERROR_CLASS: Partial<Record<ErrorReason, CustomerKeyErrorClass>> = {
  CUSTOMER_KEY_REVOKED: "REVOKED",
  CUSTOMER_KEY_UNREACHABLE: "UNREACHABLE",
  CUSTOMER_KEY_PERMISSION_DENIED: "PERMISSION_DENIED",
};

export function customerKeyErrorClass(error: unknown): CustomerKeyErrorClass {
  return error instanceof KmsError ? (ERROR_CLASS[error.reason] ?? "OTHER") : "OTHER";
}

const MAX_ERROR_LENGTH = 1024;

export async function probeCustomerKeys(context: KmsContext, now: Date): Promise<void> {
  const customerKeys = context.customerKeys;
  if (customerKeys === undefined) return;
  const keys = await context.db
    .selectFrom("keys")
    .select(["tenant_id", "key_id", "customer_provider", "customer_key_uri"])
    .where("protection", "=", "CUSTOMER_MANAGED")
    .where("state", "=", "ENABLED")
    .orderBy("tenant_id")
    .orderBy("key_id")
    .execute();
  for (const key of keys) {
    if (key.customer_provider === null || key.customer_key_uri === null) continue;
    const customer = { provider: key.customer_provider as CustomerKeyProvider, keyUri: key.customer_key_uri };
    let failure: { readonly errorClass: CustomerKeyErrorClass; readonly message: string } | undefined;
    try {
      await probeCustomerKey(customerKeys, customer, `probing the customer key of key ${key.key_id}`);
    } catch (error) {
      failure = { errorClass: customerKeyErrorClass(error), message: (error instanceof Error ? error.message : String(error)).slice(0, MAX_ERROR_LENGTH) };
      context.kekCache.deleteKey(key.tenant_id, key.key_id);
    }
    await recordProbe(context, key.tenant_id, key.key_id, customer, now, failure);
  }
}

async function recordProbe(
  context: KmsContext,
  tenantId: string,
  keyId: string,
  probed: { readonly provider: CustomerKeyProvider; readonly keyUri: string },
  now: Date,
  failure: { readonly errorClass: CustomerKeyErrorClass; readonly message: string } | undefined,
): Promise<void> {
  await context.db.transaction().execute(async (tx) => {
    const row = await tx
      .selectFrom("keys")
      .select(["customer_provider", "customer_key_uri", "customer_key_last_success_time", "customer_key_last_error_time"])
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .forUpdate()
      .executeTakeFirst();
    // Pointed at another customer key meanwhile (UpdateKey): this outcome is about a key it no longer uses.
    if (row === undefined || row.customer_provider !== probed.provider || row.customer_key_uri !== probed.keyUri) return;
    const wasAvailable = isCustomerKeyAvailable(row.customer_key_last_success_time, row.customer_key_last_error_time);
    if (failure === undefined) {
      await tx.updateTable("keys").set({ customer_key_last_success_time: now }).where("tenant_id", "=", tenantId).where("key_id", "=", keyId).execute();
      if (!wasAvailable) await appendKeyEvent(tx, { tenantId, keyId, type: "CUSTOMER_KEY_AVAILABLE", time: now });
    } else {
      await tx
        .updateTable("keys")
        .set({ customer_key_last_error_time: now, customer_key_last_error_class: failure.errorClass, customer_key_last_error: failure.message })
        .where("tenant_id", "=", tenantId)
        .where("key_id", "=", keyId)
        .execute();
      if (wasAvailable) await appendKeyEvent(tx, { tenantId, keyId, type: "CUSTOMER_KEY_UNAVAILABLE", time: now });
    }
  });
}

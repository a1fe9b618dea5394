import { requireValidId } from "../domain/identifiers.js";
import type { TenantKey } from "../domain/key-model.js";
import type { KmsContext } from "./kms-context.js";
import { readTenantKey } from "./key-reader.js";

export async function getKey(context: KmsContext, input: { tenantId: string; keyId: string }): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  return readTenantKey(context.db, tenantId, keyId);
}

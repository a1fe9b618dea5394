/** GenerateDataKey: the key's primary DEK, in plaintext, with its reference. */
import { encodeDekReference } from "../crypto/dek-reference.js";
import { requireValidId } from "../domain/identifiers.js";
import type { KmsContext } from "./kms-context.js";
import { unwrapDataKey } from "./data-key-material.js";
import { issuedReference } from "./issued-references.js";

export interface GeneratedDataKey {
  /** The caller owns this buffer and should wipe it once it is sent. */
  readonly plaintext: Buffer;
  readonly reference: Buffer;
  readonly dekVersion: number;
}

export async function generateDataKey(context: KmsContext, input: { tenantId: string; keyId: string }): Promise<GeneratedDataKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const dek = await unwrapDataKey(context, tenantId, keyId, "primary");
  const reference = issuedReference(dek.row, () =>
    encodeDekReference({ tenantId, keyId, keyUid: dek.keyUid, dekVersion: dek.dekVersion }, dek.plaintext),
  );
  return { plaintext: dek.plaintext, reference, dekVersion: dek.dekVersion };
}

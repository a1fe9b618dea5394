/**
 * Decrypt: the plaintext DEK a reference names — only for the tenant and key
 * the request names, only while key and version are usable, and only when the
 * reference's tag verifies under that very DEK (so an altered reference is
 * refused, not silently served).
 */
import { DEK_REFERENCE_MAX_BYTES, parseDekReference, ReferenceFormatError, verifyDekReferenceTag } from "../crypto/dek-reference.js";
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import type { KmsContext } from "./kms-context.js";
import { unwrapDataKey } from "./data-key-material.js";
import { noteDecryptServed } from "./decrypt-tracking.js";
import { isIssuedReference, rememberVerifiedReference } from "./issued-references.js";

export interface DecryptedDataKey {
  readonly plaintext: Buffer;
  readonly dekVersion: number;
}

export async function decryptDataKey(
  context: KmsContext,
  input: { tenantId: string; keyId: string; reference: Uint8Array },
): Promise<DecryptedDataKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  if (input.reference.length === 0) throw invalidField("reference", "is required: pass the reference GenerateDataKey returned");
  if (input.reference.length > DEK_REFERENCE_MAX_BYTES) {
    throw invalidField("reference", `must be at most ${DEK_REFERENCE_MAX_BYTES} bytes`, { maxBytes: String(DEK_REFERENCE_MAX_BYTES) });
  }
  let parsed: ReturnType<typeof parseDekReference>;
  try {
    parsed = parseDekReference(input.reference);
  } catch (error) {
    if (error instanceof ReferenceFormatError) {
      throw new KmsError("REFERENCE_MALFORMED", `reference: not a DEK reference issued by this service (${error.message})`, { field: "reference" });
    }
    throw error;
  }
  if (parsed.tenantId !== tenantId || parsed.keyId !== keyId) {
    throw new KmsError("REFERENCE_KEY_MISMATCH", `reference: belongs to another tenant or key than ${tenantId}/${keyId}`, { field: "reference" });
  }
  const dek = await unwrapDataKey(context, tenantId, keyId, parsed.dekVersion);
  if (Buffer.compare(dek.keyUid, parsed.keyUid) !== 0) {
    wipe(dek.plaintext);
    throw new KmsError("REFERENCE_KEY_MISMATCH", `reference: names an earlier key that had the id ${keyId}`, { field: "reference" });
  }
  if (!isIssuedReference(dek.row, input.reference)) {
    if (!verifyDekReferenceTag(parsed, dek.plaintext)) {
      wipe(dek.plaintext);
      throw new KmsError("REFERENCE_TAMPERED", "reference: integrity check failed; it was altered after it was issued", { field: "reference" });
    }
    rememberVerifiedReference(dek.row, input.reference);
  }
  // For the purge's quiet window: written now only when the version's recorded use is old, else in the background.
  const recording = noteDecryptServed(context, tenantId, keyId, dek.dekVersion, dek.lastDecryptTime);
  if (recording !== undefined) await recording;
  return { plaintext: dek.plaintext, dekVersion: dek.dekVersion };
}

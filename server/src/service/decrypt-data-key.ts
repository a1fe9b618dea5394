/**
 * Decrypt: the plaintext DEK a reference names — only for the tenant and key
 * the request names, only while key and version are usable, and only when the
 * reference's tag verifies under that very DEK (so an altered reference is
 * refused, not silently served).
 */
import {
  DEK_REFERENCE_MAX_BYTES,
  type ParsedDekReference,
  parseDekReference,
  ReferenceFormatError,
  verifyDekReferenceTag,
} from "../crypto/dek-reference.js";
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { asPromise, type Awaitable } from "./awaitable.js";
import type { KmsContext } from "./kms-context.js";
import { type UnwrappedDataKey, unwrapDataKey, unwrapKeptDataKey } from "./data-key-material.js";
import { noteDecryptServed } from "./decrypt-tracking.js";
import { isIssuedReference, rememberVerifiedReference } from "./issued-references.js";

export interface DecryptedDataKey {
  readonly plaintext: Buffer;
  readonly dekVersion: number;
}

interface DecryptInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly reference: Uint8Array;
}

export function decryptDataKey(context: KmsContext, input: DecryptInput): Promise<DecryptedDataKey> {
  return asPromise(() => serveDecrypt(context, input));
}

/**
 * Decrypt for the hot path: the answer itself when memory serves it (no
 * promise, no await), else a promise of it. Bad input and refusals may throw
 * at once; `decryptDataKey` is the same as a promise.
 */
export function serveDecrypt(context: KmsContext, input: DecryptInput): Awaitable<DecryptedDataKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  if (input.reference.length === 0) throw invalidField("reference", "is required: pass the reference GenerateDataKey returned");
  if (input.reference.length > DEK_REFERENCE_MAX_BYTES) {
    throw invalidField("reference", `must be at most ${DEK_REFERENCE_MAX_BYTES} bytes`, { maxBytes: String(DEK_REFERENCE_MAX_BYTES) });
  }
  let parsed: ParsedDekReference;
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
  const kept = unwrapKeptDataKey(context, tenantId, keyId, parsed.dekVersion);
  if (kept !== undefined) return decrypted(context, input.reference, parsed, kept);
  return unwrapDataKey(context, tenantId, keyId, parsed.dekVersion).then((dek) => decrypted(context, input.reference, parsed, dek));
}

/** The DEK a reference named, once it is proven to be the one the reference was issued for. */
function decrypted(context: KmsContext, presented: Uint8Array, parsed: ParsedDekReference, dek: UnwrappedDataKey): Awaitable<DecryptedDataKey> {
  const { tenantId, keyId } = parsed;
  if (Buffer.compare(dek.keyUid, parsed.keyUid) !== 0) {
    wipe(dek.plaintext);
    throw new KmsError("REFERENCE_KEY_MISMATCH", `reference: names an earlier key that had the id ${keyId}`, { field: "reference" });
  }
  if (!isIssuedReference(dek.row, presented)) {
    if (!verifyDekReferenceTag(parsed, dek.plaintext)) {
      wipe(dek.plaintext);
      throw new KmsError("REFERENCE_TAMPERED", "reference: integrity check failed; it was altered after it was issued", { field: "reference" });
    }
    rememberVerifiedReference(dek.row, presented);
  }
  const answer: DecryptedDataKey = { plaintext: dek.plaintext, dekVersion: dek.dekVersion };
  // For the purge's quiet window: written now only when the version's recorded use is old, else in the background.
  const recording = noteDecryptServed(context, tenantId, keyId, dek.dekVersion, dek.lastDecryptTime);
  return recording === undefined ? answer : recording.then(() => answer);
}

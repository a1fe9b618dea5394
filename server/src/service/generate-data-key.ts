/** GenerateDataKey: the key's primary DEK, in plaintext, with its reference. */
import { encodeDekReference } from "../crypto/dek-reference.js";
import { requireValidId } from "../domain/identifiers.js";
import { asPromise, type Awaitable } from "./awaitable.js";
import type { KmsContext } from "./kms-context.js";
import { type UnwrappedDataKey, unwrapDataKey, unwrapKeptDataKey } from "./data-key-material.js";
import { issuedReferenceOf, issueReference } from "./issued-references.js";

export interface GeneratedDataKey {
  /** The caller owns this buffer and should wipe it once it is sent. */
  readonly plaintext: Buffer;
  readonly reference: Buffer;
  readonly dekVersion: number;
}

interface GenerateDataKeyInput {
  readonly tenantId: string;
  readonly keyId: string;
}

export function generateDataKey(context: KmsContext, input: GenerateDataKeyInput): Promise<GeneratedDataKey> {
  return asPromise(() => serveGenerateDataKey(context, input));
}

/**
 * GenerateDataKey for the hot path: the answer itself when memory serves it
 * (no promise, no await), else a promise of it. Bad input and refusals may
 * throw at once; `generateDataKey` is the same as a promise.
 */
export function serveGenerateDataKey(context: KmsContext, input: GenerateDataKeyInput): Awaitable<GeneratedDataKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const kept = unwrapKeptDataKey(context, tenantId, keyId, "primary");
  if (kept !== undefined) return generated(tenantId, keyId, kept);
  return unwrapDataKey(context, tenantId, keyId, "primary").then((dek) => generated(tenantId, keyId, dek));
}

function generated(tenantId: string, keyId: string, dek: UnwrappedDataKey): GeneratedDataKey {
  const reference =
    issuedReferenceOf(dek.row) ??
    issueReference(dek.row, encodeDekReference({ tenantId, keyId, keyUid: dek.keyUid, dekVersion: dek.dekVersion }, dek.plaintext));
  return { plaintext: dek.plaintext, reference, dekVersion: dek.dekVersion };
}

/**
 * The one valid reference of a DEK version, remembered per material row.
 *
 * A v1 reference is deterministic: tenant, key, key uid, version, and a tag
 * keyed by the DEK (crypto/dek-reference.ts). Computing or checking the tag
 * costs two HMAC key set-ups per call. When the storage layer hands out the
 * same row object again (PGlite keeps rows while nothing is written), the
 * reference made or verified with that row's DEK is still the only valid one:
 * GenerateDataKey returns it again, and Decrypt accepts exactly those bytes
 * (compared in constant time) without recomputing the tag. Anything else
 * takes the full check. References are not secret; no key material is kept.
 */
import { constantTimeEqual } from "../crypto/secure-buffer.js";

const issued = new WeakMap<object, Buffer>();

/** A copy of the reference already made or verified for `row`, if any. */
export function issuedReferenceOf(row: object): Buffer | undefined {
  const reference = issued.get(row);
  return reference === undefined ? undefined : Buffer.from(reference);
}

/** Remembers `reference`, just made for `row`, and returns a copy for the caller. */
export function issueReference(row: object, reference: Buffer): Buffer {
  if (!issued.has(row)) issued.set(row, reference);
  return Buffer.from(reference);
}

/** True when `presented` is exactly the reference already made or verified for `row`. */
export function isIssuedReference(row: object, presented: Uint8Array): boolean {
  const reference = issued.get(row);
  return reference !== undefined && constantTimeEqual(reference, presented);
}

/** Remembers a reference whose tag was just verified under `row`'s DEK. */
export function rememberVerifiedReference(row: object, verified: Uint8Array): void {
  if (!issued.has(row)) issued.set(row, Buffer.from(verified));
}

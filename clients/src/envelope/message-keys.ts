import { createHmac, timingSafeEqual } from "node:crypto";
import { COMMITMENT_BYTES, NONCE_BYTES } from "./envelope-format.js";

const ENCRYPTION_KEY_INFO = Buffer.from("matih-kms envelope v1 encryption key\x01", "latin1");
const COMMITMENT_INFO = Buffer.from("matih-kms envelope v1 key commitment\x01", "latin1");

/** A message's own key and its commitment. Wipe both when done. */
export interface MessageKeys {
  /** AES-256-GCM key of this message alone. */
  readonly encryptionKey: Buffer;
  readonly commitment: Buffer;
}

/**
 * HKDF-SHA-256 (RFC 5869) from the DEK and the message's salt:
 *
 *   PRK        = HMAC-SHA-256(salt, DEK)                                   extract
 *   key        = HMAC-SHA-256(PRK, "matih-kms envelope v1 encryption key" || 0x01)
 *   commitment = HMAC-SHA-256(PRK, "matih-kms envelope v1 key commitment" || 0x01)
 *
 * Both are the first (and only) 32-byte output block of HKDF-Expand with
 * those info strings, so any HKDF implementation reproduces them. The
 * commitment binds the ciphertext to exactly one DEK: AES-GCM alone is not
 * committing, so without it a crafted ciphertext could decrypt to different
 * plaintexts under two keys ("invisible salamanders").
 */
export function deriveMessageKeys(dek: Uint8Array, salt: Uint8Array): MessageKeys {
  const prk = createHmac("sha256", salt).update(dek).digest();
  try {
    return {
      encryptionKey: createHmac("sha256", prk).update(ENCRYPTION_KEY_INFO).digest(),
      commitment: createHmac("sha256", prk).update(COMMITMENT_INFO).digest(),
    };
  } finally {
    prk.fill(0);
  }
}

/** Constant-time comparison of a header's commitment with the derived one. */
export function commitmentMatches(derived: Uint8Array, stored: Uint8Array): boolean {
  return derived.byteLength === COMMITMENT_BYTES && stored.byteLength === COMMITMENT_BYTES && timingSafeEqual(derived, stored);
}

/**
 * The AES-GCM nonce of chunk `index` (a message is chunk 0, final):
 * three zero bytes, the index as u64 BE, then 0x01 for the final chunk and
 * 0x00 otherwise. The key is unique to the message, so a counter nonce never
 * repeats under one key; the index and the final flag in the nonce are what
 * make reordering, truncation and extension of a stream fail authentication.
 */
export function chunkNonce(index: number, final: boolean): Buffer {
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeBigUInt64BE(BigInt(index), 3);
  nonce[NONCE_BYTES - 1] = final ? 1 : 0;
  return nonce;
}

export function wipe(...buffers: (Uint8Array | undefined)[]): void {
  for (const buffer of buffers) buffer?.fill(0);
}

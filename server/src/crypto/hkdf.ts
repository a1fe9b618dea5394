import { hkdfSync } from "node:crypto";

/** HKDF (RFC 5869) can expand to at most 255 hash blocks. */
export const HKDF_SHA256_MAX_LENGTH = 255 * 32;

/**
 * HKDF-SHA-256: extract with `salt`, expand with `info` to `length` bytes.
 * Used to derive per-message keys from a DEK, so a DEK is never used with
 * GCM directly for many messages.
 */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 1 || length > HKDF_SHA256_MAX_LENGTH) {
    throw new RangeError(`hkdfSha256: length must be 1-${HKDF_SHA256_MAX_LENGTH}`);
  }
  // hkdfSync returns an ArrayBuffer; wrap it without copying so a later wipe() reaches the only copy.
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, length));
}

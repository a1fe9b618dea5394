import { randomBytes as nodeRandomBytes } from "node:crypto";

/** AES-256 key size in bytes. */
export const AES_256_KEY_BYTES = 32;

/**
 * `n` bytes from the OS CSPRNG. Node allocates these outside the shared
 * Buffer pool, so wiping the result later does not leave a copy behind in a
 * slab that other buffers share.
 */
export function randomBytes(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("randomBytes: n must be a non-negative integer");
  return nodeRandomBytes(n);
}

/** A fresh AES-256 key (KEK or DEK). The caller owns it and should wipe it. */
export function generateAes256Key(): Buffer {
  return randomBytes(AES_256_KEY_BYTES);
}

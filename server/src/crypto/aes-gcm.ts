import { createCipheriv, createDecipheriv, type CipherGCMTypes } from "node:crypto";
import { CryptoFailure } from "./crypto-failure.js";
import { AES_256_KEY_BYTES, randomBytes } from "./random.js";
import { wipe } from "./secure-buffer.js";

/** 96-bit nonces: the only size for which GCM uses the nonce directly rather than hashing it. */
export const GCM_NONCE_BYTES = 12;
/** Full 128-bit tags for everything we seal; shorter tags are only for the raw layer. */
export const GCM_TAG_BYTES = 16;
/** Smallest sealed output: nonce and tag around an empty ciphertext. */
export const SEALED_OVERHEAD_BYTES = GCM_NONCE_BYTES + GCM_TAG_BYTES;

/**
 * What Node (OpenSSL 3) can express for GCM. Checked here rather than left to
 * Node so the limits are stated once and refusals are CryptoFailures:
 * OpenSSL caps the IV at 128 bytes and refuses an empty one; tags may be 4, 8
 * or 12-16 bytes (NIST SP 800-38D).
 */
export const GCM_MIN_IV_BYTES = 1;
export const GCM_MAX_IV_BYTES = 128;
export const GCM_SUPPORTED_TAG_BYTES: readonly number[] = [4, 8, 12, 13, 14, 15, 16];

export interface AesGcmRawOutput {
  ciphertext: Buffer;
  tag: Buffer;
}

function gcmCipherFor(key: Uint8Array): CipherGCMTypes {
  switch (key.byteLength) {
    case 16:
      return "aes-128-gcm";
    case 24:
      return "aes-192-gcm";
    case 32:
      return "aes-256-gcm";
    default:
      throw new CryptoFailure("invalid key");
  }
}

function checkIv(iv: Uint8Array): void {
  if (iv.byteLength < GCM_MIN_IV_BYTES || iv.byteLength > GCM_MAX_IV_BYTES) throw new CryptoFailure("invalid nonce");
}

function checkTagLength(tagLength: number): void {
  if (!GCM_SUPPORTED_TAG_BYTES.includes(tagLength)) throw new CryptoFailure("invalid tag length");
}

/**
 * AES-GCM with caller-chosen key size (128/192/256), IV and tag length. The
 * caller is responsible for never reusing an IV under a key; prefer
 * sealAesGcm, which picks a random nonce.
 */
export function encryptAesGcmRaw(
  key: Uint8Array,
  iv: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  tagLength = GCM_TAG_BYTES,
): AesGcmRawOutput {
  const algorithm = gcmCipherFor(key);
  checkIv(iv);
  checkTagLength(tagLength);
  try {
    const cipher = createCipheriv(algorithm, key, iv, { authTagLength: tagLength });
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return { ciphertext, tag: cipher.getAuthTag() };
  } catch {
    throw new CryptoFailure("encryption failed");
  }
}

/**
 * Inverse of encryptAesGcmRaw. The tag is checked at the length it has (told
 * to Node via authTagLength, which newer Node requires for short tags). A
 * GCM tag's prefix is itself a valid shorter tag, so callers that demand full
 * 128-bit tags must slice them themselves, as openAesGcm does.
 */
export function decryptAesGcmRaw(
  key: Uint8Array,
  iv: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
  aad: Uint8Array,
): Buffer {
  const algorithm = gcmCipherFor(key);
  checkIv(iv);
  checkTagLength(tag.byteLength);
  let unverified: Buffer | undefined;
  try {
    const decipher = createDecipheriv(algorithm, key, iv, { authTagLength: tag.byteLength });
    decipher.setAuthTag(tag);
    decipher.setAAD(aad);
    unverified = decipher.update(ciphertext);
    const last = decipher.final(); // throws here if the tag does not match
    return last.length === 0 ? unverified : Buffer.concat([unverified, last]);
  } catch {
    // update() already released plaintext before the tag was checked; do not leave it in memory.
    wipe(unverified);
    throw new CryptoFailure("authentication failed");
  }
}

/** Encrypts under a 32-byte key; returns nonce(12) || ciphertext || tag(16). */
export function sealAesGcm(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  if (key.byteLength !== AES_256_KEY_BYTES) throw new CryptoFailure("invalid key");
  const nonce = randomBytes(GCM_NONCE_BYTES);
  const { ciphertext, tag } = encryptAesGcmRaw(key, nonce, plaintext, aad, GCM_TAG_BYTES);
  return Buffer.concat([nonce, ciphertext, tag]);
}

/** Opens sealAesGcm output; any fault (key, aad, any byte, length) is a CryptoFailure. */
export function openAesGcm(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer {
  if (key.byteLength !== AES_256_KEY_BYTES) throw new CryptoFailure("invalid key");
  if (sealed.byteLength < SEALED_OVERHEAD_BYTES) throw new CryptoFailure("input too short");
  const tagStart = sealed.byteLength - GCM_TAG_BYTES;
  return decryptAesGcmRaw(
    key,
    sealed.subarray(0, GCM_NONCE_BYTES),
    sealed.subarray(GCM_NONCE_BYTES, tagStart),
    sealed.subarray(tagStart),
    aad,
  );
}

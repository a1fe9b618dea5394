import {
  KeyObject,
  constants,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  privateDecrypt,
  publicEncrypt,
} from "node:crypto";
import { CryptoFailure } from "./crypto-failure.js";

/** Modulus size for RSA KEKs (DESIGN.md: RSA-4096, OAEP-SHA-256). */
export const RSA_KEK_MODULUS_BITS = 4096;
/** Smallest modulus we agree to use at all; imports of smaller keys are refused. */
export const RSA_MIN_MODULUS_BITS = 2048;
const SHA256_BYTES = 32;

export interface RsaKeyPairDer {
  /** SubjectPublicKeyInfo, DER. */
  publicKeyDer: Buffer;
  /** PKCS#8 PrivateKeyInfo, DER. Secret: wrap it before it goes anywhere. */
  privateKeyDer: Buffer;
}

/** Generates an RSA-4096 KEK pair off the event loop (it takes about a second). */
export function generateRsa4096KeyPair(): Promise<RsaKeyPairDer> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      "rsa",
      {
        modulusLength: RSA_KEK_MODULUS_BITS,
        publicExponent: 0x10001,
        publicKeyEncoding: { type: "spki", format: "der" },
        privateKeyEncoding: { type: "pkcs8", format: "der" },
      },
      (error, publicKeyDer, privateKeyDer) => {
        // A generation failure carries no key material (there is none yet): pass it on as is.
        if (error) reject(error);
        else resolve({ publicKeyDer, privateKeyDer });
      },
    );
  });
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Refuses anything but a plain RSA key (not RSA-PSS, not EC) of a usable size. */
function checkRsaKey(key: KeyObject, type: "public" | "private"): KeyObject {
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (key.type !== type || key.asymmetricKeyType !== "rsa" || bits === undefined || bits < RSA_MIN_MODULUS_BITS) {
    throw new CryptoFailure("invalid key");
  }
  return key;
}

function modulusBytes(key: KeyObject): number {
  return Math.ceil((key.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
}

/**
 * Parses a PKCS#8 DER RSA private key once. Parsing costs far more than one
 * decryption, so callers should cache the KeyObject rather than the DER.
 */
export function importRsaPrivateKey(privateKeyDer: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: asBuffer(privateKeyDer), format: "der", type: "pkcs8" });
  } catch {
    throw new CryptoFailure("invalid key");
  }
  return checkRsaKey(key, "private");
}

/** Parses an SPKI DER RSA public key once; cache the result. */
export function importRsaPublicKey(publicKeyDer: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: asBuffer(publicKeyDer), format: "der", type: "spki" });
  } catch {
    throw new CryptoFailure("invalid key");
  }
  return checkRsaKey(key, "public");
}

/**
 * RSA-OAEP with SHA-256 and MGF1-SHA-256 (Node uses the OAEP hash for MGF1).
 * `label` binds the ciphertext to its context (say tenant and key): decrypting
 * with any other label fails.
 */
export function rsaOaepEncryptWithKey(publicKey: KeyObject, plaintext: Uint8Array, label: Uint8Array): Buffer {
  checkRsaKey(publicKey, "public");
  // RFC 8017 7.1.1: the message must fit beside two hashes and two marker bytes.
  if (plaintext.byteLength > modulusBytes(publicKey) - 2 * SHA256_BYTES - 2) {
    throw new CryptoFailure("plaintext too long");
  }
  try {
    return publicEncrypt(
      { key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256", oaepLabel: label },
      plaintext,
    );
  } catch {
    throw new CryptoFailure("encryption failed");
  }
}

/**
 * Inverse of rsaOaepEncryptWithKey. Every failure — wrong length, bad
 * padding, wrong label, wrong key — gives the same error, so the caller
 * cannot become a padding oracle.
 */
export function rsaOaepDecryptWithKey(privateKey: KeyObject, ciphertext: Uint8Array, label: Uint8Array): Buffer {
  checkRsaKey(privateKey, "private");
  // RFC 8017 7.1.2 step 1: a ciphertext is exactly k bytes; OpenSSL would accept shorter ones.
  if (ciphertext.byteLength !== modulusBytes(privateKey)) throw new CryptoFailure("decryption failed");
  try {
    return privateDecrypt(
      { key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256", oaepLabel: label },
      ciphertext,
    );
  } catch {
    throw new CryptoFailure("decryption failed");
  }
}

/** Encrypts to an SPKI DER public key or an imported one (see importRsaPublicKey). */
export function rsaOaepEncrypt(publicKey: Uint8Array | KeyObject, plaintext: Uint8Array, label: Uint8Array): Buffer {
  const key = publicKey instanceof KeyObject ? publicKey : importRsaPublicKey(publicKey);
  return rsaOaepEncryptWithKey(key, plaintext, label);
}

/** Decrypts with a PKCS#8 DER private key or an imported one (see importRsaPrivateKey). */
export function rsaOaepDecrypt(privateKey: Uint8Array | KeyObject, ciphertext: Uint8Array, label: Uint8Array): Buffer {
  const key = privateKey instanceof KeyObject ? privateKey : importRsaPrivateKey(privateKey);
  return rsaOaepDecryptWithKey(key, ciphertext, label);
}

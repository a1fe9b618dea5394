/**
 * KEK material and how a KEK wraps a DEK.
 * - AES-256: the KEK is 32 random bytes; a DEK is sealed with AES-256-GCM.
 * - RSA-4096: the KEK is a PKCS#8 private key (wrapped by the master key) and its
 *   SPKI public key (stored in clear); a DEK is wrapped with RSA-OAEP-SHA-256, so
 *   new DEKs can be wrapped without ever unwrapping the private key.
 * In both, the DEK's context (tenant, key, DEK version) is bound as AAD / OAEP
 * label: a wrapped DEK moved to another row fails to unwrap.
 */
import type { KeyObject } from "node:crypto";
import { openAesGcm, sealAesGcm } from "../crypto/aes-gcm.js";
import { generateAes256Key } from "../crypto/random.js";
import { generateRsa4096KeyPair, importRsaPrivateKey, importRsaPublicKey, rsaOaepDecrypt, rsaOaepEncrypt } from "../crypto/rsa-oaep.js";
import { wipe } from "../crypto/secure-buffer.js";
import type { KekAlgorithm } from "../domain/key-model.js";

export interface NewKekMaterial {
  /** The secret half: to be wrapped by the master key, then wiped. */
  readonly secret: Buffer;
  /** RSA only: the SPKI public key, stored in clear. */
  readonly publicKey: Buffer | null;
}

export async function generateKekMaterial(algorithm: KekAlgorithm): Promise<NewKekMaterial> {
  if (algorithm === "AES_256") return { secret: generateAes256Key(), publicKey: null };
  const pair = await generateRsa4096KeyPair();
  return { secret: pair.privateKeyDer, publicKey: pair.publicKeyDer };
}

/** An unwrapped KEK, ready to use; what the KEK cache holds. */
export type UnwrappedKek =
  | { readonly algorithm: "AES_256"; readonly key: Buffer }
  | { readonly algorithm: "RSA_4096"; readonly privateKey: KeyObject };

/** Turns the secret half (after unwrapping) into a usable KEK; takes ownership of `secret`. */
export function importKek(algorithm: KekAlgorithm, secret: Buffer): UnwrappedKek {
  if (algorithm === "AES_256") return { algorithm, key: secret };
  try {
    return { algorithm, privateKey: importRsaPrivateKey(secret) };
  } finally {
    wipe(secret);
  }
}

/** Everything needed to wrap a new DEK: the AES key, or the RSA public key. */
export type KekForWrapping =
  | { readonly algorithm: "AES_256"; readonly key: Buffer }
  | { readonly algorithm: "RSA_4096"; readonly publicKey: KeyObject };

export function kekForWrappingFromPublicKey(publicKeyDer: Uint8Array): KekForWrapping {
  return { algorithm: "RSA_4096", publicKey: importRsaPublicKey(Buffer.from(publicKeyDer)) };
}

export function wrapDek(kek: KekForWrapping, dek: Uint8Array, context: Uint8Array): Buffer {
  return kek.algorithm === "AES_256" ? sealAesGcm(kek.key, dek, context) : rsaOaepEncrypt(kek.publicKey, dek, context);
}

export function unwrapDek(kek: UnwrappedKek, wrapped: Uint8Array, context: Uint8Array): Buffer {
  return kek.algorithm === "AES_256" ? openAesGcm(kek.key, wrapped, context) : rsaOaepDecrypt(kek.privateKey, wrapped, context);
}

export function wipeKek(kek: UnwrappedKek): void {
  // A KeyObject's memory is not reachable from JavaScript; dropping the reference is all Node allows.
  if (kek.algorithm === "AES_256") wipe(kek.key);
}

/** The canonical AAD / OAEP label binding a wrapped DEK to its row. */
export function dekWrapContext(tenantId: string, keyId: string, dekVersion: number): Buffer {
  return Buffer.from(`matih-kms/v1/dek\u0000${tenantId}\u0000${keyId}\u0000${dekVersion}`, "utf8");
}

import { KeyObject, createPublicKey, generateKeyPairSync } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { CryptoFailure } from "./crypto-failure.js";
import {
  type RsaKeyPairDer,
  generateRsa4096KeyPair,
  importRsaPrivateKey,
  importRsaPublicKey,
  rsaOaepDecrypt,
  rsaOaepDecryptWithKey,
  rsaOaepEncrypt,
  rsaOaepEncryptWithKey,
} from "./rsa-oaep.js";

function failureOf(fn: () => unknown): CryptoFailure {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CryptoFailure);
    return error as CryptoFailure;
  }
  throw new Error("expected a CryptoFailure, got success");
}

const dek = Buffer.alloc(32, 0x5a);
const label = Buffer.from("matih-kms/v1/dek-wrap|tenant=acme|key=pii|kek=1");

// RSA-4096 generation takes about a second: one pair for the whole file.
let pair: RsaKeyPairDer;
let privateKey: KeyObject;
let publicKey: KeyObject;
beforeAll(async () => {
  pair = await generateRsa4096KeyPair();
  privateKey = importRsaPrivateKey(pair.privateKeyDer);
  publicKey = importRsaPublicKey(pair.publicKeyDer);
});

describe("generateRsa4096KeyPair", () => {
  it("returns an RSA-4096, e=65537 pair as SPKI and PKCS#8 DER", () => {
    expect(Buffer.isBuffer(pair.publicKeyDer)).toBe(true);
    expect(Buffer.isBuffer(pair.privateKeyDer)).toBe(true);
    expect(privateKey.asymmetricKeyDetails).toEqual({ modulusLength: 4096, publicExponent: 65537n });
    // The two halves belong together.
    expect(createPublicKey(privateKey).export({ format: "der", type: "spki" }).equals(pair.publicKeyDer)).toBe(true);
  });
});

describe("rsaOaepEncrypt / rsaOaepDecrypt round trip with a 4096-bit key", () => {
  it("decrypts what it encrypted, from DER or from imported KeyObjects", () => {
    const fromDer = rsaOaepEncrypt(pair.publicKeyDer, dek, label);
    expect(fromDer.length).toBe(512);
    expect(rsaOaepDecrypt(pair.privateKeyDer, fromDer, label).equals(dek)).toBe(true);
    expect(rsaOaepDecrypt(privateKey, fromDer, label).equals(dek)).toBe(true);

    const fromKey = rsaOaepEncrypt(publicKey, dek, label);
    expect(rsaOaepDecryptWithKey(privateKey, fromKey, label).equals(dek)).toBe(true);
    expect(rsaOaepDecrypt(pair.privateKeyDer, rsaOaepEncryptWithKey(publicKey, dek, label), label).equals(dek)).toBe(true);
  });

  it("is randomised: the same plaintext encrypts differently each time", () => {
    expect(rsaOaepEncrypt(publicKey, dek, label).equals(rsaOaepEncrypt(publicKey, dek, label))).toBe(false);
  });

  it("works with an empty label and empty plaintext", () => {
    const ct = rsaOaepEncrypt(publicKey, Buffer.alloc(0), Buffer.alloc(0));
    expect(rsaOaepDecrypt(privateKey, ct, new Uint8Array(0)).length).toBe(0);
  });

  it("accepts up to k - 2*32 - 2 = 446 bytes of plaintext and refuses more", () => {
    const max = Buffer.alloc(446, 1);
    expect(rsaOaepDecrypt(privateKey, rsaOaepEncrypt(publicKey, max, label), label).equals(max)).toBe(true);
    expect(failureOf(() => rsaOaepEncrypt(publicKey, Buffer.alloc(447), label)).message).toBe("plaintext too long");
  });
});

describe("rsaOaepDecrypt refuses", () => {
  let ciphertext: Buffer;
  beforeAll(() => {
    ciphertext = rsaOaepEncrypt(publicKey, dek, label);
  });

  it("the wrong label, so a wrapped key cannot be moved to another context", () => {
    for (const other of [Buffer.from("matih-kms/v1/dek-wrap|tenant=evil|key=pii|kek=1"), Buffer.alloc(0), label.subarray(1)]) {
      expect(failureOf(() => rsaOaepDecrypt(privateKey, ciphertext, other)).message).toBe("decryption failed");
    }
  });

  it("a tampered ciphertext", () => {
    for (const index of [0, 1, 255, 511]) {
      const tampered = Buffer.from(ciphertext);
      tampered[index] = (tampered[index] ?? 0) ^ 0x01;
      expect(failureOf(() => rsaOaepDecrypt(privateKey, tampered, label)).message).toBe("decryption failed");
    }
  });

  it("a ciphertext that is not exactly the modulus size, with the same message", () => {
    for (const bad of [Buffer.alloc(0), ciphertext.subarray(1), Buffer.concat([Buffer.from([0]), ciphertext])]) {
      expect(failureOf(() => rsaOaepDecrypt(privateKey, bad, label)).message).toBe("decryption failed");
    }
  });

  it("the wrong private key", () => {
    const other = generateKeyPairSync("rsa", { modulusLength: 4096 }).privateKey;
    expect(failureOf(() => rsaOaepDecrypt(other, ciphertext, label)).message).toBe("decryption failed");
  });

  it("without putting plaintext or key material in the error", () => {
    const error = failureOf(() => rsaOaepDecrypt(privateKey, ciphertext, Buffer.from("other")));
    expect(error.cause).toBeUndefined();
    expect(`${error.message}${String(error.stack)}`).not.toContain(dek.toString("hex"));
  });
});

describe("key import refuses keys that are not usable RSA-OAEP keys", () => {
  it("garbage and the wrong DER type", () => {
    expect(failureOf(() => importRsaPrivateKey(Buffer.from("not a key"))).message).toBe("invalid key");
    expect(failureOf(() => importRsaPublicKey(Buffer.from("not a key"))).message).toBe("invalid key");
    expect(failureOf(() => importRsaPrivateKey(pair.publicKeyDer)).message).toBe("invalid key");
    expect(failureOf(() => importRsaPublicKey(pair.privateKeyDer)).message).toBe("invalid key");
  });

  it("EC, RSA-PSS and sub-2048-bit RSA keys", () => {
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pss = generateKeyPairSync("rsa-pss", { modulusLength: 2048 });
    const small = generateKeyPairSync("rsa", { modulusLength: 1024 });
    for (const kp of [ec, pss, small]) {
      const privateDer = kp.privateKey.export({ format: "der", type: "pkcs8" });
      const publicDer = kp.publicKey.export({ format: "der", type: "spki" });
      expect(failureOf(() => importRsaPrivateKey(privateDer)).message).toBe("invalid key");
      expect(failureOf(() => importRsaPublicKey(publicDer)).message).toBe("invalid key");
      // Already-imported KeyObjects get the same check.
      expect(failureOf(() => rsaOaepDecrypt(kp.privateKey, Buffer.alloc(256), label)).message).toBe("invalid key");
      expect(failureOf(() => rsaOaepEncrypt(kp.publicKey, dek, label)).message).toBe("invalid key");
    }
  });

  it("a KeyObject of the wrong kind for the operation", () => {
    expect(failureOf(() => rsaOaepEncrypt(privateKey, dek, label)).message).toBe("invalid key");
    expect(failureOf(() => rsaOaepDecrypt(publicKey, Buffer.alloc(512), label)).message).toBe("invalid key");
  });
});

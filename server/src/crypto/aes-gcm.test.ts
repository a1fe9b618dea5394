import { describe, expect, it } from "vitest";
import {
  GCM_NONCE_BYTES,
  GCM_TAG_BYTES,
  SEALED_OVERHEAD_BYTES,
  decryptAesGcmRaw,
  encryptAesGcmRaw,
  openAesGcm,
  sealAesGcm,
} from "./aes-gcm.js";
import { CryptoFailure } from "./crypto-failure.js";
import { generateAes256Key } from "./random.js";

const key = generateAes256Key();
const plaintext = Buffer.from("tenant DEK: 0123456789abcdef0123456789abcdef");
const aad = Buffer.from("tenant=acme;key=pii;kek=3");

function failureOf(fn: () => unknown): CryptoFailure {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CryptoFailure);
    return error as CryptoFailure;
  }
  throw new Error("expected a CryptoFailure, got success");
}

describe("sealAesGcm / openAesGcm round trip", () => {
  it("opens what it sealed, laid out as nonce(12) || ciphertext || tag(16)", () => {
    const sealed = sealAesGcm(key, plaintext, aad);
    expect(sealed.length).toBe(GCM_NONCE_BYTES + plaintext.length + GCM_TAG_BYTES);
    expect(openAesGcm(key, sealed, aad).equals(plaintext)).toBe(true);
    // The layout is the documented one: the raw primitive opens the pieces.
    const raw = decryptAesGcmRaw(key, sealed.subarray(0, 12), sealed.subarray(12, -16), sealed.subarray(-16), aad);
    expect(raw.equals(plaintext)).toBe(true);
  });

  it("handles empty plaintext and empty aad", () => {
    const sealed = sealAesGcm(key, Buffer.alloc(0), Buffer.alloc(0));
    expect(sealed.length).toBe(SEALED_OVERHEAD_BYTES);
    expect(openAesGcm(key, sealed, new Uint8Array(0)).length).toBe(0);
  });

  it("uses a fresh random nonce each time, so equal inputs seal differently", () => {
    const a = sealAesGcm(key, plaintext, aad);
    const b = sealAesGcm(key, plaintext, aad);
    expect(a.subarray(0, GCM_NONCE_BYTES).equals(b.subarray(0, GCM_NONCE_BYTES))).toBe(false);
    expect(a.equals(b)).toBe(false);
  });
});

describe("openAesGcm refuses", () => {
  const sealed = sealAesGcm(key, plaintext, aad);

  it("a change to any single byte of the sealed output (nonce, ciphertext or tag)", () => {
    for (let i = 0; i < sealed.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const tampered = Buffer.from(sealed);
        tampered[i] = (tampered[i] ?? 0) ^ mask;
        expect(failureOf(() => openAesGcm(key, tampered, aad)).message).toBe("authentication failed");
      }
    }
  });

  it("the wrong aad, including a missing one", () => {
    expect(failureOf(() => openAesGcm(key, sealed, Buffer.from("tenant=acme;key=pii;kek=4"))).message).toBe(
      "authentication failed",
    );
    expect(failureOf(() => openAesGcm(key, sealed, Buffer.alloc(0))).message).toBe("authentication failed");
  });

  it("the wrong key", () => {
    expect(failureOf(() => openAesGcm(generateAes256Key(), sealed, aad)).message).toBe("authentication failed");
  });

  it("input shorter than nonce + tag, and any truncation or extension", () => {
    for (const length of [0, 1, SEALED_OVERHEAD_BYTES - 1]) {
      expect(failureOf(() => openAesGcm(key, sealed.subarray(0, length), aad)).message).toBe("input too short");
    }
    failureOf(() => openAesGcm(key, sealed.subarray(0, sealed.length - 1), aad));
    failureOf(() => openAesGcm(key, Buffer.concat([sealed, Buffer.from([0])]), aad));
  });

  it("keys that are not 32 bytes, for seal and open", () => {
    for (const size of [0, 16, 24, 31, 33]) {
      expect(failureOf(() => sealAesGcm(Buffer.alloc(size), plaintext, aad)).message).toBe("invalid key");
      expect(failureOf(() => openAesGcm(Buffer.alloc(size), sealed, aad)).message).toBe("invalid key");
    }
  });
});

describe("CryptoFailure", () => {
  it("carries a fixed message with no key, plaintext or ciphertext in it", () => {
    const sealed = sealAesGcm(key, plaintext, aad);
    const error = failureOf(() => openAesGcm(generateAes256Key(), sealed, aad));
    expect(error.name).toBe("CryptoFailure");
    expect(error).toBeInstanceOf(Error);
    expect(error.cause).toBeUndefined();
    const text = `${error.message} ${String(error.stack)}`;
    for (const secret of [key, plaintext, sealed]) {
      expect(text).not.toContain(secret.toString("hex"));
      expect(text).not.toContain(secret.toString("base64"));
    }
    expect(text).not.toContain(plaintext.toString("utf8"));
  });
});

describe("encryptAesGcmRaw / decryptAesGcmRaw parameters", () => {
  const iv = Buffer.alloc(12, 1);

  it("accept AES-128, -192 and -256 keys and refuse other sizes", () => {
    for (const size of [16, 24, 32]) {
      const k = Buffer.alloc(size, 2);
      const { ciphertext, tag } = encryptAesGcmRaw(k, iv, plaintext, aad);
      expect(decryptAesGcmRaw(k, iv, ciphertext, tag, aad).equals(plaintext)).toBe(true);
    }
    expect(failureOf(() => encryptAesGcmRaw(Buffer.alloc(20), iv, plaintext, aad)).message).toBe("invalid key");
  });

  it("accept IVs of 1 to 128 bytes and refuse 0 and 129", () => {
    for (const size of [1, 8, 12, 16, 128]) {
      const v = Buffer.alloc(size, 3);
      const { ciphertext, tag } = encryptAesGcmRaw(key, v, plaintext, aad);
      expect(decryptAesGcmRaw(key, v, ciphertext, tag, aad).equals(plaintext)).toBe(true);
    }
    for (const size of [0, 129]) {
      expect(failureOf(() => encryptAesGcmRaw(key, Buffer.alloc(size), plaintext, aad)).message).toBe("invalid nonce");
      expect(failureOf(() => decryptAesGcmRaw(key, Buffer.alloc(size), plaintext, Buffer.alloc(16), aad)).message).toBe(
        "invalid nonce",
      );
    }
  });

  it("accept tags of 4, 8 and 12-16 bytes and refuse the rest", () => {
    for (const tagLength of [4, 8, 12, 13, 14, 15, 16]) {
      const { ciphertext, tag } = encryptAesGcmRaw(key, iv, plaintext, aad, tagLength);
      expect(tag.length).toBe(tagLength);
      expect(decryptAesGcmRaw(key, iv, ciphertext, tag, aad).equals(plaintext)).toBe(true);
    }
    for (const tagLength of [0, 1, 3, 5, 11, 17]) {
      expect(failureOf(() => encryptAesGcmRaw(key, iv, plaintext, aad, tagLength)).message).toBe("invalid tag length");
      expect(failureOf(() => decryptAesGcmRaw(key, iv, plaintext, Buffer.alloc(tagLength), aad)).message).toBe(
        "invalid tag length",
      );
    }
  });

  it("check a tag at the length it is given: a GCM tag's prefix verifies as a shorter tag, an over-long tag is refused", () => {
    const { ciphertext, tag } = encryptAesGcmRaw(key, iv, plaintext, aad, 16);
    // GCM tags truncate, so the 12-byte prefix is the 12-byte tag. Callers that require full tags
    // (openAesGcm does) must slice 16 bytes themselves; the raw layer checks what it is handed.
    expect(decryptAesGcmRaw(key, iv, ciphertext, tag.subarray(0, 12), aad).equals(plaintext)).toBe(true);
    expect(failureOf(() => decryptAesGcmRaw(key, iv, ciphertext, Buffer.concat([tag, Buffer.from([0])]), aad)).message).toBe(
      "invalid tag length",
    );
  });
});

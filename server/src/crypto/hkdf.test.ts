import { describe, expect, it } from "vitest";
import { HKDF_SHA256_MAX_LENGTH, hkdfSha256 } from "./hkdf.js";

const hex = (s: string): Buffer => Buffer.from(s, "hex");
const range = (from: number, to: number): Buffer => Buffer.from(Array.from({ length: to - from }, (_, i) => from + i));

// RFC 5869 appendix A, the SHA-256 cases (also checked against `openssl kdf ... HKDF`).
describe("hkdfSha256 matches RFC 5869 test vectors", () => {
  it("A.1 basic", () => {
    const okm = hkdfSha256(Buffer.alloc(22, 0x0b), hex("000102030405060708090a0b0c"), hex("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(okm.toString("hex")).toBe(
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
  });

  it("A.2 longer inputs and outputs", () => {
    const okm = hkdfSha256(range(0x00, 0x50), range(0x60, 0xb0), range(0xb0, 0x100), 82);
    expect(okm.toString("hex")).toBe(
      "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    );
  });

  it("A.3 empty salt and info", () => {
    const okm = hkdfSha256(Buffer.alloc(22, 0x0b), Buffer.alloc(0), Buffer.alloc(0), 42);
    expect(okm.toString("hex")).toBe(
      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    );
  });
});

describe("hkdfSha256 output length", () => {
  it("returns a Buffer of the requested length up to 255 hash blocks", () => {
    const out = hkdfSha256(Buffer.alloc(32, 1), Buffer.alloc(0), Buffer.alloc(0), HKDF_SHA256_MAX_LENGTH);
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(out.length).toBe(8160);
  });

  it("refuses 0, fractional and over-long lengths", () => {
    const ikm = Buffer.alloc(32, 1);
    for (const length of [0, -1, 1.5, HKDF_SHA256_MAX_LENGTH + 1]) {
      expect(() => hkdfSha256(ikm, Buffer.alloc(0), Buffer.alloc(0), length)).toThrow(RangeError);
    }
  });
});

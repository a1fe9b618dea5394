import { describe, expect, it } from "vitest";
import { AES_256_KEY_BYTES, generateAes256Key, randomBytes } from "./random.js";

describe("random", () => {
  it("randomBytes returns exactly n bytes, including 0", () => {
    expect(randomBytes(0).length).toBe(0);
    expect(randomBytes(1).length).toBe(1);
    expect(randomBytes(1000).length).toBe(1000);
  });

  it("randomBytes refuses a negative or fractional size", () => {
    expect(() => randomBytes(-1)).toThrow(RangeError);
    expect(() => randomBytes(1.5)).toThrow(RangeError);
  });

  it("generateAes256Key returns 32 fresh bytes each call", () => {
    const a = generateAes256Key();
    const b = generateAes256Key();
    expect(a.length).toBe(AES_256_KEY_BYTES);
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { constantTimeEqual, wipe } from "./secure-buffer.js";

describe("wipe", () => {
  it("zeroes every buffer given and tolerates undefined", () => {
    const a = Buffer.from("secret key material");
    const b = new Uint8Array([1, 2, 3, 255]);
    wipe(a, undefined, b);
    expect(a.every((x) => x === 0)).toBe(true);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(() => wipe()).not.toThrow();
  });

  it("zeroes only the view it is given, not the rest of the underlying memory", () => {
    const whole = Buffer.from([9, 9, 9, 9, 9, 9]);
    wipe(whole.subarray(2, 4));
    expect([...whole]).toEqual([9, 9, 0, 0, 9, 9]);
  });
});

describe("constantTimeEqual", () => {
  it("is true for equal contents, including empty and mixed Buffer/Uint8Array", () => {
    expect(constantTimeEqual(Buffer.from("abc"), new Uint8Array([97, 98, 99]))).toBe(true);
    expect(constantTimeEqual(new Uint8Array(0), Buffer.alloc(0))).toBe(true);
  });

  it("is false when any single byte differs, wherever it is", () => {
    const a = Buffer.alloc(32, 7);
    for (let i = 0; i < a.length; i++) {
      const b = Buffer.from(a);
      b[i] = 8;
      expect(constantTimeEqual(a, b)).toBe(false);
    }
  });

  it("is false, without throwing, when lengths differ (timingSafeEqual alone would throw)", () => {
    expect(constantTimeEqual(Buffer.from("abc"), Buffer.from("abcd"))).toBe(false);
    expect(constantTimeEqual(Buffer.alloc(16), Buffer.alloc(0))).toBe(false);
    expect(constantTimeEqual(Buffer.alloc(0), Buffer.alloc(16))).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { crc32c } from "./crc32c.js";

/** Reference: the bit-at-a-time definition, to check the table-driven one against. */
function bitwise(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

describe("crc32c", () => {
  // RFC 3720 (iSCSI), appendix B.4, and the common check value for "123456789".
  it.each([
    ["the check value of '123456789'", Buffer.from("123456789"), 0xe3069283],
    ["32 bytes of zeros", Buffer.alloc(32, 0x00), 0x8a9136aa],
    ["32 bytes of 0xff", Buffer.alloc(32, 0xff), 0x62a8ab43],
    ["32 ascending bytes", Buffer.from(Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e],
    ["32 descending bytes", Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c],
    ["the empty string", Buffer.alloc(0), 0],
  ])("matches the published value for %s", (_name, data, expected) => {
    expect(crc32c(data)).toBe(expected);
  });

  it("agrees with the bit-at-a-time definition at every length around the 8-byte stride", () => {
    const data = Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 37 + 11) & 0xff));
    for (let n = 0; n <= data.length; n++) expect(crc32c(data.subarray(0, n))).toBe(bitwise(data.subarray(0, n)));
  });

  it("continues a running checksum across chunks", () => {
    const data = Buffer.from("the quick brown fox jumps over the lazy dog");
    expect(crc32c(data.subarray(13), crc32c(data.subarray(0, 13)))).toBe(crc32c(data));
  });
});

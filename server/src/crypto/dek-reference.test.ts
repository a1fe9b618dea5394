import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isValidId } from "../domain/identifiers.js";
import {
  DEK_REFERENCE_MAX_BYTES,
  type DekReferenceFields,
  ReferenceFormatError,
  encodeDekReference,
  parseDekReference,
  verifyDekReferenceTag,
} from "./dek-reference.js";
import { generateAes256Key } from "./random.js";

const hex = (s: string): Buffer => Buffer.from(s, "hex");

const fields: DekReferenceFields = {
  tenantId: "acme-corp",
  keyId: "pii",
  keyUid: hex("00112233445566778899aabbccddeeff"),
  dekVersion: 7,
};
const dek = Buffer.from(Array.from({ length: 32 }, (_, i) => i));

/** Builds body || tag from raw parts by the spec, so malformed-but-correctly-tagged inputs can be made. */
function craft(parts: { version?: number; keyUid?: Buffer; dekVersion?: number; tenantId?: Buffer; keyId?: Buffer }): Buffer {
  const dekVersion = Buffer.alloc(4);
  dekVersion.writeUInt32BE(parts.dekVersion ?? 7);
  const tenantId = parts.tenantId ?? Buffer.from("acme-corp");
  const keyId = parts.keyId ?? Buffer.from("pii");
  const body = Buffer.concat([
    Buffer.from([parts.version ?? 1]),
    parts.keyUid ?? hex("00112233445566778899aabbccddeeff"),
    dekVersion,
    Buffer.from([tenantId.length]),
    tenantId,
    Buffer.from([keyId.length]),
    keyId,
  ]);
  const macKey = createHmac("sha256", dek).update("matih-kms/v1/dek-reference").digest();
  const tag = createHmac("sha256", macKey).update(body).digest().subarray(0, 16);
  return Buffer.concat([body, tag]);
}

function formatErrorOf(bytes: Uint8Array): ReferenceFormatError {
  try {
    parseDekReference(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(ReferenceFormatError);
    return error as ReferenceFormatError;
  }
  throw new Error("expected a ReferenceFormatError, got a parsed reference");
}

describe("encodeDekReference", () => {
  it("matches the known-answer vector (computed independently with the openssl CLI)", () => {
    // body: 01 | keyUid | 00000007 | 09 "acme-corp" | 03 "pii"; tag: HMAC(HMAC(dek, label), body)[0..16]
    expect(encodeDekReference(fields, dek).toString("hex")).toBe(
      "01" + "00112233445566778899aabbccddeeff" + "00000007" + "09" + "61636d652d636f7270" + "03" + "706969" +
        "f161a8df55385b5ea565b57cdedfa35a",
    );
  });

  it("matches a construction written straight from the spec", () => {
    expect(encodeDekReference(fields, dek).equals(craft({}))).toBe(true);
  });

  it("refuses fields that could not be parsed back, and a DEK that is not 32 bytes", () => {
    const bad: Array<Partial<DekReferenceFields>> = [
      { tenantId: "" },
      { tenantId: "-acme" },
      { keyId: "a".repeat(65) },
      { keyId: "pïi" },
      { keyUid: new Uint8Array(15) },
      { dekVersion: 0 },
      { dekVersion: -1 },
      { dekVersion: 1.5 },
      { dekVersion: 2 ** 32 },
    ];
    for (const change of bad) expect(() => encodeDekReference({ ...fields, ...change }, dek)).toThrow(RangeError);
    expect(() => encodeDekReference(fields, dek.subarray(1))).toThrow(RangeError);
  });
});

describe("parseDekReference / verifyDekReferenceTag round trip", () => {
  it("returns the fields, the tagged body and the tag; the tag verifies with the DEK only", () => {
    const reference = encodeDekReference(fields, dek);
    const parsed = parseDekReference(reference);
    expect(parsed.tenantId).toBe("acme-corp");
    expect(parsed.keyId).toBe("pii");
    expect(Buffer.from(parsed.keyUid).equals(Buffer.from(fields.keyUid))).toBe(true);
    expect(parsed.dekVersion).toBe(7);
    expect(parsed.body.equals(reference.subarray(0, -16))).toBe(true);
    expect(parsed.tag.equals(reference.subarray(-16))).toBe(true);
    expect(verifyDekReferenceTag(parsed, dek)).toBe(true);
    expect(verifyDekReferenceTag(parsed, generateAes256Key())).toBe(false);
  });

  it("round-trips the extremes: 64-character ids and version 2^32-1, within the size limit", () => {
    const big = { tenantId: "T".repeat(64), keyId: "9_-".repeat(21) + "x", keyUid: Buffer.alloc(16, 0xff), dekVersion: 2 ** 32 - 1 };
    const reference = encodeDekReference(big, dek);
    expect(reference.length).toBe(1 + 16 + 4 + 1 + 64 + 1 + 64 + 16);
    expect(reference.length).toBeLessThanOrEqual(DEK_REFERENCE_MAX_BYTES);
    const parsed = parseDekReference(reference);
    expect({ ...parsed, keyUid: Buffer.from(parsed.keyUid) }).toMatchObject(big);
    expect(verifyDekReferenceTag(parsed, dek)).toBe(true);
  });

  it("is not affected by later changes to the caller's input buffer", () => {
    const reference = encodeDekReference(fields, dek);
    const parsed = parseDekReference(reference);
    reference.fill(0);
    expect(parsed.tenantId).toBe("acme-corp");
    expect(verifyDekReferenceTag(parsed, dek)).toBe(true);
  });
});

describe("a tampered reference is always refused", () => {
  it("every single-byte change, at every position, fails parsing or tag verification", () => {
    const reference = encodeDekReference(fields, dek);
    let refusedByParse = 0;
    let refusedByTag = 0;
    for (let i = 0; i < reference.length; i++) {
      for (const mask of [0x01, 0x02, 0x80, 0xff]) {
        const tampered = Buffer.from(reference);
        tampered[i] = (tampered[i] ?? 0) ^ mask;
        let parsed;
        try {
          parsed = parseDekReference(tampered);
        } catch (error) {
          expect(error).toBeInstanceOf(ReferenceFormatError);
          refusedByParse++;
          continue;
        }
        expect(verifyDekReferenceTag(parsed, dek), `byte ${i} ^ ${mask}`).toBe(false);
        refusedByTag++;
      }
    }
    expect(refusedByParse + refusedByTag).toBe(reference.length * 4);
    expect(refusedByParse).toBeGreaterThan(0);
    expect(refusedByTag).toBeGreaterThan(0);
  });

  it("every truncation is refused as malformed", () => {
    const reference = encodeDekReference(fields, dek);
    for (let length = 0; length < reference.length; length++) formatErrorOf(reference.subarray(0, length));
    expect(formatErrorOf(reference.subarray(0, reference.length - 1)).message).toBe("truncated");
  });

  it("any bytes appended are refused as trailing bytes", () => {
    const reference = encodeDekReference(fields, dek);
    for (const extra of [1, 2, 16, 100]) {
      expect(formatErrorOf(Buffer.concat([reference, Buffer.alloc(extra)])).message).toBe("trailing bytes");
    }
  });

  it("input over 512 bytes is refused before parsing; 512 bytes is parsed (and here refused on content)", () => {
    const reference = encodeDekReference(fields, dek);
    const oversized = Buffer.concat([reference, Buffer.alloc(DEK_REFERENCE_MAX_BYTES + 1 - reference.length)]);
    expect(formatErrorOf(oversized).message).toContain("512");
    expect(formatErrorOf(oversized.subarray(0, DEK_REFERENCE_MAX_BYTES)).message).toBe("trailing bytes");
  });
});

describe("parseDekReference says what is wrong", () => {
  it("empty input and unknown versions", () => {
    expect(formatErrorOf(Buffer.alloc(0)).message).toBe("reference is empty");
    expect(formatErrorOf(craft({ version: 7 })).message).toBe("unknown format version 7");
    expect(formatErrorOf(craft({ version: 0 })).message).toBe("unknown format version 0");
  });

  it("dek version 0, even when correctly tagged", () => {
    expect(formatErrorOf(craft({ dekVersion: 0 })).message).toMatch(/^dek version 0 is not valid/);
  });

  it("ids outside 1-64 characters of [A-Za-z0-9_-] starting with a letter or digit, even when correctly tagged", () => {
    const badIds = ["", "-acme", "_acme", "a".repeat(65), "acme corp", "acme.corp", "acme/corp", "acme\n", "acmé"];
    for (const id of badIds) {
      const bytes = Buffer.from(id, "utf8");
      expect(formatErrorOf(craft({ tenantId: bytes })).message).toBe("tenant id is not a valid id");
      expect(formatErrorOf(craft({ keyId: bytes })).message).toBe("key id is not a valid id");
    }
    // A lone high byte that would decode to a letter in latin1 is still refused.
    expect(formatErrorOf(craft({ tenantId: Buffer.from([0x61, 0xe9]) })).message).toBe("tenant id is not a valid id");
  });

  it("never echoes the offending content", () => {
    const error = formatErrorOf(craft({ tenantId: Buffer.from("<script>secret</script>") }));
    expect(error.message).not.toContain("secret");
    expect(error.name).toBe("ReferenceFormatError");
  });

  it("uses the same id rule as the domain (domain/identifiers.ts)", () => {
    const samples = ["a", "A", "0", "a-b_c", "-a", "_a", "", "a".repeat(64), "a".repeat(65), "a b", "a.b", "é", "a\u0000"];
    for (const id of samples) {
      const accepted = (() => {
        try {
          encodeDekReference({ ...fields, tenantId: id }, dek);
          return true;
        } catch {
          return false;
        }
      })();
      expect(accepted, JSON.stringify(id)).toBe(isValidId(id));
    }
  });
});

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  GCM_MAX_IV_BYTES,
  GCM_MIN_IV_BYTES,
  GCM_SUPPORTED_TAG_BYTES,
  decryptAesGcmRaw,
  encryptAesGcmRaw,
} from "./aes-gcm.js";
import { CryptoFailure } from "./crypto-failure.js";

// The vectors are shared between checkouts, one level above the repository root.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const vectorFile = path.resolve(repoRoot, "..", "shared", "vectors", "wycheproof", "aes_gcm_test.json");
const vectorsAbsent = !existsSync(vectorFile);

interface AeadTest {
  tcId: number;
  comment: string;
  flags: string[];
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
  result: "valid" | "invalid" | "acceptable";
}
interface AeadGroup {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: AeadTest[];
}
interface AeadFile {
  algorithm: string;
  numberOfTests: number;
  testGroups: AeadGroup[];
}

const hex = (s: string): Buffer => Buffer.from(s, "hex");

/** Whether Node (OpenSSL 3) can run GCM with these parameters at all. */
function nodeCanExpress(group: AeadGroup, test: AeadTest): boolean {
  const keyBytes = test.key.length / 2;
  const ivBytes = test.iv.length / 2;
  return (
    [16, 24, 32].includes(keyBytes) &&
    ivBytes >= GCM_MIN_IV_BYTES &&
    ivBytes <= GCM_MAX_IV_BYTES &&
    GCM_SUPPORTED_TAG_BYTES.includes(group.tagSize / 8)
  );
}

describe.skipIf(vectorsAbsent)(
  `AES-GCM matches every Wycheproof vector (${vectorsAbsent ? "SKIPPED: vectors live in ../shared/vectors/wycheproof beside the repository and are absent in a fresh clone" : "aes_gcm_test.json"})`,
  () => {
    const file: AeadFile = vectorsAbsent ? { algorithm: "", numberOfTests: 0, testGroups: [] } : JSON.parse(readFileSync(vectorFile, "utf8"));
    const executed = { valid: 0, invalid: 0, acceptable: 0, unexpressible: 0 };

    for (const group of file.testGroups) {
      describe(`key ${group.keySize} bits, iv ${group.ivSize} bits, tag ${group.tagSize} bits`, () => {
        for (const test of group.tests) {
          it(`tcId ${test.tcId} ${test.result} [${test.flags.join(",")}] ${test.comment}`, () => {
            const key = hex(test.key);
            const iv = hex(test.iv);
            const aad = hex(test.aad);
            const msg = hex(test.msg);
            const ct = hex(test.ct);
            const tag = hex(test.tag);

            if (!nodeCanExpress(group, test)) {
              // Parameters Node cannot run (an empty IV, or one over OpenSSL's 128-byte cap):
              // they must be refused outright, never half-processed or skipped.
              expect(() => encryptAesGcmRaw(key, iv, msg, aad, group.tagSize / 8)).toThrow(CryptoFailure);
              expect(() => decryptAesGcmRaw(key, iv, ct, tag, aad)).toThrow(CryptoFailure);
              executed.unexpressible++;
              return;
            }

            switch (test.result) {
              case "valid": {
                const out = encryptAesGcmRaw(key, iv, msg, aad, group.tagSize / 8);
                expect(out.ciphertext.toString("hex")).toBe(test.ct);
                expect(out.tag.toString("hex")).toBe(test.tag);
                expect(decryptAesGcmRaw(key, iv, ct, tag, aad).toString("hex")).toBe(test.msg);
                executed.valid++;
                break;
              }
              case "invalid":
                expect(() => decryptAesGcmRaw(key, iv, ct, tag, aad)).toThrow(CryptoFailure);
                executed.invalid++;
                break;
              case "acceptable": {
                // "acceptable" marks legal but discouraged inputs; an implementation may take or
                // refuse them. If we take one, the output must still be the right plaintext.
                let plaintext: Buffer | undefined;
                try {
                  plaintext = decryptAesGcmRaw(key, iv, ct, tag, aad);
                } catch (error) {
                  expect(error).toBeInstanceOf(CryptoFailure);
                }
                if (plaintext) expect(plaintext.toString("hex")).toBe(test.msg);
                executed.acceptable++;
                break;
              }
            }
          });
        }
      });
    }

    it("executed every vector in the file", () => {
      const total = executed.valid + executed.invalid + executed.acceptable + executed.unexpressible;
      expect(total).toBeGreaterThan(0);
      expect(total).toBe(file.numberOfTests);
      expect(executed.valid).toBeGreaterThan(0);
      expect(executed.invalid).toBeGreaterThan(0);
    });

    it("refuses exactly the vectors whose IV Node cannot express (0 bytes, or over 128 bytes)", () => {
      const unexpressible = file.testGroups.flatMap((g) => g.tests.filter((t) => !nodeCanExpress(g, t)).map((t) => ({ g, t })));
      expect(unexpressible.length).toBe(executed.unexpressible);
      for (const { g } of unexpressible) expect(g.ivSize === 0 || g.ivSize > GCM_MAX_IV_BYTES * 8).toBe(true);
    });

    it("every tag length Node supports is the vector's tag truncated, and is verified in full", () => {
      let checked = 0;
      for (const group of file.testGroups) {
        for (const test of group.tests) {
          if (test.result !== "valid" || !nodeCanExpress(group, test) || group.tagSize !== 128) continue;
          const [key, iv, aad, msg, ct, fullTag] = [test.key, test.iv, test.aad, test.msg, test.ct, test.tag].map(hex) as [
            Buffer, Buffer, Buffer, Buffer, Buffer, Buffer,
          ];
          for (const tagBytes of GCM_SUPPORTED_TAG_BYTES) {
            const truncated = fullTag.subarray(0, tagBytes);
            const out = encryptAesGcmRaw(key, iv, msg, aad, tagBytes);
            expect(out.ciphertext.equals(ct)).toBe(true);
            expect(out.tag.equals(truncated)).toBe(true);
            expect(decryptAesGcmRaw(key, iv, ct, truncated, aad).equals(msg)).toBe(true);
            const flipped = Buffer.from(truncated);
            flipped[tagBytes - 1] = (flipped[tagBytes - 1] ?? 0) ^ 0x01;
            expect(() => decryptAesGcmRaw(key, iv, ct, flipped, aad)).toThrow(CryptoFailure);
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  },
);

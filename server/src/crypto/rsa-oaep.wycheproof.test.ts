import { createPublicKey } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { CryptoFailure } from "./crypto-failure.js";
import { importRsaPrivateKey, rsaOaepDecrypt, rsaOaepEncrypt } from "./rsa-oaep.js";

// The vectors are shared between checkouts, one level above the repository root.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const vectorDir = path.resolve(repoRoot, "..", "shared", "vectors", "wycheproof");

interface OaepTest {
  tcId: number;
  comment: string;
  flags: string[];
  msg: string;
  ct: string;
  label: string;
  result: "valid" | "invalid" | "acceptable";
}
interface OaepGroup {
  keySize: number;
  sha: string;
  mgf: string;
  mgfSha: string;
  /** PKCS#8 DER, hex. The file also has PEM, JWK and raw CRT fields; this is the form we import in production. */
  privateKeyPkcs8: string;
  privateKeyJwk: { n: string };
  tests: OaepTest[];
}
interface OaepFile {
  numberOfTests: number;
  testGroups: OaepGroup[];
}

const hex = (s: string): Buffer => Buffer.from(s, "hex");

for (const bits of [2048, 3072, 4096]) {
  const name = `rsa_oaep_${bits}_sha256_mgf1sha256_test.json`;
  const vectorFile = path.join(vectorDir, name);
  const absent = !existsSync(vectorFile);

  describe.skipIf(absent)(
    `RSA-OAEP-SHA-256 matches every Wycheproof vector (${absent ? `SKIPPED: ${name} lives in ../shared/vectors/wycheproof beside the repository and is absent in a fresh clone` : name})`,
    () => {
      const file: OaepFile = absent ? { numberOfTests: 0, testGroups: [] } : JSON.parse(readFileSync(vectorFile, "utf8"));
      const executed = { valid: 0, invalid: 0, acceptable: 0 };

      for (const group of file.testGroups) {
        describe(`${group.keySize}-bit key, ${group.sha}, ${group.mgf}-${group.mgfSha}`, () => {
          const privateKey = importRsaPrivateKey(hex(group.privateKeyPkcs8));
          const publicKey = createPublicKey(privateKey);

          it("group is the algorithm we implement, and the PKCS#8 key is the group's key", () => {
            expect([group.sha, group.mgf, group.mgfSha]).toEqual(["SHA-256", "MGF1", "SHA-256"]);
            expect(privateKey.asymmetricKeyDetails?.modulusLength).toBe(group.keySize);
            expect(privateKey.export({ format: "jwk" }).n).toBe(group.privateKeyJwk.n);
          });

          for (const test of group.tests) {
            it(`tcId ${test.tcId} ${test.result} [${test.flags.join(",")}] ${test.comment}`, () => {
              const ct = hex(test.ct);
              const label = hex(test.label);
              switch (test.result) {
                case "valid": {
                  expect(rsaOaepDecrypt(privateKey, ct, label).toString("hex")).toBe(test.msg);
                  // OAEP encryption is randomised, so the encrypt side is checked by round trip.
                  const again = rsaOaepEncrypt(publicKey, hex(test.msg), label);
                  expect(rsaOaepDecrypt(privateKey, again, label).toString("hex")).toBe(test.msg);
                  executed.valid++;
                  break;
                }
                case "invalid":
                  expect(() => rsaOaepDecrypt(privateKey, ct, label)).toThrow(CryptoFailure);
                  executed.invalid++;
                  break;
                case "acceptable": {
                  // "acceptable" marks legal but discouraged inputs; either outcome is allowed,
                  // but a plaintext we do return must be the right one.
                  let plaintext: Buffer | undefined;
                  try {
                    plaintext = rsaOaepDecrypt(privateKey, ct, label);
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

          it("every refusal has the same message, so failures cannot be told apart (no padding oracle)", () => {
            const messages = new Set<string>();
            for (const test of group.tests.filter((t) => t.result === "invalid")) {
              try {
                rsaOaepDecrypt(privateKey, hex(test.ct), hex(test.label));
              } catch (error) {
                messages.add((error as Error).message);
              }
            }
            expect([...messages]).toEqual(["decryption failed"]);
          });
        });
      }

      it("executed every vector in the file", () => {
        const total = executed.valid + executed.invalid + executed.acceptable;
        expect(total).toBeGreaterThan(0);
        expect(total).toBe(file.numberOfTests);
        expect(executed.valid).toBeGreaterThan(0);
        expect(executed.invalid).toBeGreaterThan(0);
      });
    },
  );
}

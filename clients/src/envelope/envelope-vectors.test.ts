import { hkdfSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { buildVectorFile, VECTOR_FILE, type VectorFile } from "../../test-vectors/envelope-v1.js";
import { EnvelopeError } from "../errors/envelope-error.js";
import { encodeContext, type EncryptionContext } from "./canonical-context.js";
import { openingKey, openMessage, StreamOpener } from "./envelope-crypto.js";
import { parseHeader } from "./envelope-format.js";

const committed = JSON.parse(readFileSync(VECTOR_FILE, "utf8")) as VectorFile;

/** Decrypts an envelope with a known DEK, the way a decryptor must (no cache, no service). */
function open(envelopeHex: string, dekHex: string, context: EncryptionContext): Buffer {
  const envelope = Buffer.from(envelopeHex, "hex");
  const dek = Buffer.from(dekHex, "hex");
  const header = parseHeader(envelope);
  const contextBytes = encodeContext(context);
  if (header.contentType === "message") return openMessage(header, envelope, dek, contextBytes);
  const opener = new StreamOpener(header, openingKey(header, dek), contextBytes);
  const parts = opener.push(envelope.subarray(header.bytes.length));
  opener.finish();
  return Buffer.concat(parts);
}

describe("envelope v1 test vectors (clients/test-vectors/envelope-v1.json)", () => {
  it("regenerating every vector from its fixed DEK and salt gives exactly the committed bytes", () => {
    expect(buildVectorFile()).toEqual(committed);
  });

  it("covers both content types and the refusals a decryptor must make", () => {
    expect(new Set(committed.valid.map((v) => v.contentType))).toEqual(new Set(["message", "stream"]));
    expect(new Set(committed.invalid.map((v) => v.error))).toEqual(
      new Set(["COMMITMENT_MISMATCH", "AUTHENTICATION_FAILED", "MALFORMED", "STREAM_TRUNCATED", "STREAM_EXTENDED"]),
    );
  });

  it.each(committed.valid.map((v) => [v.name, v] as const))("decrypts the valid vector %s back to its plaintext", (_, vector) => {
    expect(open(vector.envelope, vector.dek, vector.context).toString("hex")).toBe(vector.plaintext);
  });

  it.each(committed.valid.map((v) => [v.name, v] as const))("derives message key and commitment for %s as RFC 5869 HKDF-SHA-256 does", (_, vector) => {
    const dek = Buffer.from(vector.dek, "hex");
    const salt = Buffer.from(vector.salt, "hex");
    const key = Buffer.from(hkdfSync("sha256", dek, salt, "matih-kms envelope v1 encryption key", 32));
    const commitment = Buffer.from(hkdfSync("sha256", dek, salt, "matih-kms envelope v1 key commitment", 32));
    expect(key.toString("hex")).toBe(vector.messageKey);
    expect(commitment.toString("hex")).toBe(vector.commitment);
    expect(vector.header.endsWith(vector.commitment)).toBe(true);
  });

  it.each(committed.invalid.map((v) => [v.name, v] as const))("refuses the invalid vector %s with its error kind", (_, vector) => {
    let caught: unknown;
    try {
      open(vector.envelope, vector.dek, vector.context);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(EnvelopeError);
    expect((caught as EnvelopeError).kind).toBe(vector.error);
  });
});

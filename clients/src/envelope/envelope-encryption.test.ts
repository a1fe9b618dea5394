import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFakeKms, type FakeKms } from "../../test/support/fake-kms.js";
import { createKmsClient } from "../client/kms-client.js";
import { EnvelopeError } from "../errors/envelope-error.js";
import { KmsError } from "../errors/kms-error.js";
import { encodeContext } from "./canonical-context.js";
import { createEnvelopeEncryption, type EnvelopeEncryption } from "./envelope-encryption.js";
import { encodeHeader, parseHeader } from "./envelope-format.js";

const CONTEXT = { table: "customers", column: "email", row: "42" };

/** Runs a Transform over `input` fed in pieces of `pieceSize`; returns what it emitted and how it ended. */
async function runTransform(transform: NodeJS.ReadWriteStream, input: Buffer, pieceSize = 7): Promise<{ output: Buffer; error: unknown }> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += pieceSize) pieces.push(input.subarray(i, i + pieceSize));
  const out: Buffer[] = [];
  let error: unknown;
  try {
    await pipeline(
      Readable.from(pieces),
      transform,
      new Writable({
        write(chunk: Buffer, _enc, done) {
          out.push(chunk);
          done();
        },
      }),
    );
  } catch (e) {
    error = e;
  }
  return { output: Buffer.concat(out), error };
}

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure");
}

function kindOf(error: unknown): string {
  if (error instanceof EnvelopeError) return error.kind;
  if (error instanceof KmsError) return `KMS:${error.reasonName}`;
  return `other:${String(error)}`;
}

describe("envelope encryption over the DEK cache (fake KMS)", () => {
  let kms: FakeKms;
  let envelope: EnvelopeEncryption;

  beforeEach(() => {
    kms = createFakeKms();
    kms.createKey("acme", "pii");
    kms.createKey("acme", "logs");
    kms.createKey("globex", "pii");
    envelope = createEnvelopeEncryption({
      kms: createKmsClient({ transport: kms.transport, retry: false }),
      cache: { maxAgeMs: 60_000, events: false, fallbackMaxAgeMs: 60_000 },
    });
  });
  afterEach(() => envelope.close());

  it("round-trips messages of 0, 1, 1 KiB and 1 MiB bytes with a context", async () => {
    for (const size of [0, 1, 1024, 1024 * 1024]) {
      const plaintext = Buffer.alloc(size, size % 251);
      const ciphertext = await envelope.encrypt("acme", "pii", plaintext, CONTEXT);
      expect((await envelope.decrypt(ciphertext, CONTEXT)).equals(plaintext), `size ${size}`).toBe(true);
    }
  });

  it("takes no nonce from the caller: the same plaintext encrypts to different bytes (a fresh salt) every time", async () => {
    const a = await envelope.encrypt("acme", "pii", Buffer.from("same"), CONTEXT);
    const b = await envelope.encrypt("acme", "pii", Buffer.from("same"), CONTEXT);
    expect(a.equals(b)).toBe(false);
    expect(parseHeader(a).salt.equals(parseHeader(b).salt)).toBe(false);
  });

  it("writes a self-describing header: format version 1 first, then content type, DEK version, tenant, key, reference", async () => {
    const ciphertext = await envelope.encrypt("acme", "pii", Buffer.from("x"), CONTEXT);
    expect(ciphertext[0]).toBe(1);
    const header = parseHeader(ciphertext);
    expect(header).toMatchObject({ contentType: "message", tenantId: "acme", keyId: "pii", dekVersion: 1 });
    expect(ciphertext.readUInt32BE(2)).toBe(1);
  });

  it("fails when any single byte of a message envelope is changed, and never returns plaintext", async () => {
    const ciphertext = await envelope.encrypt("acme", "pii", Buffer.from("the secret"), CONTEXT);
    const kinds = new Set<string>();
    for (let i = 0; i < ciphertext.length; i++) {
      const tampered = Buffer.from(ciphertext);
      tampered[i] = (tampered[i] as number) ^ 0x01;
      const error = await failureOf(envelope.decrypt(tampered, CONTEXT));
      kinds.add(kindOf(error));
    }
    // Each change is caught by the first check that covers the byte.
    expect([...kinds].every((k) => !k.startsWith("other:"))).toBe(true);
    expect(kinds).toContain("AUTHENTICATION_FAILED");
    expect(kinds).toContain("COMMITMENT_MISMATCH");
    expect(kinds).toContain("MALFORMED");
  });

  it("fails when any single byte of a stream envelope is changed", async () => {
    const plaintext = Buffer.alloc(50, 7);
    const { output: ciphertext } = await runTransform(envelope.createEncryptStream("acme", "logs", CONTEXT, { chunkSize: 16 }), plaintext);
    expect(await envelope.decrypt(ciphertext, CONTEXT)).toEqual(plaintext);
    for (let i = 0; i < ciphertext.length; i++) {
      const tampered = Buffer.from(ciphertext);
      tampered[i] = (tampered[i] as number) ^ 0x80;
      const { error } = await runTransform(envelope.createDecryptStream(CONTEXT), tampered, 13);
      expect(error, `byte ${i}`).toBeDefined();
    }
  });

  it("fails with a wrong context: another value, a missing pair, an extra pair, no context", async () => {
    const ciphertext = await envelope.encrypt("acme", "pii", Buffer.from("bound"), CONTEXT);
    for (const context of [{ ...CONTEXT, row: "43" }, { table: "customers", column: "email" }, { ...CONTEXT, extra: "1" }, undefined]) {
      const error = await failureOf(envelope.decrypt(ciphertext, context));
      expect(kindOf(error)).toBe("AUTHENTICATION_FAILED");
    }
  });

  it("fails for a ciphertext of another tenant or key: refused locally when the caller says whom it expects", async () => {
    const ciphertext = await envelope.encrypt("globex", "pii", Buffer.from("globex data"), CONTEXT);
    const before = kms.calls.decrypt;
    expect(kindOf(await failureOf(envelope.decrypt(ciphertext, CONTEXT, { tenantId: "acme" })))).toBe("UNEXPECTED_KEY");
    expect(kindOf(await failureOf(envelope.decrypt(ciphertext, CONTEXT, { tenantId: "globex", keyId: "logs" })))).toBe("UNEXPECTED_KEY");
    expect(kms.calls.decrypt).toBe(before);
    expect(await envelope.decrypt(ciphertext, CONTEXT, { tenantId: "globex", keyId: "pii" })).toEqual(Buffer.from("globex data"));
  });

  it("fails for a ciphertext of another tenant or key: a header re-labelled to another tenant is refused by the service, one spliced with another key's reference by the commitment", async () => {
    const ciphertext = await envelope.encrypt("globex", "pii", Buffer.from("globex data"), CONTEXT);
    const header = parseHeader(ciphertext);
    const body = ciphertext.subarray(header.bytes.length);

    // Same reference, header claims tenant acme: the reference names globex.
    const relabelled = Buffer.concat([encodeHeader({ ...header, tenantId: "acme" }, header.commitment), body]);
    const refused = await failureOf(envelope.decrypt(relabelled, CONTEXT));
    expect(kindOf(refused)).toBe("KMS:REFERENCE_KEY_MISMATCH");

    // Header and reference of acme/pii (a valid pair), body and commitment of globex/pii.
    const acme = parseHeader(await envelope.encrypt("acme", "pii", Buffer.from("acme data"), CONTEXT));
    const spliced = Buffer.concat([encodeHeader({ ...header, tenantId: "acme", reference: acme.reference, dekVersion: acme.dekVersion }, header.commitment), body]);
    expect(kindOf(await failureOf(envelope.decrypt(spliced, CONTEXT)))).toBe("COMMITMENT_MISMATCH");
  });

  it("fails a commitment mismatch before any plaintext is released: a decrypt stream emits nothing", async () => {
    const plaintext = Buffer.alloc(100, 1);
    const { output: ciphertext } = await runTransform(envelope.createEncryptStream("acme", "logs", CONTEXT, { chunkSize: 16 }), plaintext);
    const header = parseHeader(ciphertext);
    const commitmentAt = header.bytes.length - 32;
    const tampered = Buffer.from(ciphertext);
    tampered[commitmentAt] = (tampered[commitmentAt] as number) ^ 0x01;
    const { output, error } = await runTransform(envelope.createDecryptStream(CONTEXT), tampered, 37);
    expect(kindOf(error)).toBe("COMMITMENT_MISMATCH");
    expect(output.length).toBe(0);

    // The same ciphertext with an intact commitment releases its first chunks before a later failure:
    // so the empty output above is the commitment check's doing, not the tag's.
    const late = Buffer.from(ciphertext);
    late[late.length - 1] = (late[late.length - 1] as number) ^ 0x01;
    const partial = await runTransform(envelope.createDecryptStream(CONTEXT), late, 37);
    expect(kindOf(partial.error)).toBe("AUTHENTICATION_FAILED");
    expect(partial.output.length).toBeGreaterThan(0);
  });

  it("refuses a header whose DEK version differs from the one the service returns for its reference", async () => {
    const ciphertext = await envelope.encrypt("acme", "pii", Buffer.from("x"), CONTEXT);
    const header = parseHeader(ciphertext);
    const lying = Buffer.concat([encodeHeader({ ...header, dekVersion: 2 }, header.commitment), ciphertext.subarray(header.bytes.length)]);
    expect(kindOf(await failureOf(envelope.decrypt(lying, CONTEXT)))).toBe("DEK_MISMATCH");
  });

  it("streams: reordering, truncating or extending the chunks of a stream envelope is detected", async () => {
    const plaintext = Buffer.alloc(48, 9); // chunks: 16, 16, final 16
    const { output: ciphertext } = await runTransform(envelope.createEncryptStream("acme", "logs", CONTEXT, { chunkSize: 16 }), plaintext);
    const start = parseHeader(ciphertext).bytes.length;
    const size = 5 + 16 + 16;
    const head = ciphertext.subarray(0, start);
    const [c0, c1, c2] = [0, 1, 2].map((i) => ciphertext.subarray(start + i * size, start + (i + 1) * size)) as [Buffer, Buffer, Buffer];
    expect(start + 3 * size).toBe(ciphertext.length);

    const cases: [string, Buffer, string][] = [
      ["reordered", Buffer.concat([head, c1, c0, c2]), "AUTHENTICATION_FAILED"],
      ["truncated (final chunk dropped)", Buffer.concat([head, c0, c1]), "STREAM_TRUNCATED"],
      ["truncated mid-chunk", Buffer.concat([head, c0, c1, c2.subarray(0, 10)]), "STREAM_TRUNCATED"],
      ["extended after the final chunk", Buffer.concat([head, c0, c1, c2, c0]), "STREAM_EXTENDED"],
      ["a chunk duplicated", Buffer.concat([head, c0, c0, c1, c2]), "AUTHENTICATION_FAILED"],
    ];
    for (const [name, bytes, kind] of cases) {
      const { error } = await runTransform(envelope.createDecryptStream(CONTEXT), bytes, 11);
      expect(kindOf(error), name).toBe(kind);
      expect(kindOf(await failureOf(envelope.decrypt(bytes, CONTEXT))), `${name} (whole)`).toBe(kind);
    }
  });

  it("streams: round-trips 0 to 3 chunks and a large payload fed in odd-sized pieces, and decrypts a message envelope through the stream API", async () => {
    for (const size of [0, 1, 16, 17, 48, 200_000]) {
      const plaintext = Buffer.alloc(size);
      for (let i = 0; i < size; i++) plaintext[i] = (i * 31) & 0xff;
      const { output: ciphertext, error } = await runTransform(envelope.createEncryptStream("acme", "logs", CONTEXT, { chunkSize: size > 1000 ? 65_536 : 16 }), plaintext, 333);
      expect(error).toBeUndefined();
      const decrypted = await runTransform(envelope.createDecryptStream(CONTEXT, { tenantId: "acme" }), ciphertext, 97);
      expect(decrypted.error).toBeUndefined();
      expect(decrypted.output.equals(plaintext), `size ${size}`).toBe(true);
    }
    const message = await envelope.encrypt("acme", "pii", Buffer.from("one shot"), CONTEXT);
    expect((await runTransform(envelope.createDecryptStream(CONTEXT), message, 5)).output.toString()).toBe("one shot");
  });

  it("refuses an encryption context it cannot encode canonically, before calling the service", async () => {
    const before = kms.calls.generateDataKey;
    for (const context of [{ a: 1 as unknown as string }, { "": "x" }, { a: "\uD800" }]) {
      expect(kindOf(await failureOf(envelope.encrypt("acme", "pii", Buffer.from("x"), context)))).toBe("CONTEXT_INVALID");
    }
    expect(kms.calls.generateDataKey).toBe(before);
  });
});

describe("the canonical encoding of the encryption context", () => {
  it("does not depend on the order the pairs were given in", () => {
    expect(encodeContext({ b: "2", a: "1" })).toEqual(encodeContext({ a: "1", b: "2" }));
  });

  it("gives distinct contexts distinct bytes (every element is length-prefixed)", () => {
    expect(encodeContext({ a: "bc" }).equals(encodeContext({ ab: "c" }))).toBe(false);
    expect(encodeContext({ a: "" }).equals(encodeContext({}))).toBe(false);
  });

  it("encodes no context and an empty one alike, as a zero pair count", () => {
    expect(encodeContext(undefined)).toEqual(Buffer.from([0, 0]));
    expect(encodeContext({})).toEqual(Buffer.from([0, 0]));
  });

  it("sorts names by their UTF-8 bytes, not by UTF-16 code units", () => {
    // U+FF21 (EF BC A1) sorts before U+1F600 (F0 9F 98 80) in UTF-8, after it in UTF-16.
    const encoded = encodeContext({ "\u{1F600}": "1", "\uFF21": "2" });
    expect(encoded.subarray(4, 7)).toEqual(Buffer.from("\uFF21", "utf8"));
  });
});

/**
 * The envelope v1 test vectors: fixed DEKs and salts → exact bytes.
 *
 *   npx tsx clients/test-vectors/envelope-v1.ts --write   regenerates envelope-v1.json
 *
 * The committed JSON is the format's contract: envelope-vectors.test.ts
 * rebuilds every vector with the current code and requires the same bytes,
 * so any change to the format shows up as a failing test (a deliberate
 * change needs a new format version, not new vectors for v1).
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { encodeContext, type EncryptionContext } from "../src/envelope/canonical-context.js";
import { sealMessage, StreamSealer, type SealingKey } from "../src/envelope/envelope-crypto.js";
import { deriveMessageKeys } from "../src/envelope/message-keys.js";
import { parseHeader } from "../src/envelope/envelope-format.js";

export interface ValidVector {
  readonly name: string;
  readonly contentType: "message" | "stream";
  readonly dek: string;
  readonly salt: string;
  readonly tenantId: string;
  readonly keyId: string;
  readonly dekVersion: number;
  readonly reference: string;
  readonly context: EncryptionContext;
  readonly chunkSize?: number;
  readonly plaintext: string;
  /** Intermediate values, for implementers. */
  readonly contextEncoding: string;
  readonly messageKey: string;
  readonly commitment: string;
  readonly header: string;
  readonly envelope: string;
}

export interface InvalidVector {
  readonly name: string;
  readonly dek: string;
  readonly context: EncryptionContext;
  readonly envelope: string;
  /** The EnvelopeError kind a decryptor must refuse it with. */
  readonly error: string;
}

export interface VectorFile {
  readonly format: string;
  readonly spec: string;
  readonly encoding: string;
  readonly valid: readonly ValidVector[];
  readonly invalid: readonly InvalidVector[];
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const sequence = (start: number, length: number): Buffer => Buffer.from(Array.from({ length }, (_, i) => (start + i) & 0xff));

/** A reference laid out like the service's v1 references (the client treats it as opaque). */
function reference(tenantId: string, keyId: string, dekVersion: number): Buffer {
  const version = Buffer.alloc(4);
  version.writeUInt32BE(dekVersion);
  return Buffer.concat([
    Buffer.from([1]),
    Buffer.alloc(16, 0xaa),
    version,
    Buffer.from([tenantId.length]),
    Buffer.from(tenantId, "ascii"),
    Buffer.from([keyId.length]),
    Buffer.from(keyId, "ascii"),
    Buffer.alloc(16, 0xbb),
  ]);
}

interface Input {
  readonly name: string;
  readonly contentType: "message" | "stream";
  readonly dek: Buffer;
  readonly salt: Buffer;
  readonly tenantId: string;
  readonly keyId: string;
  readonly dekVersion: number;
  readonly context: EncryptionContext;
  readonly chunkSize?: number;
  readonly plaintext: Buffer;
}

const INPUTS: readonly Input[] = [
  {
    name: "message: empty plaintext, empty context",
    contentType: "message",
    dek: sequence(0x00, 32),
    salt: sequence(0x40, 32),
    tenantId: "acme",
    keyId: "pii",
    dekVersion: 1,
    context: {},
    plaintext: Buffer.alloc(0),
  },
  {
    name: "message: text with a context of three pairs (given out of order)",
    contentType: "message",
    dek: sequence(0x00, 32),
    salt: sequence(0x60, 32),
    tenantId: "acme",
    keyId: "pii",
    dekVersion: 7,
    context: { table: "customers", column: "email", row: "42" },
    plaintext: Buffer.from("jane.doe@example.com", "utf8"),
  },
  {
    name: "message: non-ASCII context, DEK version 2^32-1",
    contentType: "message",
    dek: sequence(0x80, 32),
    salt: sequence(0xa0, 32),
    tenantId: "tenant-0",
    keyId: "documents_2026",
    dekVersion: 0xffff_ffff,
    context: { "größe": "groß", "键": "值", a: "" },
    plaintext: sequence(0x00, 100),
  },
  {
    name: "stream: 40 bytes in chunks of 16 (16, 16, final 8)",
    contentType: "stream",
    dek: sequence(0x11, 32),
    salt: sequence(0x22, 32),
    tenantId: "acme",
    keyId: "logs",
    dekVersion: 3,
    context: { bucket: "exports", object: "2026/01/report.csv" },
    chunkSize: 16,
    plaintext: sequence(0x30, 40),
  },
  {
    name: "stream: 32 bytes in chunks of 16 (16, final 16)",
    contentType: "stream",
    dek: sequence(0x11, 32),
    salt: sequence(0x33, 32),
    tenantId: "acme",
    keyId: "logs",
    dekVersion: 3,
    context: {},
    chunkSize: 16,
    plaintext: sequence(0x50, 32),
  },
  {
    name: "stream: empty (one final chunk of 0 bytes)",
    contentType: "stream",
    dek: sequence(0x11, 32),
    salt: sequence(0x44, 32),
    tenantId: "acme",
    keyId: "logs",
    dekVersion: 3,
    context: {},
    chunkSize: 65536,
    plaintext: Buffer.alloc(0),
  },
];

function sealingKey(input: Input): SealingKey {
  return { dek: input.dek, tenantId: input.tenantId, keyId: input.keyId, dekVersion: input.dekVersion, reference: reference(input.tenantId, input.keyId, input.dekVersion) };
}

/** Seals `input` with its fixed salt: the envelope's exact bytes. */
export function seal(input: Input): Buffer {
  const context = encodeContext(input.context);
  if (input.contentType === "message") return sealMessage(sealingKey(input), input.plaintext, context, input.salt);
  const sealer = new StreamSealer(sealingKey(input), context, input.chunkSize as number, input.salt);
  return Buffer.concat([sealer.header(), ...sealer.push(input.plaintext), sealer.finish()]);
}

function valid(input: Input): ValidVector {
  const envelope = seal(input);
  const keys = deriveMessageKeys(input.dek, input.salt);
  return {
    name: input.name,
    contentType: input.contentType,
    dek: hex(input.dek),
    salt: hex(input.salt),
    tenantId: input.tenantId,
    keyId: input.keyId,
    dekVersion: input.dekVersion,
    reference: hex(reference(input.tenantId, input.keyId, input.dekVersion)),
    context: input.context,
    ...(input.chunkSize === undefined ? {} : { chunkSize: input.chunkSize }),
    plaintext: hex(input.plaintext),
    contextEncoding: hex(encodeContext(input.context)),
    messageKey: hex(keys.encryptionKey),
    commitment: hex(keys.commitment),
    header: hex(parseHeader(envelope).bytes),
    envelope: hex(envelope),
  };
}

function invalid(): InvalidVector[] {
  const message = INPUTS[1] as Input;
  const stream = INPUTS[3] as Input;
  const messageBytes = seal(message);
  const streamBytes = seal(stream);
  const header = parseHeader(messageBytes).bytes.length;
  const streamHeader = parseHeader(streamBytes).bytes.length;
  const chunk = 5 + 16 + 16; // a full chunk of 16 plaintext bytes
  const flip = (bytes: Buffer, at: number): Buffer => {
    const copy = Buffer.from(bytes);
    copy[at] = (copy[at] as number) ^ 0x01;
    return copy;
  };
  const entry = (name: string, input: Input, envelope: Buffer, error: string, context = input.context): InvalidVector => ({
    name,
    dek: hex(input.dek),
    context,
    envelope: hex(envelope),
    error,
  });
  const s0 = streamBytes.subarray(streamHeader, streamHeader + chunk);
  const s1 = streamBytes.subarray(streamHeader + chunk, streamHeader + 2 * chunk);
  const sFinal = streamBytes.subarray(streamHeader + 2 * chunk);
  return [
    entry("message: a commitment bit flipped", message, flip(messageBytes, header - 1), "COMMITMENT_MISMATCH"),
    entry("message: a ciphertext bit flipped", message, flip(messageBytes, header), "AUTHENTICATION_FAILED"),
    entry("message: a tag bit flipped", message, flip(messageBytes, messageBytes.length - 1), "AUTHENTICATION_FAILED"),
    entry("message: a DEK version bit flipped", message, flip(messageBytes, 5), "AUTHENTICATION_FAILED"),
    entry("message: another context value", message, messageBytes, "AUTHENTICATION_FAILED", { ...message.context, row: "43" }),
    entry("message: the context less one pair", message, messageBytes, "AUTHENTICATION_FAILED", { table: "customers", column: "email" }),
    entry("message: unknown format version", message, Buffer.concat([Buffer.from([2]), messageBytes.subarray(1)]), "MALFORMED"),
    entry("stream: final chunk dropped", stream, streamBytes.subarray(0, streamHeader + 2 * chunk), "STREAM_TRUNCATED"),
    entry("stream: chunks 0 and 1 swapped", stream, Buffer.concat([streamBytes.subarray(0, streamHeader), s1, s0, sFinal]), "AUTHENTICATION_FAILED"),
    entry("stream: a chunk repeated", stream, Buffer.concat([streamBytes.subarray(0, streamHeader), s0, s0, s1, sFinal]), "AUTHENTICATION_FAILED"),
    entry("stream: bytes after the final chunk", stream, Buffer.concat([streamBytes, Buffer.from([0])]), "STREAM_EXTENDED"),
    entry("stream: final flag set on the first chunk", stream, Buffer.concat([streamBytes.subarray(0, streamHeader), flip(s0, 0)]), "AUTHENTICATION_FAILED"),
  ];
}

export function buildVectorFile(): VectorFile {
  return {
    format: "matih-kms envelope v1",
    spec: "docs/envelope-format.md",
    encoding: "byte strings are lower-case hex; contexts are JSON objects of strings",
    valid: INPUTS.map(valid),
    invalid: invalid(),
  };
}

export const VECTOR_FILE = fileURLToPath(new URL("./envelope-v1.json", import.meta.url));

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1] && process.argv.includes("--write")) {
  writeFileSync(VECTOR_FILE, `${JSON.stringify(buildVectorFile(), null, 2)}\n`);
  console.log(`wrote ${VECTOR_FILE}`);
}

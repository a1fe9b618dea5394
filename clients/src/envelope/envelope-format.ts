import { EnvelopeError } from "../errors/envelope-error.js";

/**
 * The envelope format, version 1 (docs/envelope-format.md is the
 * specification; test-vectors/envelope-v1.json pins it).
 *
 *   header:
 *     u8   format version          0x01
 *     u8   content type            0x01 message (one AES-GCM body) | 0x02 stream (chunks)
 *     u32  DEK version (BE)        at a fixed offset, so a database can count versions
 *     u8   tenant id length, tenant id (ASCII, the service's id rule)
 *     u8   key id length, key id
 *     u16  DEK reference length (BE), DEK reference (opaque, from GenerateDataKey)
 *     32   salt (random, per message)
 *     u32  chunk size (BE)          stream only: most plaintext bytes per chunk
 *     32   key commitment
 *   body, message:  ciphertext || tag(16)
 *   body, stream:   chunks of  u8 final flag || u32 length (BE) || ciphertext || tag(16)
 */
export const ENVELOPE_FORMAT_VERSION = 0x01;
export const CONTENT_TYPE_MESSAGE = 0x01;
export const CONTENT_TYPE_STREAM = 0x02;
/** Where the u32 DEK version sits in every v1 envelope. */
export const DEK_VERSION_OFFSET = 2;
export const SALT_BYTES = 32;
export const COMMITMENT_BYTES = 32;
export const TAG_BYTES = 16;
export const NONCE_BYTES = 12;
export const MAX_REFERENCE_BYTES = 512;
export const CHUNK_PREFIX_BYTES = 5;
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
/** The service's rule for tenant and key ids. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export type ContentType = "message" | "stream";

export interface EnvelopeHeaderFields {
  readonly contentType: ContentType;
  readonly dekVersion: number;
  readonly tenantId: string;
  readonly keyId: string;
  readonly reference: Uint8Array;
  readonly salt: Uint8Array;
  /** Stream only. */
  readonly chunkSize?: number | undefined;
}

export interface EnvelopeHeader extends EnvelopeHeaderFields {
  readonly reference: Buffer;
  readonly salt: Buffer;
  readonly commitment: Buffer;
  /** The header's bytes as they appear in the envelope (a view, not a copy). */
  readonly bytes: Buffer;
}

/** The header's length for these fields. */
export function headerLength(fields: Pick<EnvelopeHeaderFields, "contentType" | "tenantId" | "keyId" | "reference">): number {
  return (
    1 + 1 + 4 + 1 + fields.tenantId.length + 1 + fields.keyId.length + 2 + fields.reference.byteLength + SALT_BYTES +
    (fields.contentType === "stream" ? 4 : 0) + COMMITMENT_BYTES
  );
}

/** Writes the header for `fields` with its commitment. Throws RangeError for fields out of bounds (a caller's bug). */
export function encodeHeader(fields: EnvelopeHeaderFields, commitment: Uint8Array): Buffer {
  if (!ID_PATTERN.test(fields.tenantId)) throw new RangeError("tenant id is not a valid id");
  if (!ID_PATTERN.test(fields.keyId)) throw new RangeError("key id is not a valid id");
  if (!Number.isInteger(fields.dekVersion) || fields.dekVersion < 1 || fields.dekVersion > 0xffff_ffff) {
    throw new RangeError("DEK version must be an integer from 1 to 2^32-1");
  }
  if (fields.reference.byteLength < 1 || fields.reference.byteLength > MAX_REFERENCE_BYTES) {
    throw new RangeError(`DEK reference must be 1 to ${MAX_REFERENCE_BYTES} bytes`);
  }
  if (fields.salt.byteLength !== SALT_BYTES) throw new RangeError(`salt must be ${SALT_BYTES} bytes`);
  if (commitment.byteLength !== COMMITMENT_BYTES) throw new RangeError(`commitment must be ${COMMITMENT_BYTES} bytes`);
  const stream = fields.contentType === "stream";
  if (stream) checkChunkSize(fields.chunkSize);
  else if (fields.chunkSize !== undefined) throw new RangeError("a chunk size applies to streams only");

  const out = Buffer.allocUnsafe(headerLength(fields));
  let offset = out.writeUInt8(ENVELOPE_FORMAT_VERSION, 0);
  offset = out.writeUInt8(stream ? CONTENT_TYPE_STREAM : CONTENT_TYPE_MESSAGE, offset);
  offset = out.writeUInt32BE(fields.dekVersion, offset);
  offset = out.writeUInt8(fields.tenantId.length, offset);
  offset += out.write(fields.tenantId, offset, "latin1");
  offset = out.writeUInt8(fields.keyId.length, offset);
  offset += out.write(fields.keyId, offset, "latin1");
  offset = out.writeUInt16BE(fields.reference.byteLength, offset);
  out.set(fields.reference, offset);
  offset += fields.reference.byteLength;
  out.set(fields.salt, offset);
  offset += SALT_BYTES;
  if (stream) offset = out.writeUInt32BE(fields.chunkSize as number, offset);
  out.set(commitment, offset);
  return out;
}

export function checkChunkSize(chunkSize: number | undefined): asserts chunkSize is number {
  if (chunkSize === undefined || !Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size must be an integer from 1 to ${MAX_CHUNK_SIZE}`);
  }
}

/** Thrown inside the parser when the bytes end before the header does. */
const NEED_MORE: unique symbol = Symbol("need more bytes");

/**
 * Parses the header at the start of `bytes`. Returns undefined when `bytes`
 * ends before the header does and `partial` is true (a stream still
 * arriving); throws EnvelopeError MALFORMED for anything that is not a v1
 * header. The result's `bytes`, `reference`, `salt` and `commitment` are
 * views into `bytes`.
 */
export function parseHeader(bytes: Uint8Array, partial: true): EnvelopeHeader | undefined;
export function parseHeader(bytes: Uint8Array, partial?: false): EnvelopeHeader;
export function parseHeader(bytes: Uint8Array, partial = false): EnvelopeHeader | undefined {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  const take = (n: number): Buffer => {
    if (offset + n > buf.length) throw NEED_MORE;
    const part = buf.subarray(offset, offset + n);
    offset += n;
    return part;
  };
  const takeId = (what: string): string => {
    const length = take(1)[0] as number;
    const id = take(length).toString("latin1");
    if (!ID_PATTERN.test(id)) throw new EnvelopeError("MALFORMED", `the ${what} is not a valid id`);
    return id;
  };
  try {
    const version = take(1)[0];
    if (version !== ENVELOPE_FORMAT_VERSION) throw new EnvelopeError("MALFORMED", `unknown format version ${String(version)}`);
    const type = take(1)[0];
    if (type !== CONTENT_TYPE_MESSAGE && type !== CONTENT_TYPE_STREAM) throw new EnvelopeError("MALFORMED", `unknown content type ${String(type)}`);
    const dekVersion = take(4).readUInt32BE(0);
    if (dekVersion === 0) throw new EnvelopeError("MALFORMED", "DEK version 0 is not valid");
    const tenantId = takeId("tenant id");
    const keyId = takeId("key id");
    const referenceLength = take(2).readUInt16BE(0);
    if (referenceLength === 0 || referenceLength > MAX_REFERENCE_BYTES) {
      throw new EnvelopeError("MALFORMED", `the DEK reference length must be 1 to ${MAX_REFERENCE_BYTES}`);
    }
    const reference = take(referenceLength);
    const salt = take(SALT_BYTES);
    let chunkSize: number | undefined;
    if (type === CONTENT_TYPE_STREAM) {
      chunkSize = take(4).readUInt32BE(0);
      if (chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) throw new EnvelopeError("MALFORMED", `the chunk size must be 1 to ${MAX_CHUNK_SIZE}`);
    }
    const commitment = take(COMMITMENT_BYTES);
    return {
      contentType: type === CONTENT_TYPE_STREAM ? "stream" : "message",
      dekVersion,
      tenantId,
      keyId,
      reference,
      salt,
      chunkSize,
      commitment,
      bytes: buf.subarray(0, offset),
    };
  } catch (error) {
    if (error !== NEED_MORE) throw error;
    if (partial) return undefined;
    throw new EnvelopeError("MALFORMED", "the envelope ends inside its header");
  }
}

/**
 * What an envelope says about itself without decrypting anything: content
 * type, tenant, key and DEK version (for inventories and re-encryption).
 * Throws EnvelopeError MALFORMED.
 */
export function describeEnvelope(bytes: Uint8Array): Pick<EnvelopeHeader, "contentType" | "tenantId" | "keyId" | "dekVersion"> {
  const { contentType, tenantId, keyId, dekVersion } = parseHeader(bytes);
  return { contentType, tenantId, keyId, dekVersion };
}

/**
 * The envelope's cryptography, given the DEK: no I/O, no cache, no clock.
 * envelope-encryption.ts wraps it with the DEK cache; the test vectors call
 * it directly with a fixed DEK and salt.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { EnvelopeError } from "../errors/envelope-error.js";
import {
  CHUNK_PREFIX_BYTES,
  checkChunkSize,
  encodeHeader,
  SALT_BYTES,
  TAG_BYTES,
  type EnvelopeHeader,
} from "./envelope-format.js";
import { chunkNonce, commitmentMatches, deriveMessageKeys, wipe } from "./message-keys.js";

/** The DEK to encrypt under, and what the header says about it. */
export interface SealingKey {
  readonly dek: Uint8Array;
  readonly tenantId: string;
  readonly keyId: string;
  readonly dekVersion: number;
  readonly reference: Uint8Array;
}

/**
 * Encrypts one message: header, then AES-256-GCM of the plaintext under the
 * message key with nonce(0, final), AAD = header || context, then the tag.
 * `salt` is for the test vectors only; everything else gets a random one.
 */
export function sealMessage(key: SealingKey, plaintext: Uint8Array, context: Buffer, salt: Uint8Array = randomBytes(SALT_BYTES)): Buffer {
  const { encryptionKey, commitment } = deriveMessageKeys(key.dek, salt);
  try {
    const header = encodeHeader({ ...key, contentType: "message", salt }, commitment);
    const cipher = createCipheriv("aes-256-gcm", encryptionKey, chunkNonce(0, true));
    cipher.setAAD(header);
    cipher.setAAD(context);
    const out = Buffer.allocUnsafe(header.length + plaintext.byteLength + TAG_BYTES);
    header.copy(out, 0);
    let offset = header.length;
    offset += cipher.update(plaintext).copy(out, offset);
    offset += cipher.final().copy(out, offset);
    cipher.getAuthTag().copy(out, offset);
    return out;
  } finally {
    wipe(encryptionKey, commitment);
  }
}

/**
 * Derives the message key from the DEK and the header's salt and checks the
 * header's commitment in constant time. Throws COMMITMENT_MISMATCH before
 * anything is decrypted. The caller wipes the returned key.
 */
export function openingKey(header: EnvelopeHeader, dek: Uint8Array): Buffer {
  const { encryptionKey, commitment } = deriveMessageKeys(dek, header.salt);
  const matches = commitmentMatches(commitment, header.commitment);
  wipe(commitment);
  if (!matches) {
    wipe(encryptionKey);
    throw new EnvelopeError("COMMITMENT_MISMATCH", "the key commitment does not match the DEK");
  }
  return encryptionKey;
}

/** Decrypts a "message" envelope whose header was parsed from `envelope`. */
export function openMessage(header: EnvelopeHeader, envelope: Uint8Array, dek: Uint8Array, context: Buffer): Buffer {
  if (header.contentType !== "message") throw new EnvelopeError("MALFORMED", "not a message envelope");
  const body = Buffer.from(envelope.buffer, envelope.byteOffset + header.bytes.length, envelope.byteLength - header.bytes.length);
  if (body.length < TAG_BYTES) throw new EnvelopeError("MALFORMED", "the envelope ends before its tag");
  const encryptionKey = openingKey(header, dek);
  try {
    return decryptChunk(encryptionKey, 0, true, header.bytes, context, body.subarray(0, body.length - TAG_BYTES), body.subarray(body.length - TAG_BYTES));
  } finally {
    wipe(encryptionKey);
  }
}

function decryptChunk(key: Buffer, index: number, final: boolean, header: Buffer, context: Buffer, ciphertext: Buffer, tag: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, chunkNonce(index, final), { authTagLength: TAG_BYTES });
  decipher.setAAD(header);
  decipher.setAAD(context);
  decipher.setAuthTag(tag);
  const plaintext = decipher.update(ciphertext);
  try {
    decipher.final();
  } catch {
    wipe(plaintext);
    throw new EnvelopeError("AUTHENTICATION_FAILED", "the ciphertext or its context does not authenticate");
  }
  return plaintext;
}

/**
 * Encrypts a stream in chunks of `chunkSize` plaintext bytes. Call `header()`
 * once, then `push` for each piece of plaintext, then `finish` once; write
 * every returned buffer in order. A full chunk is held back until more
 * plaintext arrives, so the last chunk is always the one marked final.
 */
export class StreamSealer {
  readonly #header: Buffer;
  readonly #key: Buffer;
  readonly #context: Buffer;
  readonly #chunkSize: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #index = 0;
  #finished = false;
  /** Plaintext bytes taken so far. */
  plaintextBytes = 0;

  constructor(key: SealingKey, context: Buffer, chunkSize: number, salt: Uint8Array = randomBytes(SALT_BYTES)) {
    checkChunkSize(chunkSize);
    const { encryptionKey, commitment } = deriveMessageKeys(key.dek, salt);
    this.#header = encodeHeader({ ...key, contentType: "stream", salt, chunkSize }, commitment);
    wipe(commitment);
    this.#key = encryptionKey;
    this.#context = context;
    this.#chunkSize = chunkSize;
  }

  header(): Buffer {
    return this.#header;
  }

  push(data: Uint8Array): Buffer[] {
    if (this.#finished) throw new Error("the stream is finished");
    if (data.byteLength === 0) return [];
    this.#pending.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    this.#pendingBytes += data.byteLength;
    this.plaintextBytes += data.byteLength;
    const out: Buffer[] = [];
    while (this.#pendingBytes > this.#chunkSize) out.push(this.#seal(this.#take(this.#chunkSize), false));
    return out;
  }

  finish(): Buffer {
    if (this.#finished) throw new Error("the stream is finished");
    this.#finished = true;
    try {
      return this.#seal(this.#take(this.#pendingBytes), true);
    } finally {
      wipe(this.#key);
    }
  }

  /** Wipes the message key without finishing (the stream was abandoned). */
  destroy(): void {
    this.#finished = true;
    wipe(this.#key);
  }

  #take(n: number): Buffer {
    const joined = this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending, this.#pendingBytes);
    const chunk = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.#pending = rest.length === 0 ? [] : [rest];
    this.#pendingBytes = rest.length;
    return chunk;
  }

  #seal(plaintext: Buffer, final: boolean): Buffer {
    const cipher = createCipheriv("aes-256-gcm", this.#key, chunkNonce(this.#index++, final));
    cipher.setAAD(this.#header);
    cipher.setAAD(this.#context);
    const out = Buffer.allocUnsafe(CHUNK_PREFIX_BYTES + plaintext.length + TAG_BYTES);
    out.writeUInt8(final ? 1 : 0, 0);
    out.writeUInt32BE(plaintext.length, 1);
    let offset = CHUNK_PREFIX_BYTES;
    offset += cipher.update(plaintext).copy(out, offset);
    offset += cipher.final().copy(out, offset);
    cipher.getAuthTag().copy(out, offset);
    return out;
  }
}

/**
 * Decrypts the chunks of a "stream" envelope after its header (whose
 * commitment `openingKey` has checked). `push` returns the plaintext of each
 * chunk whose tag verified, in order; `finish` throws STREAM_TRUNCATED when
 * the final chunk never came. Bytes after the final chunk throw
 * STREAM_EXTENDED. Plaintext released before `finish` is authentic but may
 * not be all of it: treat it as incomplete until `finish` returns.
 */
export class StreamOpener {
  readonly #header: EnvelopeHeader;
  readonly #key: Buffer;
  readonly #context: Buffer;
  readonly #chunkSize: number;
  #buffer: Buffer = Buffer.alloc(0);
  #index = 0;
  #sawFinal = false;
  #closed = false;

  /** Takes ownership of `encryptionKey` (from `openingKey`) and wipes it when done. */
  constructor(header: EnvelopeHeader, encryptionKey: Buffer, context: Buffer) {
    if (header.contentType !== "stream" || header.chunkSize === undefined) throw new EnvelopeError("MALFORMED", "not a stream envelope");
    this.#header = header;
    this.#key = encryptionKey;
    this.#context = context;
    this.#chunkSize = header.chunkSize;
  }

  push(data: Uint8Array): Buffer[] {
    if (this.#closed && !this.#sawFinal) throw new Error("the stream is closed");
    if (data.byteLength === 0) return [];
    if (this.#sawFinal) throw this.#fail(new EnvelopeError("STREAM_EXTENDED", "bytes follow the final chunk"));
    const incoming = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.#buffer = this.#buffer.length === 0 ? incoming : Buffer.concat([this.#buffer, incoming]);
    const out: Buffer[] = [];
    try {
      while (this.#buffer.length >= CHUNK_PREFIX_BYTES) {
        const flag = this.#buffer[0];
        if (flag !== 0 && flag !== 1) throw new EnvelopeError("MALFORMED", "a chunk's final flag is neither 0 nor 1");
        const final = flag === 1;
        const length = this.#buffer.readUInt32BE(1);
        if (length > this.#chunkSize || (!final && length !== this.#chunkSize)) {
          throw new EnvelopeError("MALFORMED", "a chunk's length does not fit the chunk size");
        }
        const end = CHUNK_PREFIX_BYTES + length + TAG_BYTES;
        if (this.#buffer.length < end) break;
        const ciphertext = this.#buffer.subarray(CHUNK_PREFIX_BYTES, CHUNK_PREFIX_BYTES + length);
        const tag = this.#buffer.subarray(CHUNK_PREFIX_BYTES + length, end);
        out.push(decryptChunk(this.#key, this.#index++, final, this.#header.bytes, this.#context, ciphertext, tag));
        this.#buffer = this.#buffer.subarray(end);
        if (final) {
          this.#sawFinal = true;
          this.#close();
          if (this.#buffer.length > 0) throw new EnvelopeError("STREAM_EXTENDED", "bytes follow the final chunk");
          break;
        }
      }
    } catch (error) {
      for (const plaintext of out) wipe(plaintext);
      throw this.#fail(error);
    }
    return out;
  }

  finish(): void {
    if (this.#sawFinal) return;
    throw this.#fail(new EnvelopeError("STREAM_TRUNCATED", "the stream ended before its final chunk"));
  }

  destroy(): void {
    this.#close();
  }

  #fail(error: unknown): unknown {
    this.#close();
    this.#buffer = Buffer.alloc(0);
    return error;
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    wipe(this.#key);
  }
}

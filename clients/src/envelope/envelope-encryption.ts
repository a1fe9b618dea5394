import { Transform, type TransformCallback } from "node:stream";
import { DekCache, type DataKeySource, type DekCacheEventOptions, type DekCacheOptions, type DekCacheStats } from "../cache/dek-cache.js";
import type { KeyEventSource } from "../cache/key-event-watcher.js";
import { EnvelopeError } from "../errors/envelope-error.js";
import { encodeContext, type EncryptionContext } from "./canonical-context.js";
import { openingKey, openMessage, sealMessage, StreamOpener, StreamSealer } from "./envelope-crypto.js";
import { DEFAULT_CHUNK_SIZE, parseHeader, type EnvelopeHeader } from "./envelope-format.js";
import { wipe } from "./message-keys.js";

/** The KMS calls envelope encryption makes: a KmsClient fits. */
export interface EnvelopeKms {
  readonly dataKeys: DataKeySource;
  /** Needed for pushed invalidation (the cache's `events`). */
  readonly keyEvents?: KeyEventSource;
}

export type EnvelopeCacheOptions = Omit<DekCacheOptions, "dataKeys" | "events"> & {
  /**
   * Pushed invalidation through `kms.keyEvents` (default on, for every
   * tenant); false: none, so every entry lives at most the fallback age.
   */
  readonly events?: Omit<DekCacheEventOptions, "source"> | false;
};

export interface EnvelopeEncryptionOptions {
  readonly kms: EnvelopeKms;
  /** A cache to share, or the options of this instance's own. */
  readonly cache: DekCache | EnvelopeCacheOptions;
  /** Plaintext bytes per chunk of a stream. Default 64 KiB. */
  readonly chunkSize?: number;
}

/** What decrypt may insist on: the tenant and key the caller acts for. */
export interface ExpectedKey {
  readonly tenantId?: string;
  readonly keyId?: string;
}

export interface EnvelopeEncryption {
  /** Encrypts `plaintext` under the key's primary DEK, bound to `context`. */
  encrypt(tenantId: string, keyId: string, plaintext: Uint8Array, context?: EncryptionContext): Promise<Buffer>;
  /**
   * Decrypts an envelope (message or stream) made with the same `context`.
   * With `expected`, an envelope naming another tenant or key is refused
   * (UNEXPECTED_KEY) before any call to the service.
   */
  decrypt(ciphertext: Uint8Array, context?: EncryptionContext, expected?: ExpectedKey): Promise<Buffer>;
  /** A Transform that turns plaintext into a stream envelope, chunk by chunk. */
  createEncryptStream(tenantId: string, keyId: string, context?: EncryptionContext, options?: { readonly chunkSize?: number }): Transform;
  /**
   * A Transform that turns an envelope back into plaintext, releasing each
   * chunk once its tag verifies. The output is complete only when the stream
   * ends without an error (a truncated stream fails at its end).
   */
  createDecryptStream(context?: EncryptionContext, expected?: ExpectedKey): Transform;
  readonly cache: DekCache;
  stats(): DekCacheStats;
  /** Closes the cache (when this instance made it). */
  close(): Promise<void>;
}

export function createEnvelopeEncryption(options: EnvelopeEncryptionOptions): EnvelopeEncryption {
  const ownsCache = !(options.cache instanceof DekCache);
  const cache = options.cache instanceof DekCache ? options.cache : createCache(options.kms, options.cache);
  const defaultChunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;

  const keyFor = async (header: EnvelopeHeader, expected: ExpectedKey | undefined): Promise<Buffer> => {
    checkExpected(header, expected);
    const { dek, dekVersion } = await cache.decryptionKey(header.tenantId, header.keyId, header.reference);
    if (dekVersion !== header.dekVersion) {
      wipe(dek);
      throw new EnvelopeError("DEK_MISMATCH", "the service returned another DEK version than the envelope names");
    }
    return dek;
  };

  return {
    cache,
    async encrypt(tenantId, keyId, plaintext, context) {
      const contextBytes = encodeContext(context);
      const key = await cache.encryptionKey(tenantId, keyId, plaintext.byteLength);
      try {
        return sealMessage(key, plaintext, contextBytes);
      } finally {
        wipe(key.dek);
      }
    },
    async decrypt(ciphertext, context, expected) {
      // The order of the checks is the specification's (docs/envelope-format.md, "Decrypting").
      const header = parseHeader(ciphertext);
      checkExpected(header, expected);
      const contextBytes = encodeContext(context);
      const dek = await keyFor(header, undefined);
      try {
        if (header.contentType === "message") return openMessage(header, ciphertext, dek, contextBytes);
        const opener = new StreamOpener(header, openingKey(header, dek), contextBytes);
        const body = Buffer.from(ciphertext.buffer, ciphertext.byteOffset + header.bytes.length, ciphertext.byteLength - header.bytes.length);
        const parts = opener.push(body);
        opener.finish();
        return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
      } finally {
        wipe(dek);
      }
    },
    createEncryptStream(tenantId, keyId, context, streamOptions) {
      const contextBytes = encodeContext(context);
      return new EncryptTransform(cache, tenantId, keyId, contextBytes, streamOptions?.chunkSize ?? defaultChunkSize);
    },
    createDecryptStream(context, expected) {
      return new DecryptTransform(encodeContext(context), (header) => keyFor(header, expected));
    },
    stats: () => cache.stats(),
    async close() {
      if (ownsCache) await cache.close();
    },
  };
}

function createCache(kms: EnvelopeKms, options: EnvelopeCacheOptions): DekCache {
  const { events, ...rest } = options;
  let eventOptions: DekCacheEventOptions | undefined;
  if (events !== false) {
    if (kms.keyEvents === undefined) throw new RangeError("pushed invalidation needs kms.keyEvents (or set cache.events to false)");
    eventOptions = { ...(events ?? {}), source: kms.keyEvents };
  }
  return new DekCache({ ...rest, dataKeys: kms.dataKeys, events: eventOptions });
}

function checkExpected(header: EnvelopeHeader, expected: ExpectedKey | undefined): void {
  if (expected === undefined) return;
  if ((expected.tenantId !== undefined && expected.tenantId !== header.tenantId) || (expected.keyId !== undefined && expected.keyId !== header.keyId)) {
    throw new EnvelopeError("UNEXPECTED_KEY", "the envelope belongs to another tenant or key than expected");
  }
}

class EncryptTransform extends Transform {
  readonly #cache: DekCache;
  readonly #tenantId: string;
  readonly #keyId: string;
  readonly #context: Buffer;
  readonly #chunkSize: number;
  #sealer: StreamSealer | undefined;
  #reference: Buffer | undefined;

  constructor(cache: DekCache, tenantId: string, keyId: string, context: Buffer, chunkSize: number) {
    super();
    this.#cache = cache;
    this.#tenantId = tenantId;
    this.#keyId = keyId;
    this.#context = context;
    this.#chunkSize = chunkSize;
  }

  async #start(): Promise<StreamSealer> {
    if (this.#sealer !== undefined) return this.#sealer;
    const key = await this.#cache.encryptionKey(this.#tenantId, this.#keyId, 0);
    try {
      this.#sealer = new StreamSealer(key, this.#context, this.#chunkSize);
      this.#reference = key.reference;
    } finally {
      wipe(key.dek);
    }
    this.push(this.#sealer.header());
    return this.#sealer;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#start().then(
      (sealer) => {
        for (const out of sealer.push(chunk)) this.push(out);
        callback();
      },
      (error: unknown) => callback(error as Error),
    );
  }

  override _flush(callback: TransformCallback): void {
    this.#start().then(
      (sealer) => {
        this.push(sealer.finish());
        this.#cache.recordEncryptedBytes(this.#tenantId, this.#keyId, this.#reference as Buffer, sealer.plaintextBytes);
        callback();
      },
      (error: unknown) => callback(error as Error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#sealer?.destroy();
    callback(error);
  }
}

class DecryptTransform extends Transform {
  readonly #context: Buffer;
  readonly #keyFor: (header: EnvelopeHeader) => Promise<Buffer>;
  #pending: Buffer = Buffer.alloc(0);
  #header: EnvelopeHeader | undefined;
  #opener: StreamOpener | undefined;
  /** A message envelope has no chunks: its body is decrypted whole at the end. */
  #messageDek: Buffer | undefined;

  constructor(context: Buffer, keyFor: (header: EnvelopeHeader) => Promise<Buffer>) {
    super();
    this.#context = context;
    this.#keyFor = keyFor;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#take(chunk).then(() => callback(), (error: unknown) => callback(error as Error));
  }

  async #take(chunk: Buffer): Promise<void> {
    if (this.#opener !== undefined) {
      for (const plaintext of this.#opener.push(chunk)) this.push(plaintext);
      return;
    }
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    if (this.#header !== undefined) return; // a message envelope: keep collecting
    const header = parseHeader(this.#pending, true);
    if (header === undefined) return;
    this.#header = header;
    const dek = await this.#keyFor(header);
    if (header.contentType === "message") {
      this.#messageDek = dek;
      return;
    }
    try {
      this.#opener = new StreamOpener(header, openingKey(header, dek), this.#context);
    } finally {
      wipe(dek);
    }
    const rest = this.#pending.subarray(header.bytes.length);
    for (const plaintext of this.#opener.push(rest)) this.push(plaintext);
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.#header === undefined) throw new EnvelopeError("MALFORMED", "the envelope ends inside its header");
      if (this.#opener !== undefined) {
        this.#opener.finish();
      } else if (this.#messageDek !== undefined) {
        try {
          this.push(openMessage(this.#header, this.#pending, this.#messageDek, this.#context));
        } finally {
          wipe(this.#messageDek);
          this.#messageDek = undefined;
        }
      }
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#opener?.destroy();
    wipe(this.#messageDek);
    callback(error);
  }
}

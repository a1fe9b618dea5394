import { createHash } from "node:crypto";
import { KeyEventWatcher, invalidationFor, type Invalidation, type KeyEventLike, type KeyEventSource, type WatcherStats } from "./key-event-watcher.js";

/**
 * What the cache needs from the KMS: the DataKeyService hot path, typed
 * structurally, so a generated client, a `createKmsClient` one or a test
 * fake all fit.
 */
export interface DataKeySource {
  generateDataKey(request: { tenantId: string; keyId: string }): Promise<{ plaintext: Uint8Array; reference: Uint8Array; dekVersion: number }>;
  decrypt(request: { tenantId: string; keyId: string; reference: Uint8Array }): Promise<{ plaintext: Uint8Array; dekVersion: number }>;
}

export interface DekCacheEventOptions {
  readonly source: KeyEventSource;
  /**
   * "all" (default): one stream for every tenant (WatchKeyEvents with tenant
   * "-", for a privileged identity). "each": one stream per tenant the cache
   * has fetched a DEK of, opened on first use.
   */
  readonly tenants?: "all" | "each";
  /** See KeyEventWatcherOptions. */
  readonly assumeLiveAfterMs?: number;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export interface DekCacheOptions {
  readonly dataKeys: DataKeySource;
  /** Required: no entry is ever served once it is this old (from the start of the fetch that made it). */
  readonly maxAgeMs: number;
  /**
   * While the event stream is not live (down, reconnecting, not yet up, or
   * not configured), entries older than this are not served. Default
   * 5,000 ms; at most `maxAgeMs`.
   */
  readonly fallbackMaxAgeMs?: number;
  /** Pushed invalidation; without it every entry lives at most `fallbackMaxAgeMs`. */
  readonly events?: DekCacheEventOptions | undefined;
  /** Most entries (DEKs and primaries together); least recently used goes first. Default 1,000. */
  readonly capacity?: number;
  /** Most entries one (tenant, key) partition may hold, so one busy key cannot push out the rest. Default `capacity`. */
  readonly maxEntriesPerPartition?: number;
  /** Most messages one cached primary DEK encrypts before it is fetched anew. Default 2^32. */
  readonly maxMessagesPerDek?: number;
  /** Most plaintext bytes one cached primary DEK encrypts before it is fetched anew. Default 2^50. */
  readonly maxBytesPerDek?: number;
  /**
   * Part of every cache key: callers that share one cache but must not share
   * entries (other credentials, another KMS) use different scopes. Default "".
   */
  readonly scope?: string;
  /** How often expired entries are swept (and zeroed) without waiting for a lookup. Default 1,000 ms; 0 disables. */
  readonly sweepIntervalMs?: number;
  /** Monotonic milliseconds. Default `performance.now`. */
  readonly now?: () => number;
  /** @internal For tests: where the cache keeps a DEK (so a test can see it zeroed). */
  readonly allocateKeyBuffer?: (size: number) => Buffer;
}

/** A DEK for decrypting: a copy the caller owns (and should wipe). */
export interface DecryptionKey {
  readonly dek: Buffer;
  readonly dekVersion: number;
}

/** The primary DEK for encrypting, with its reference: copies the caller owns. */
export interface EncryptionKey {
  readonly tenantId: string;
  readonly keyId: string;
  readonly dek: Buffer;
  readonly reference: Buffer;
  readonly dekVersion: number;
}

export type EvictionCause = "capacity" | "partitionCapacity" | "maxAge" | "fallbackAge" | "usageLimit" | "invalidated" | "cleared";

export interface DekCacheStats {
  readonly hits: number;
  readonly misses: number;
  /** Misses that joined a fetch already under way instead of making their own RPC. */
  readonly coalesced: number;
  readonly rpcs: { readonly decrypt: number; readonly generateDataKey: number };
  /** Calls answered without an RPC of their own: hits + coalesced. */
  readonly rpcsSaved: number;
  readonly failedFetches: number;
  /** Fetches whose result was not cached because an invalidation arrived while they ran. */
  readonly discardedFetches: number;
  readonly evictions: { readonly total: number } & { readonly [C in EvictionCause]: number };
  readonly entries: number;
  readonly partitions: number;
  /** Events that dropped something, and entries they dropped. */
  readonly invalidations: { readonly events: number; readonly entries: number };
  readonly eventStream: {
    readonly mode: "all" | "each" | "disabled";
    /** Every stream the cache depends on is live. */
    readonly live: boolean;
    readonly watchers: readonly WatcherStats[];
  };
  readonly fallback: {
    /** True while some entries are held to the fallback age because a stream is not live. */
    readonly active: boolean;
    readonly maxAgeMs: number;
  };
  readonly limits: {
    readonly maxAgeMs: number;
    readonly capacity: number;
    readonly maxEntriesPerPartition: number;
    readonly maxMessagesPerDek: number;
    readonly maxBytesPerDek: number;
  };
}

interface Partition {
  readonly key: string;
  readonly tenantId: string;
  readonly keyId: string;
  /** Insertion-ordered by use: the first is the least recently used. */
  readonly entries: Map<string, Entry>;
  /** Bumped by every invalidation: a fetch started before it does not cache its result. */
  generation: number;
  /** Fetches under way; the partition (and its generation) stays while there are any. */
  fetches: number;
}

interface Entry {
  readonly id: string;
  readonly kind: "decrypt" | "encrypt";
  readonly partition: Partition;
  readonly dek: Buffer;
  readonly reference: Buffer | undefined;
  readonly dekVersion: number;
  /** When the fetch that made it started: ages count from there. */
  readonly fetchedAt: number;
  messages: number;
  bytes: number;
  /** In the cache. Once false, `dek` is zeroed and nothing may read it. */
  cached: boolean;
}

const DEK_BYTES = 32;
const DEFAULT_FALLBACK_MAX_AGE_MS = 5_000;
const DEFAULT_CAPACITY = 1_000;
const DEFAULT_MAX_MESSAGES = 2 ** 32;
const DEFAULT_MAX_BYTES = 2 ** 50;
/** A lookup that keeps losing its entry to invalidations gives up after this many rounds. */
const MAX_ROUNDS = 8;

/**
 * The client-side DEK cache: unwrapped DEKs (the Decrypt side) and each
 * key's current primary DEK (the GenerateDataKey side), so most encryptions
 * and decryptions need no network call, without ever serving a DEK the
 * tenant has revoked for longer than the event stream takes to say so.
 *
 * Every limit is enforced here, each with a test named after it
 * (dek-cache.test.ts): a required maximum age; messages and bytes per cached
 * primary DEK; a capacity with LRU eviction; partitions by tenant and key
 * (with their own capacity); cache keys covering everything that scopes an
 * entry (scope, side, tenant, key, reference), hashed; a hit returns a copy,
 * never the cache's buffer; a DEK is zeroed when its entry goes. Concurrent
 * misses for one DEK share one RPC, and a failed fetch is never cached.
 */
export class DekCache {
  readonly #dataKeys: DataKeySource;
  readonly #maxAgeMs: number;
  readonly #fallbackMaxAgeMs: number;
  readonly #capacity: number;
  readonly #maxPerPartition: number;
  readonly #maxMessages: number;
  readonly #maxBytes: number;
  readonly #scope: string;
  readonly #now: () => number;
  readonly #allocate: (size: number) => Buffer;
  readonly #events: DekCacheEventOptions | undefined;
  readonly #watchMode: "all" | "each" | "disabled";

  /** Every entry, least recently used first. */
  readonly #lru = new Map<string, Entry>();
  readonly #partitions = new Map<string, Partition>();
  readonly #flights = new Map<string, Promise<Entry | undefined>>();
  readonly #watchers = new Map<string, KeyEventWatcher>();
  readonly #sweeper: NodeJS.Timeout | undefined;
  #closed = false;

  #hits = 0;
  #misses = 0;
  #coalesced = 0;
  #rpcDecrypt = 0;
  #rpcGenerate = 0;
  #failedFetches = 0;
  #discardedFetches = 0;
  #invalidationEvents = 0;
  #invalidatedEntries = 0;
  readonly #evictions: Record<EvictionCause, number> = {
    capacity: 0,
    partitionCapacity: 0,
    maxAge: 0,
    fallbackAge: 0,
    usageLimit: 0,
    invalidated: 0,
    cleared: 0,
  };

  constructor(options: DekCacheOptions) {
    if (options.maxAgeMs === undefined) throw new RangeError("maxAgeMs is required");
    this.#maxAgeMs = positive("maxAgeMs", options.maxAgeMs);
    this.#fallbackMaxAgeMs = positive("fallbackMaxAgeMs", options.fallbackMaxAgeMs ?? Math.min(DEFAULT_FALLBACK_MAX_AGE_MS, this.#maxAgeMs));
    if (this.#fallbackMaxAgeMs > this.#maxAgeMs) throw new RangeError("fallbackMaxAgeMs must not exceed maxAgeMs");
    this.#capacity = integer("capacity", options.capacity ?? DEFAULT_CAPACITY);
    this.#maxPerPartition = integer("maxEntriesPerPartition", options.maxEntriesPerPartition ?? this.#capacity);
    this.#maxMessages = integer("maxMessagesPerDek", options.maxMessagesPerDek ?? DEFAULT_MAX_MESSAGES);
    this.#maxBytes = integer("maxBytesPerDek", options.maxBytesPerDek ?? DEFAULT_MAX_BYTES);
    this.#dataKeys = options.dataKeys;
    this.#scope = options.scope ?? "";
    this.#now = options.now ?? (() => performance.now());
    this.#allocate = options.allocateKeyBuffer ?? ((size) => Buffer.alloc(size));
    this.#events = options.events;
    this.#watchMode = options.events === undefined ? "disabled" : (options.events.tenants ?? "all");
    if (this.#watchMode === "all") this.#watcherFor("-");
    const sweepIntervalMs = options.sweepIntervalMs ?? 1_000;
    if (sweepIntervalMs > 0) {
      this.#sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
      this.#sweeper.unref();
    }
  }

  /** The DEK a reference names, from the cache or by one `Decrypt` RPC shared by every concurrent caller. */
  async decryptionKey(tenantId: string, keyId: string, reference: Uint8Array): Promise<DecryptionKey> {
    this.#checkOpen();
    const id = cacheKey(this.#scope, "decrypt", tenantId, keyId, reference);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const cached = this.#lookup(id);
      if (cached !== undefined) {
        this.#hits++;
        return { dek: Buffer.from(cached.dek), dekVersion: cached.dekVersion };
      }
      const entry = await this.#join(id, () => this.#fetchDecryptionKey(id, tenantId, keyId, reference));
      // Copy at once: nothing runs between the flight's end and this line but
      // other continuations, and an entry they evict is seen as not cached.
      if (entry?.cached === true) return { dek: Buffer.from(entry.dek), dekVersion: entry.dekVersion };
    }
    throw new Error("the DEK cache could not keep a DEK: it was invalidated during every fetch");
  }

  /**
   * The key's primary DEK for one message of `plaintextBytes` bytes, counted
   * against the entry's message and byte limits. A message larger than the
   * byte limit on its own is served by a fetch that is not cached.
   */
  async encryptionKey(tenantId: string, keyId: string, plaintextBytes: number): Promise<EncryptionKey> {
    this.#checkOpen();
    const id = cacheKey(this.#scope, "encrypt", tenantId, keyId);
    if (plaintextBytes > this.#maxBytes) {
      this.#misses++;
      const entry = await this.#fetchPrimary(id, tenantId, keyId, false);
      try {
        return this.#copyOut(entry);
      } finally {
        entry.dek.fill(0);
      }
    }
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const cached = this.#lookup(id);
      if (cached !== undefined) {
        const key = this.#reserve(cached, plaintextBytes);
        if (key !== undefined) {
          this.#hits++;
          return key;
        }
        continue; // used up and evicted: fetch anew
      }
      const entry = await this.#join(id, () => this.#fetchPrimary(id, tenantId, keyId, true));
      const key = entry === undefined ? undefined : this.#reserve(entry, plaintextBytes);
      if (key !== undefined) return key;
    }
    throw new Error("the DEK cache could not keep a primary DEK: it was invalidated or used up during every fetch");
  }

  /**
   * Counts `bytes` more plaintext against the cached primary of (tenant, key)
   * with this reference (a stream learns its size as it goes); evicts the
   * entry once it reaches its byte limit.
   */
  recordEncryptedBytes(tenantId: string, keyId: string, reference: Uint8Array, bytes: number): void {
    const entry = this.#lru.get(cacheKey(this.#scope, "encrypt", tenantId, keyId));
    if (entry === undefined || entry.reference === undefined || !entry.reference.equals(reference)) return;
    entry.bytes += bytes;
    if (entry.bytes >= this.#maxBytes) this.#evict(entry, "usageLimit");
  }

  /** Applies one key event (the watcher calls this; so may a caller with its own event feed). */
  applyEvent(event: KeyEventLike): number {
    const invalidation = invalidationFor(event);
    return invalidation === undefined ? 0 : this.invalidate(invalidation);
  }

  /** Drops what an invalidation names; returns how many entries went. */
  invalidate(invalidation: Invalidation): number {
    const partition = this.#partitions.get(partitionKey(invalidation.tenantId, invalidation.keyId));
    if (partition === undefined) return 0;
    partition.generation++;
    let dropped = 0;
    for (const entry of [...partition.entries.values()]) {
      const hit =
        invalidation.scope === "key" ||
        (invalidation.scope === "version" && entry.dekVersion === invalidation.dekVersion) ||
        (invalidation.scope === "primary" && entry.kind === "encrypt");
      if (hit) {
        this.#evict(entry, "invalidated");
        dropped++;
      }
    }
    this.#invalidationEvents++;
    this.#invalidatedEntries += dropped;
    return dropped;
  }

  /** Evicts (and zeroes) every entry that may no longer be served. */
  sweep(): void {
    const now = this.#now();
    for (const entry of [...this.#lru.values()]) this.#expired(entry, now);
  }

  /** Evicts and zeroes everything; fetches under way do not cache their results. */
  clear(): void {
    for (const partition of this.#partitions.values()) partition.generation++;
    for (const entry of [...this.#lru.values()]) this.#evict(entry, "cleared");
  }

  /** Stops the event streams and the sweeper, zeroes every entry. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.clear();
    await Promise.all([...this.#watchers.values()].map((watcher) => watcher.stop()));
  }

  stats(): DekCacheStats {
    const watchers = [...this.#watchers.values()].map((w) => w.stats());
    const mode = this.#watchMode;
    const live = mode !== "disabled" && watchers.length > 0 && watchers.every((w) => w.state === "live");
    const evictionTotal = Object.values(this.#evictions).reduce((a, b) => a + b, 0);
    return {
      hits: this.#hits,
      misses: this.#misses,
      coalesced: this.#coalesced,
      rpcs: { decrypt: this.#rpcDecrypt, generateDataKey: this.#rpcGenerate },
      rpcsSaved: this.#hits + this.#coalesced,
      failedFetches: this.#failedFetches,
      discardedFetches: this.#discardedFetches,
      evictions: { total: evictionTotal, ...this.#evictions },
      entries: this.#lru.size,
      partitions: this.#partitions.size,
      invalidations: { events: this.#invalidationEvents, entries: this.#invalidatedEntries },
      eventStream: { mode, live, watchers },
      fallback: { active: !live, maxAgeMs: this.#fallbackMaxAgeMs },
      limits: {
        maxAgeMs: this.#maxAgeMs,
        capacity: this.#capacity,
        maxEntriesPerPartition: this.#maxPerPartition,
        maxMessagesPerDek: this.#maxMessages,
        maxBytesPerDek: this.#maxBytes,
      },
    };
  }

  // -------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw new Error("the DEK cache is closed");
  }

  /** A servable entry for `id`, marked most recently used; evicts it if it may no longer be served. */
  #lookup(id: string): Entry | undefined {
    const entry = this.#lru.get(id);
    if (entry === undefined || this.#expired(entry, this.#now())) return undefined;
    this.#lru.delete(id);
    this.#lru.set(id, entry);
    entry.partition.entries.delete(id);
    entry.partition.entries.set(id, entry);
    return entry;
  }

  /** Evicts `entry` if its age or the event stream's state forbids serving it; true when it did. */
  #expired(entry: Entry, now: number): boolean {
    const age = now - entry.fetchedAt;
    if (age >= this.#maxAgeMs) {
      this.#evict(entry, "maxAge");
      return true;
    }
    if (age >= this.#fallbackMaxAgeMs && !this.#covered(entry)) {
      this.#evict(entry, "fallbackAge");
      return true;
    }
    return false;
  }

  /** True when a live stream would have delivered any revocation of this entry since it was fetched. */
  #covered(entry: Entry): boolean {
    if (this.#watchMode === "disabled") return false;
    const since = this.#watchers.get(this.#watchMode === "all" ? "-" : entry.partition.tenantId)?.coveredSince();
    return since !== undefined && entry.fetchedAt >= since;
  }

  /** Joins the fetch under way for `id`, or starts one (single flight). */
  #join(id: string, fetch: () => Promise<Entry | undefined>): Promise<Entry | undefined> {
    const flight = this.#flights.get(id);
    if (flight !== undefined) {
      this.#coalesced++;
      return flight;
    }
    this.#misses++;
    const started = fetch().finally(() => this.#flights.delete(id));
    this.#flights.set(id, started);
    return started;
  }

  async #fetchDecryptionKey(id: string, tenantId: string, keyId: string, reference: Uint8Array): Promise<Entry | undefined> {
    return this.#fetch(tenantId, keyId, async (partition, fetchedAt) => {
      this.#rpcDecrypt++;
      const response = await this.#dataKeys.decrypt({ tenantId, keyId, reference });
      try {
        return [this.#entry(id, "decrypt", partition, response.plaintext, undefined, response.dekVersion, fetchedAt)];
      } finally {
        response.plaintext.fill(0); // the RPC's copy: the entry has its own
      }
    });
  }

  async #fetchPrimary(id: string, tenantId: string, keyId: string, admit: true): Promise<Entry | undefined>;
  async #fetchPrimary(id: string, tenantId: string, keyId: string, admit: false): Promise<Entry>;
  async #fetchPrimary(id: string, tenantId: string, keyId: string, admit: boolean): Promise<Entry | undefined> {
    const fetched = await this.#fetch(
      tenantId,
      keyId,
      async (partition, fetchedAt) => {
        this.#rpcGenerate++;
        const response = await this.#dataKeys.generateDataKey({ tenantId, keyId });
        try {
          const primary = this.#entry(id, "encrypt", partition, response.plaintext, Buffer.from(response.reference), response.dekVersion, fetchedAt);
          if (!admit) return [primary];
          // Decrypting what was just encrypted needs the same DEK: cache it on that side too.
          const decryptId = cacheKey(this.#scope, "decrypt", tenantId, keyId, response.reference);
          if (this.#lru.has(decryptId) || this.#flights.has(decryptId)) return [primary];
          return [primary, this.#entry(decryptId, "decrypt", partition, response.plaintext, undefined, response.dekVersion, fetchedAt)];
        } finally {
          response.plaintext.fill(0);
        }
      },
      admit,
    );
    return fetched;
  }

  /**
   * Runs one fetch for a partition and admits what it brought, unless an
   * invalidation (or clear, or close) came while it ran: then the result is
   * zeroed and undefined returned, and the caller looks again (a new RPC, which
   * the server refuses if the key is now revoked). A failed fetch caches nothing.
   */
  async #fetch(tenantId: string, keyId: string, run: (partition: Partition, fetchedAt: number) => Promise<Entry[]>, admit = true): Promise<Entry | undefined> {
    const partition = this.#partitionFor(tenantId, keyId);
    const generation = partition.generation;
    const fetchedAt = this.#now();
    partition.fetches++;
    try {
      let entries: Entry[];
      try {
        entries = await run(partition, fetchedAt);
      } catch (error) {
        this.#failedFetches++;
        throw error;
      }
      const [first] = entries as [Entry, ...Entry[]];
      if (!admit) return first;
      if (this.#closed || partition.generation !== generation) {
        this.#discardedFetches++;
        for (const entry of entries) entry.dek.fill(0);
        return undefined;
      }
      for (const entry of entries) this.#admit(entry);
      return first;
    } finally {
      partition.fetches--;
      this.#dropIfEmpty(partition);
    }
  }

  #entry(id: string, kind: Entry["kind"], partition: Partition, plaintext: Uint8Array, reference: Buffer | undefined, dekVersion: number, fetchedAt: number): Entry {
    if (plaintext.byteLength !== DEK_BYTES) throw new Error(`the KMS returned a DEK of ${plaintext.byteLength} bytes, not ${DEK_BYTES}`);
    // The cache's own buffer: never handed out, zeroed on eviction.
    const dek = this.#allocate(DEK_BYTES);
    dek.set(plaintext);
    return { id, kind, partition, dek, reference, dekVersion, fetchedAt, messages: 0, bytes: 0, cached: false };
  }

  #admit(entry: Entry): void {
    const previous = this.#lru.get(entry.id);
    if (previous !== undefined) this.#evict(previous, "capacity");
    entry.cached = true;
    this.#lru.set(entry.id, entry);
    entry.partition.entries.set(entry.id, entry);
    while (this.#lru.size > this.#capacity) {
      this.#evict(this.#lru.values().next().value as Entry, "capacity");
    }
    while (entry.partition.entries.size > this.#maxPerPartition) {
      this.#evict(entry.partition.entries.values().next().value as Entry, "partitionCapacity");
    }
  }

  /** Counts one message of `bytes` against a primary entry and returns copies of its key; undefined when it is used up. */
  #reserve(entry: Entry, bytes: number): EncryptionKey | undefined {
    if (!entry.cached) return undefined;
    if (entry.messages + 1 > this.#maxMessages || entry.bytes + bytes > this.#maxBytes) {
      this.#evict(entry, "usageLimit");
      return undefined;
    }
    entry.messages++;
    entry.bytes += bytes;
    const key = this.#copyOut(entry);
    // The last message it may encrypt: let it go now rather than on the next lookup.
    if (entry.messages >= this.#maxMessages || entry.bytes >= this.#maxBytes) this.#evict(entry, "usageLimit");
    return key;
  }

  #copyOut(entry: Entry): EncryptionKey {
    return {
      tenantId: entry.partition.tenantId,
      keyId: entry.partition.keyId,
      dek: Buffer.from(entry.dek),
      reference: Buffer.from(entry.reference as Buffer),
      dekVersion: entry.dekVersion,
    };
  }

  #evict(entry: Entry, cause: EvictionCause): void {
    if (!entry.cached) return;
    entry.cached = false;
    entry.dek.fill(0);
    this.#lru.delete(entry.id);
    entry.partition.entries.delete(entry.id);
    this.#dropIfEmpty(entry.partition);
    this.#evictions[cause]++;
  }

  #dropIfEmpty(partition: Partition): void {
    if (partition.entries.size === 0 && partition.fetches === 0 && this.#partitions.get(partition.key) === partition) {
      this.#partitions.delete(partition.key);
    }
  }

  #partitionFor(tenantId: string, keyId: string): Partition {
    const key = partitionKey(tenantId, keyId);
    let partition = this.#partitions.get(key);
    if (partition === undefined) {
      partition = { key, tenantId, keyId, entries: new Map(), generation: 0, fetches: 0 };
      this.#partitions.set(key, partition);
    }
    if (this.#watchMode === "each") this.#watcherFor(tenantId);
    return partition;
  }

  #watcherFor(tenantId: string): void {
    const events = this.#events;
    if (events === undefined || this.#closed || this.#watchers.has(tenantId)) return;
    this.#watchers.set(
      tenantId,
      new KeyEventWatcher({
        source: events.source,
        tenantId,
        onEvent: (event) => this.applyEvent(event),
        ...(events.assumeLiveAfterMs === undefined ? {} : { assumeLiveAfterMs: events.assumeLiveAfterMs }),
        ...(events.initialBackoffMs === undefined ? {} : { initialBackoffMs: events.initialBackoffMs }),
        ...(events.maxBackoffMs === undefined ? {} : { maxBackoffMs: events.maxBackoffMs }),
        now: this.#now,
      }),
    );
  }
}

/**
 * The cache key: SHA-256 over every length-prefixed field that scopes an
 * entry (scope, side, tenant, key, and for the Decrypt side the whole
 * reference), so two entries share a key only if all of them are equal.
 */
export function cacheKey(scope: string, side: "decrypt" | "encrypt", tenantId: string, keyId: string, reference?: Uint8Array): string {
  const hash = createHash("sha256");
  for (const part of [scope, side, tenantId, keyId]) {
    const bytes = Buffer.from(part, "utf8");
    hash.update(lengthPrefix(bytes.length)).update(bytes);
  }
  if (reference !== undefined) hash.update(lengthPrefix(reference.byteLength)).update(reference);
  return hash.digest("base64");
}

function lengthPrefix(length: number): Buffer {
  const prefix = Buffer.allocUnsafe(4);
  prefix.writeUInt32BE(length, 0);
  return prefix;
}

function partitionKey(tenantId: string, keyId: string): string {
  return `${tenantId}\u0000${keyId}`;
}

function positive(name: string, value: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of milliseconds`);
  return value;
}

function integer(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
  return value;
}

/** Creates a DEK cache; see DekCache. */
export function createDekCache(options: DekCacheOptions): DekCache {
  return new DekCache(options);
}

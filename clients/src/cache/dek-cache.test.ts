import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { DekCache, type DataKeySource, type DekCacheOptions } from "./dek-cache.js";

/** A hand-driven DataKeySource: one DEK per (tenant, key, version), references "tenant/key/version". */
function fakeDataKeys() {
  const deks = new Map<string, Buffer>();
  const primary = new Map<string, number>();
  const calls = { decrypt: 0, generateDataKey: 0 };
  let failures = 0;
  let gate: Promise<void> | undefined;
  const dek = (tenantId: string, keyId: string, version: number): Buffer => {
    const id = `${tenantId}/${keyId}/${version}`;
    if (!deks.has(id)) deks.set(id, randomBytes(32));
    return deks.get(id) as Buffer;
  };
  const source: DataKeySource = {
    async generateDataKey({ tenantId, keyId }) {
      calls.generateDataKey++;
      if (gate !== undefined) await gate;
      if (failures > 0 && failures--) throw new Error("KMS unavailable");
      const version = primary.get(`${tenantId}/${keyId}`) ?? 1;
      return { plaintext: Buffer.from(dek(tenantId, keyId, version)), reference: Buffer.from(`${tenantId}/${keyId}/${version}`), dekVersion: version };
    },
    async decrypt({ tenantId, keyId, reference }) {
      calls.decrypt++;
      if (gate !== undefined) await gate;
      if (failures > 0 && failures--) throw new Error("KMS unavailable");
      const version = Number(Buffer.from(reference).toString().split("/")[2]);
      return { plaintext: Buffer.from(dek(tenantId, keyId, version)), dekVersion: version };
    },
  };
  return {
    source,
    calls,
    dek,
    ref: (tenantId: string, keyId: string, version: number) => Buffer.from(`${tenantId}/${keyId}/${version}`),
    rotate(tenantId: string, keyId: string) {
      primary.set(`${tenantId}/${keyId}`, (primary.get(`${tenantId}/${keyId}`) ?? 1) + 1);
    },
    failNext(n: number) {
      failures = n;
    },
    hold() {
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

function setup(options: Partial<DekCacheOptions> = {}) {
  const kms = fakeDataKeys();
  let now = 0;
  const cache = new DekCache({ dataKeys: kms.source, maxAgeMs: 60_000, fallbackMaxAgeMs: 60_000, sweepIntervalMs: 0, now: () => now, ...options });
  return { kms, cache, advance: (ms: number) => (now += ms) };
}

describe("DEK cache limits", () => {
  it("maximum age (required): constructing without maxAgeMs throws, and so does a non-positive one", () => {
    const kms = fakeDataKeys();
    expect(() => new DekCache({ dataKeys: kms.source } as unknown as DekCacheOptions)).toThrow(/maxAgeMs is required/);
    expect(() => new DekCache({ dataKeys: kms.source, maxAgeMs: 0 })).toThrow(/maxAgeMs/);
    expect(() => new DekCache({ dataKeys: kms.source, maxAgeMs: 1000, fallbackMaxAgeMs: 2000 })).toThrow(/fallbackMaxAgeMs/);
  });

  it("maximum age: an entry is served until maxAgeMs after its fetch started, then fetched anew", async () => {
    const { kms, cache, advance } = setup({ maxAgeMs: 1_000, fallbackMaxAgeMs: 1_000 });
    const ref = kms.ref("acme", "pii", 1);
    await cache.decryptionKey("acme", "pii", ref);
    advance(999);
    await cache.decryptionKey("acme", "pii", ref);
    expect(kms.calls.decrypt).toBe(1);
    advance(1);
    await cache.decryptionKey("acme", "pii", ref);
    expect(kms.calls.decrypt).toBe(2);
    expect(cache.stats().evictions.maxAge).toBe(1);
    await cache.close();
  });

  it("maximum messages per DEK: a cached primary encrypts at most maxMessagesPerDek messages, then GenerateDataKey is called again", async () => {
    const { kms, cache } = setup({ maxMessagesPerDek: 3 });
    for (let i = 0; i < 7; i++) await cache.encryptionKey("acme", "pii", 10);
    // messages 1-3 on the first fetch, 4-6 on the second, 7 on the third
    expect(kms.calls.generateDataKey).toBe(3);
    expect(cache.stats().evictions.usageLimit).toBe(2);
    await cache.close();
  });

  it("maximum messages per DEK: concurrent encryptions that exceed the limit do not all share one fetch", async () => {
    const { kms, cache } = setup({ maxMessagesPerDek: 2 });
    await Promise.all(Array.from({ length: 6 }, () => cache.encryptionKey("acme", "pii", 1)));
    expect(kms.calls.generateDataKey).toBe(3);
    await cache.close();
  });

  it("maximum bytes per DEK: a cached primary encrypts at most maxBytesPerDek bytes; a message larger than the limit alone is not cached", async () => {
    const { kms, cache } = setup({ maxBytesPerDek: 100 });
    await cache.encryptionKey("acme", "pii", 60);
    await cache.encryptionKey("acme", "pii", 40); // exactly 100: allowed, then used up
    expect(kms.calls.generateDataKey).toBe(1);
    await cache.encryptionKey("acme", "pii", 1);
    expect(kms.calls.generateDataKey).toBe(2);
    await cache.encryptionKey("acme", "pii", 101);
    await cache.encryptionKey("acme", "pii", 101);
    expect(kms.calls.generateDataKey).toBe(4);
    expect(cache.stats().entries).toBeLessThanOrEqual(2);
    await cache.close();
  });

  it("maximum bytes per DEK: bytes a stream reports afterwards count against the entry", async () => {
    const { kms, cache } = setup({ maxBytesPerDek: 100 });
    const key = await cache.encryptionKey("acme", "pii", 0);
    cache.recordEncryptedBytes("acme", "pii", key.reference, 100);
    await cache.encryptionKey("acme", "pii", 0);
    expect(kms.calls.generateDataKey).toBe(2);
    await cache.close();
  });

  it("capacity (LRU): beyond `capacity` entries the least recently used one is evicted", async () => {
    const { kms, cache } = setup({ capacity: 2 });
    const [a, b, c] = [1, 2, 3].map((v) => kms.ref("acme", "pii", v)) as [Buffer, Buffer, Buffer];
    await cache.decryptionKey("acme", "pii", a);
    await cache.decryptionKey("acme", "pii", b);
    await cache.decryptionKey("acme", "pii", a); // a is now the most recently used
    await cache.decryptionKey("acme", "pii", c); // evicts b
    expect(kms.calls.decrypt).toBe(3);
    await cache.decryptionKey("acme", "pii", a);
    expect(kms.calls.decrypt).toBe(3);
    await cache.decryptionKey("acme", "pii", b);
    expect(kms.calls.decrypt).toBe(4);
    expect(cache.stats()).toMatchObject({ entries: 2, evictions: { capacity: 2 } });
    await cache.close();
  });

  it("partitions by tenant and key: one key's entries are bounded by maxEntriesPerPartition and cannot push out another key's", async () => {
    const { kms, cache } = setup({ capacity: 10, maxEntriesPerPartition: 2 });
    await cache.decryptionKey("globex", "pii", kms.ref("globex", "pii", 1));
    for (let v = 1; v <= 5; v++) await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", v));
    const stats = cache.stats();
    expect(stats.entries).toBe(3);
    expect(stats.evictions.partitionCapacity).toBe(3);
    await cache.decryptionKey("globex", "pii", kms.ref("globex", "pii", 1));
    expect(cache.stats().hits).toBe(1);
    await cache.close();
  });

  it("partitions by tenant and key: an invalidation drops its key's entries only", async () => {
    const { kms, cache } = setup();
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1));
    await cache.decryptionKey("acme", "logs", kms.ref("acme", "logs", 1));
    await cache.decryptionKey("globex", "pii", kms.ref("globex", "pii", 1));
    expect(cache.invalidate({ scope: "key", tenantId: "acme", keyId: "pii" })).toBe(1);
    expect(cache.stats().entries).toBe(2);
    await cache.close();
  });

  it("cache keys include everything that scopes an entry: the same reference under another tenant, key or scope is another entry", async () => {
    const kms = fakeDataKeys();
    const shared = { dataKeys: kms.source, maxAgeMs: 60_000, sweepIntervalMs: 0 } as const;
    const cache = new DekCache({ ...shared, scope: "service-a" });
    const other = new DekCache({ ...shared, scope: "service-b" });
    const ref = kms.ref("acme", "pii", 1);
    await cache.decryptionKey("acme", "pii", ref);
    await cache.decryptionKey("acme", "logs", ref);
    await cache.decryptionKey("globex", "pii", ref);
    await cache.decryptionKey("acme", "pii", Buffer.concat([ref, Buffer.from([0])]));
    expect(kms.calls.decrypt).toBe(4);
    await cache.decryptionKey("acme", "pii", Buffer.from(ref));
    expect(kms.calls.decrypt).toBe(4);
    await other.decryptionKey("acme", "pii", ref);
    expect(kms.calls.decrypt).toBe(5);
    await Promise.all([cache.close(), other.close()]);
  });

  it("a hit never hands out the cache's own buffer: changing a returned DEK changes nothing cached", async () => {
    const { kms, cache } = setup();
    const ref = kms.ref("acme", "pii", 1);
    const first = await cache.decryptionKey("acme", "pii", ref);
    first.dek.fill(0xee);
    const second = await cache.decryptionKey("acme", "pii", ref);
    expect(second.dek).toEqual(kms.dek("acme", "pii", 1));
    second.dek.fill(0xdd);
    expect((await cache.decryptionKey("acme", "pii", ref)).dek).toEqual(kms.dek("acme", "pii", 1));
    const encryption = await cache.encryptionKey("acme", "pii", 1);
    encryption.dek.fill(0);
    encryption.reference.fill(0);
    const again = await cache.encryptionKey("acme", "pii", 1);
    expect(again.dek).toEqual(kms.dek("acme", "pii", 1));
    expect(again.reference).toEqual(kms.ref("acme", "pii", 1));
    await cache.close();
  });

  it("key buffers are zeroed on eviction: by capacity, age, invalidation and close", async () => {
    const buffers: Buffer[] = [];
    const { kms, cache, advance } = setup({
      capacity: 2,
      maxAgeMs: 1_000,
      fallbackMaxAgeMs: 1_000,
      allocateKeyBuffer: (size) => {
        const buffer = Buffer.alloc(size);
        buffers.push(buffer);
        return buffer;
      },
    });
    const isZero = (buffer: Buffer) => buffer.every((b) => b === 0);
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1));
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 2));
    expect(buffers.map(isZero)).toEqual([false, false]);
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 3)); // capacity: evicts v1
    expect(buffers.map(isZero)).toEqual([true, false, false]);
    cache.invalidate({ scope: "version", tenantId: "acme", keyId: "pii", dekVersion: 2 });
    expect(buffers.map(isZero)).toEqual([true, true, false]);
    advance(1_000);
    cache.sweep(); // age
    expect(buffers.map(isZero)).toEqual([true, true, true]);
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 4));
    await cache.close();
    expect(buffers.every(isZero)).toBe(true);
  });

  it("single flight: 64 concurrent misses for one DEK make one Decrypt RPC, and every caller gets its own copy", async () => {
    const { kms, cache } = setup();
    const release = kms.hold();
    const pending = Array.from({ length: 64 }, () => cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1)));
    release();
    const keys = await Promise.all(pending);
    expect(kms.calls.decrypt).toBe(1);
    expect(keys.every((k) => k.dek.equals(kms.dek("acme", "pii", 1)))).toBe(true);
    (keys[0] as { dek: Buffer }).dek.fill(0);
    expect(keys.slice(1).every((k) => k.dek.equals(kms.dek("acme", "pii", 1)))).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 1, coalesced: 63, rpcsSaved: 63 });
    await cache.close();
  });

  it("a failed fetch is not cached as a success: every waiter sees the failure and the next call fetches again", async () => {
    const { kms, cache } = setup();
    kms.failNext(1);
    const release = kms.hold();
    const attempts = Array.from({ length: 5 }, () => cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1)).then(() => "ok", () => "failed"));
    release();
    expect(await Promise.all(attempts)).toEqual(["failed", "failed", "failed", "failed", "failed"]);
    expect(cache.stats()).toMatchObject({ entries: 0, failedFetches: 1 });
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1));
    expect(kms.calls.decrypt).toBe(2);
    expect(cache.stats().entries).toBe(1);
    await cache.close();
  });

  it("an invalidation that arrives while a fetch is under way keeps that fetch's result out of the cache", async () => {
    const { kms, cache } = setup();
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 2)); // the partition exists
    const release = kms.hold();
    const pending = cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 1));
    await Promise.resolve();
    cache.invalidate({ scope: "key", tenantId: "acme", keyId: "pii" });
    release();
    await pending; // fetched again after the discarded result
    expect(kms.calls.decrypt).toBe(3);
    expect(cache.stats()).toMatchObject({ discardedFetches: 1 });
    await cache.close();
  });

  it("GenerateDataKey fills the Decrypt side too: decrypting what was just encrypted needs no RPC", async () => {
    const { kms, cache } = setup();
    const key = await cache.encryptionKey("acme", "pii", 1);
    await cache.decryptionKey("acme", "pii", key.reference);
    expect(kms.calls).toEqual({ generateDataKey: 1, decrypt: 0 });
    await cache.close();
  });

  it("stats count hits, misses, evictions and RPCs saved", async () => {
    const { kms, cache } = setup({ capacity: 1 });
    const ref = kms.ref("acme", "pii", 1);
    await cache.decryptionKey("acme", "pii", ref);
    await cache.decryptionKey("acme", "pii", ref);
    await cache.decryptionKey("acme", "pii", ref);
    await cache.decryptionKey("acme", "pii", kms.ref("acme", "pii", 2));
    expect(cache.stats()).toMatchObject({
      hits: 2,
      misses: 2,
      rpcsSaved: 2,
      rpcs: { decrypt: 2, generateDataKey: 0 },
      evictions: { total: 1, capacity: 1 },
      entries: 1,
    });
    await cache.close();
  });
});

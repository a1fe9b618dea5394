import { describe, expect, it } from "vitest";
import { createKekCache, MAX_DATA_KEYS_PER_KEK } from "./kek-cache.js";
import type { UnwrappedKek } from "./kek-material.js";

const scope = (keyId: string, kekVersion = 1, uid = 1) => ({ tenantId: "t1", keyId, keyUid: Buffer.alloc(16, uid), kekVersion });
/** The wrapped form a kept DEK came from (not secret). */
const WRAPPED = Buffer.alloc(60, 0xab);
const aesKek = (fill: number): UnwrappedKek & { key: Buffer } => ({ algorithm: "AES_256", key: Buffer.alloc(32, fill) });

describe("KEK cache", () => {
  it("returns an entry until its maximum age, then wipes it", () => {
    let now = 1_000;
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 500, now: () => now });
    const kek = aesKek(7);
    cache.set(scope("a"), kek);
    now += 499;
    expect(cache.get(scope("a"))).toBe(kek);
    now += 1;
    expect(cache.get(scope("a"))).toBeUndefined();
    expect(kek.key.every((b) => b === 0)).toBe(true);
  });

  it("evicts the least recently used entry beyond capacity and wipes it (recency counted to the second)", () => {
    let time = 0;
    const cache = createKekCache({ maxEntries: 2, maxAgeMs: 60_000, now: () => time });
    const [a, b, c] = [aesKek(1), aesKek(2), aesKek(3)];
    cache.set(scope("a"), a);
    cache.set(scope("b"), b);
    time = 1_000;
    cache.get(scope("a"));
    cache.set(scope("c"), c);
    expect(cache.get(scope("b"))).toBeUndefined();
    expect(b.key.every((x) => x === 0)).toBe(true);
    expect(cache.get(scope("a"))).toBe(a);
    expect(cache.get(scope("c"))).toBe(c);
  });

  it("a use within a second of the last does not reorder: eviction then follows insertion order", () => {
    let time = 0;
    const cache = createKekCache({ maxEntries: 2, maxAgeMs: 60_000, now: () => time });
    const [a, b, c] = [aesKek(1), aesKek(2), aesKek(3)];
    cache.set(scope("a"), a);
    cache.set(scope("b"), b);
    time = 999;
    cache.get(scope("a"));
    cache.set(scope("c"), c);
    expect(cache.get(scope("a"))).toBeUndefined();
    expect(cache.get(scope("b"))).toBe(b);
  });

  it("scopes entries by key uid and KEK version, not only by name", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    cache.set(scope("a", 1, 1), aesKek(1));
    expect(cache.get(scope("a", 2, 1))).toBeUndefined();
    expect(cache.get(scope("a", 1, 2))).toBeUndefined();
  });

  it("drops every version of one key and leaves other keys alone", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    const [a1, a2, b] = [aesKek(1), aesKek(2), aesKek(3)];
    cache.set(scope("a", 1), a1);
    cache.set(scope("a", 2), a2);
    cache.set(scope("b", 1), b);
    cache.deleteKey("t1", "a");
    expect(cache.size).toBe(1);
    expect(a1.key.every((x) => x === 0) && a2.key.every((x) => x === 0)).toBe(true);
    expect(cache.get(scope("b", 1))).toBe(b);
  });

  it("keeps nothing when disabled and tells the caller it still owns the KEK", () => {
    const cache = createKekCache({ maxEntries: 0, maxAgeMs: 60_000 });
    const kek = aesKek(9);
    expect(cache.set(scope("a"), kek)).toBe(false);
    expect(cache.get(scope("a"))).toBeUndefined();
    expect(kek.key[0]).toBe(9);
  });

  it("keeps a DEK with its cached KEK, and wipes it when the KEK expires", () => {
    let now = 1_000;
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 500, now: () => now });
    cache.set(scope("a"), aesKek(1));
    const dek = Buffer.alloc(32, 5);
    expect(cache.keepDataKey(scope("a"), 3, WRAPPED, dek)).toBe(true);
    expect(cache.dataKey(scope("a"), 3, WRAPPED)).toBe(dek);
    expect(cache.dataKey(scope("a"), 4, WRAPPED)).toBeUndefined();
    expect(cache.dataKey(scope("a", 2), 3, WRAPPED)).toBeUndefined();
    now += 500;
    expect(cache.dataKey(scope("a"), 3, WRAPPED)).toBeUndefined();
    expect(dek.every((b) => b === 0)).toBe(true);
  });

  it("wipes the kept DEKs with their KEK on eviction, on deleteKey and on clear", () => {
    const cache = createKekCache({ maxEntries: 1, maxAgeMs: 60_000 });
    cache.set(scope("a"), aesKek(1));
    const evicted = Buffer.alloc(32, 1);
    cache.keepDataKey(scope("a"), 1, WRAPPED, evicted);
    cache.set(scope("b"), aesKek(2));
    expect(evicted.every((b) => b === 0)).toBe(true);
    const deleted = Buffer.alloc(32, 2);
    cache.keepDataKey(scope("b"), 1, WRAPPED, deleted);
    cache.deleteKey("t1", "b");
    expect(deleted.every((b) => b === 0)).toBe(true);
    cache.set(scope("c"), aesKek(3));
    const cleared = Buffer.alloc(32, 3);
    cache.keepDataKey(scope("c"), 1, WRAPPED, cleared);
    cache.clear();
    expect(cleared.every((b) => b === 0)).toBe(true);
  });

  it("keeps no DEK without its KEK: the caller keeps ownership", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    const dek = Buffer.alloc(32, 8);
    expect(cache.keepDataKey(scope("a"), 1, WRAPPED, dek)).toBe(false);
    expect(dek[0]).toBe(8);
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBeUndefined();
  });

  it("keeps at most MAX_DATA_KEYS_PER_KEK DEKs per KEK, wiping the oldest", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    cache.set(scope("a"), aesKek(1));
    const deks = Array.from({ length: MAX_DATA_KEYS_PER_KEK + 1 }, (_, i) => Buffer.alloc(32, i + 1));
    deks.forEach((dek, i) => cache.keepDataKey(scope("a"), i + 1, WRAPPED, dek));
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBeUndefined();
    expect(deks[0]!.every((b) => b === 0)).toBe(true);
    expect(cache.dataKey(scope("a"), MAX_DATA_KEYS_PER_KEK + 1, WRAPPED)).toBe(deks[MAX_DATA_KEYS_PER_KEK]);
    expect(cache.dataKey(scope("a"), 2, WRAPPED)).toBe(deks[1]);
  });

  it("setting the same KEK again keeps its DEKs; a different KEK for the scope wipes them", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    const kek = aesKek(1);
    cache.set(scope("a"), kek);
    const dek = Buffer.alloc(32, 4);
    cache.keepDataKey(scope("a"), 1, WRAPPED, dek);
    cache.set(scope("a"), kek);
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBe(dek);
    cache.set(scope("a"), aesKek(2));
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBeUndefined();
    expect(dek.every((b) => b === 0)).toBe(true);
  });

  it("serves a kept DEK only for the very wrapped bytes it was unwrapped from", () => {
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 60_000 });
    cache.set(scope("a"), aesKek(1));
    const dek = Buffer.alloc(32, 6);
    cache.keepDataKey(scope("a"), 1, WRAPPED, dek);
    const altered = Buffer.from(WRAPPED);
    altered[10]! ^= 1;
    expect(cache.dataKey(scope("a"), 1, altered)).toBeUndefined();
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBe(dek);
  });

  it("setting the same KEK again does not extend its life, nor that of the DEKs kept with it", () => {
    let now = 1_000;
    const cache = createKekCache({ maxEntries: 10, maxAgeMs: 500, now: () => now });
    const kek = aesKek(1);
    cache.set(scope("a"), kek);
    const dek = Buffer.alloc(32, 4);
    cache.keepDataKey(scope("a"), 1, WRAPPED, dek);
    now += 400;
    expect(cache.set(scope("a"), kek)).toBe(true);
    now += 100;
    expect(cache.dataKey(scope("a"), 1, WRAPPED)).toBeUndefined();
    expect(dek.every((b) => b === 0)).toBe(true);
  });
});

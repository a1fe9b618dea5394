import { describe, expect, it } from "vitest";
import { createKekCache } from "./kek-cache.js";
import type { UnwrappedKek } from "./kek-material.js";

const scope = (keyId: string, kekVersion = 1, uid = 1) => ({ tenantId: "t1", keyId, keyUid: Buffer.alloc(16, uid), kekVersion });
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

  it("evicts the least recently used entry beyond capacity and wipes it", () => {
    const cache = createKekCache({ maxEntries: 2, maxAgeMs: 60_000 });
    const [a, b, c] = [aesKek(1), aesKek(2), aesKek(3)];
    cache.set(scope("a"), a);
    cache.set(scope("b"), b);
    cache.get(scope("a"));
    cache.set(scope("c"), c);
    expect(cache.get(scope("b"))).toBeUndefined();
    expect(b.key.every((x) => x === 0)).toBe(true);
    expect(cache.get(scope("a"))).toBe(a);
    expect(cache.get(scope("c"))).toBe(c);
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
});

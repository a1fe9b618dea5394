/**
 * A bounded, short-lived cache of unwrapped KEKs, so the hot path does not call
 * the master-key provider (an HSM or cloud KMS round trip) for every DEK.
 *
 * It holds material only, never authorisation: every call re-reads the key's
 * state from the database, so a revocation takes effect on the very next call
 * whatever is cached. Entries are keyed by everything that scopes them (tenant,
 * key, the key's unique id, KEK version) and wiped when evicted.
 */
import { wipeKek, type UnwrappedKek } from "./kek-material.js";

export interface KekCacheOptions {
  readonly maxEntries: number;
  readonly maxAgeMs: number;
  readonly now?: () => number;
}

export interface KekCacheScope {
  readonly tenantId: string;
  readonly keyId: string;
  readonly keyUid: Uint8Array;
  readonly kekVersion: number;
}

export interface KekCache {
  get(scope: KekCacheScope): UnwrappedKek | undefined;
  /** Returns false when the cache is disabled: the caller keeps ownership and must wipe. */
  set(scope: KekCacheScope, kek: UnwrappedKek): boolean;
  /** Drops (and wipes) every entry of one key. */
  deleteKey(tenantId: string, keyId: string): void;
  clear(): void;
  readonly size: number;
}

interface Entry {
  readonly kek: UnwrappedKek;
  readonly expiresAt: number;
  readonly prefix: string;
}

export function createKekCache(options: KekCacheOptions): KekCache {
  const now = options.now ?? Date.now;
  // A Map iterates in insertion order; re-inserting on hit makes it an LRU.
  const entries = new Map<string, Entry>();

  const evict = (id: string, entry: Entry): void => {
    entries.delete(id);
    wipeKek(entry.kek);
  };

  return {
    get(scope) {
      const id = cacheId(scope);
      const entry = entries.get(id);
      if (entry === undefined) return undefined;
      if (entry.expiresAt <= now()) {
        evict(id, entry);
        return undefined;
      }
      entries.delete(id);
      entries.set(id, entry);
      return entry.kek;
    },
    set(scope, kek) {
      if (options.maxEntries <= 0 || options.maxAgeMs <= 0) return false;
      const id = cacheId(scope);
      const previous = entries.get(id);
      if (previous !== undefined && previous.kek !== kek) evict(id, previous);
      entries.set(id, { kek, expiresAt: now() + options.maxAgeMs, prefix: keyPrefix(scope.tenantId, scope.keyId) });
      while (entries.size > options.maxEntries) {
        const oldest = entries.entries().next().value;
        if (oldest === undefined) break;
        evict(oldest[0], oldest[1]);
      }
      return true;
    },
    deleteKey(tenantId, keyId) {
      const prefix = keyPrefix(tenantId, keyId);
      for (const [id, entry] of entries) if (entry.prefix === prefix) evict(id, entry);
    },
    clear() {
      for (const [id, entry] of entries) evict(id, entry);
    },
    get size() {
      return entries.size;
    },
  };
}

function keyPrefix(tenantId: string, keyId: string): string {
  return `${tenantId}\u0000${keyId}`;
}

function cacheId(scope: KekCacheScope): string {
  return `${keyPrefix(scope.tenantId, scope.keyId)}\u0000${Buffer.from(scope.keyUid).toString("hex")}\u0000${scope.kekVersion}`;
}

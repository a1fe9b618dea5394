/**
 * A bounded, short-lived cache of unwrapped KEKs, so the hot path does not call
 * the master-key provider (an HSM or cloud KMS round trip) for every DEK.
 *
 * It holds material only, never authorisation: every call re-reads the key's
 * state from the database, so a revocation takes effect on the very next call
 * whatever is cached. Entries are keyed by everything that scopes them (tenant,
 * key, the key's unique id, KEK version) and wiped when evicted.
 *
 * An entry also keeps the DEKs its KEK unwrapped (at most
 * MAX_DATA_KEYS_PER_KEK, by DEK version), each with the wrapped bytes it came
 * from: it is served only for a row holding exactly those bytes, so it is
 * always what that row's material unwraps to (an altered row is unwrapped, and
 * fails, as without the cache). The KEK that unwraps it sits in the same entry anyway, so
 * keeping it there exposes nothing the entry did not already: it lives no
 * longer than the KEK (the same maximum age from when the KEK was cached), is
 * wiped with it — on eviction, expiry, a revocation, a destruction, a finished
 * re-wrap, a purge, shutdown — and saves the hot path an AES-GCM open (for an RSA-4096
 * KEK, an RSA private-key operation) per call. docs/decisions/0003.
 */
import { wipe } from "../crypto/secure-buffer.js";
import { wipeKek, type UnwrappedKek } from "./kek-material.js";

/** DEK versions kept per cached KEK; a key rarely has more than a few in use. */
export const MAX_DATA_KEYS_PER_KEK = 16;
/** An entry used again within this long of its last move keeps its place in the LRU order. */
const TOUCH_EVERY_MS = 1_000;

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
  /**
   * The plaintext of `dekVersion` kept with the cached KEK of `scope`, if both
   * are there. Lent, not given: copy it before the next await, never wipe it.
   */
  dataKey(scope: KekCacheScope, dekVersion: number, wrapped: Uint8Array): Buffer | undefined;
  /**
   * Keeps `plaintext` (what `wrapped` unwrapped to under the KEK of `scope`)
   * with that KEK. True: the cache owns it now. False (the KEK is not
   * cached): the caller still owns it and must wipe it.
   */
  keepDataKey(scope: KekCacheScope, dekVersion: number, wrapped: Uint8Array, plaintext: Buffer): boolean;
  clear(): void;
  readonly size: number;
}

interface Entry {
  readonly kek: UnwrappedKek;
  readonly expiresAt: number;
  /** When it was last made most recently used. */
  touchedAt: number;
  readonly prefix: string;
  /** DEKs by DEK version, in the order they were kept. */
  dataKeys: Map<number, KeptDataKey> | undefined;
}

interface KeptDataKey {
  /** Not secret: the stored, wrapped form. */
  readonly wrapped: Buffer;
  readonly plaintext: Buffer;
}

export function createKekCache(options: KekCacheOptions): KekCache {
  const now = options.now ?? Date.now;
  // A Map iterates in insertion order; re-inserting on hit (at most once a second) makes it an LRU to the second.
  const entries = new Map<string, Entry>();

  const evict = (id: string, entry: Entry): void => {
    entries.delete(id);
    wipeKek(entry.kek);
    if (entry.dataKeys !== undefined) for (const kept of entry.dataKeys.values()) wipe(kept.plaintext);
    entry.dataKeys = undefined;
  };

  /** The live entry of `scope`, made most recently used; expired ones are evicted on the way. */
  const live = (scope: KekCacheScope): Entry | undefined => {
    const id = cacheId(scope);
    const entry = entries.get(id);
    if (entry === undefined) return undefined;
    const time = now();
    if (entry.expiresAt <= time) {
      evict(id, entry);
      return undefined;
    }
    // Recency to the second is enough for eviction; re-inserting on every hit churns the map on the hot path.
    if (time - entry.touchedAt >= TOUCH_EVERY_MS) {
      entry.touchedAt = time;
      entries.delete(id);
      entries.set(id, entry);
    }
    return entry;
  };

  return {
    get(scope) {
      return live(scope)?.kek;
    },
    dataKey(scope, dekVersion, wrapped) {
      const kept = live(scope)?.dataKeys?.get(dekVersion);
      return kept !== undefined && kept.wrapped.equals(wrapped) ? kept.plaintext : undefined;
    },
    keepDataKey(scope, dekVersion, wrapped, plaintext) {
      const entry = live(scope);
      if (entry === undefined) return false;
      entry.dataKeys ??= new Map();
      const previous = entry.dataKeys.get(dekVersion);
      if (previous !== undefined && previous.plaintext !== plaintext) wipe(previous.plaintext);
      entry.dataKeys.delete(dekVersion);
      entry.dataKeys.set(dekVersion, { wrapped: Buffer.from(wrapped), plaintext });
      if (entry.dataKeys.size > MAX_DATA_KEYS_PER_KEK) {
        const [oldestVersion, oldest] = entry.dataKeys.entries().next().value as [number, KeptDataKey];
        entry.dataKeys.delete(oldestVersion);
        wipe(oldest.plaintext);
      }
      return true;
    },
    set(scope, kek) {
      if (options.maxEntries <= 0 || options.maxAgeMs <= 0) return false;
      const id = cacheId(scope);
      const previous = entries.get(id);
      // The same KEK again: already held, with its DEKs and its expiry (a kept DEK's age counts from the KEK's unwrap).
      if (previous !== undefined && previous.kek === kek) return true;
      if (previous !== undefined) evict(id, previous);
      const time = now();
      entries.set(id, { kek, expiresAt: time + options.maxAgeMs, touchedAt: time, prefix: keyPrefix(scope.tenantId, scope.keyId), dataKeys: undefined });
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

const cacheIds = new WeakMap<KekCacheScope, string>();

/** Remembered per scope object: the hot path hands the same (frozen) scope again while its row is kept. */
function cacheId(scope: KekCacheScope): string {
  let id = cacheIds.get(scope);
  if (id === undefined) {
    const uid = Buffer.from(scope.keyUid.buffer, scope.keyUid.byteOffset, scope.keyUid.byteLength).toString("hex");
    id = `${keyPrefix(scope.tenantId, scope.keyId)}\u0000${uid}\u0000${scope.kekVersion}`;
    if (Object.isFrozen(scope)) cacheIds.set(scope, id);
  }
  return id;
}

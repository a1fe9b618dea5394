import { afterEach, describe, expect, it, vi } from "vitest";
import { createFakeKms, type FakeKms } from "../../test/support/fake-kms.js";
import { createKmsClient, type KmsClient } from "../client/kms-client.js";
import { KmsError } from "../errors/kms-error.js";
import { ErrorReason, KeyEventType } from "../gen.js";
import { DekCache, type DekCacheOptions } from "./dek-cache.js";
import { invalidationFor } from "./key-event-watcher.js";

interface Setup {
  kms: FakeKms;
  client: KmsClient;
  cache: DekCache;
  advance(ms: number): void;
}

const open: DekCache[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((cache) => cache.close()));
});

function setup(options: Partial<DekCacheOptions> & { tenants?: "all" | "each" } = {}): Setup {
  const kms = createFakeKms();
  kms.createKey("acme", "pii");
  kms.createKey("acme", "logs");
  kms.createKey("globex", "pii");
  const client = createKmsClient({ transport: kms.transport, retry: false });
  let now = 0;
  const cache = new DekCache({
    dataKeys: client.dataKeys,
    maxAgeMs: 60_000,
    fallbackMaxAgeMs: 5_000,
    sweepIntervalMs: 0,
    now: () => now,
    events: { source: client.keyEvents, tenants: options.tenants ?? "all", assumeLiveAfterMs: 10, initialBackoffMs: 5, maxBackoffMs: 20 },
    ...options,
  });
  open.push(cache);
  return { kms, client, cache, advance: (ms) => (now += ms) };
}

const live = (cache: DekCache) => vi.waitFor(() => expect(cache.stats().eventStream.live).toBe(true), { timeout: 5_000, interval: 5 });

async function referenceOf(client: KmsClient, tenantId: string, keyId: string): Promise<Uint8Array> {
  return (await client.dataKeys.generateDataKey({ tenantId, keyId })).reference;
}

async function refusalOf(promise: Promise<unknown>): Promise<KmsError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KmsError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

describe("DEK cache invalidation from WatchKeyEvents", () => {
  it("KEY_REVOKED drops every entry of the key (both sides), so the next local decrypt goes to the service and is refused KEY_REVOKED", async () => {
    const { kms, client, cache } = setup();
    await live(cache);
    const ref = await referenceOf(client, "acme", "pii");
    await cache.decryptionKey("acme", "pii", ref);
    await cache.encryptionKey("acme", "pii", 1);
    await cache.decryptionKey("acme", "logs", await referenceOf(client, "acme", "logs"));
    expect(cache.stats().partitions).toBe(2);
    kms.revoke("acme", "pii");
    await vi.waitFor(() => expect(cache.stats().partitions).toBe(1), { timeout: 5_000, interval: 5 });
    // the Decrypt-side entry, the primary, and the primary's Decrypt-side twin; acme/logs stays
    expect(cache.stats()).toMatchObject({ entries: 1, invalidations: { events: 1, entries: 3 } });
    expect((await refusalOf(cache.decryptionKey("acme", "pii", ref))).reason).toBe(ErrorReason.KEY_REVOKED);
    expect((await refusalOf(cache.encryptionKey("acme", "pii", 1))).reason).toBe(ErrorReason.KEY_REVOKED);
    await cache.decryptionKey("acme", "logs", await referenceOf(client, "acme", "logs"));
  });

  it("DEK_VERSION_REVOKED drops that version only; the key's other versions stay cached", async () => {
    const { kms, client, cache } = setup();
    await live(cache);
    const v1 = await referenceOf(client, "acme", "pii");
    kms.rotate("acme", "pii");
    const v2 = await referenceOf(client, "acme", "pii");
    await cache.decryptionKey("acme", "pii", v1);
    await cache.decryptionKey("acme", "pii", v2);
    const decrypts = kms.calls.decrypt;
    kms.revokeVersion("acme", "pii", 1);
    await vi.waitFor(() => expect(cache.stats().invalidations.entries).toBe(1), { timeout: 5_000, interval: 5 });
    await cache.decryptionKey("acme", "pii", v2);
    expect(kms.calls.decrypt).toBe(decrypts);
    expect((await refusalOf(cache.decryptionKey("acme", "pii", v1))).reason).toBe(ErrorReason.DEK_VERSION_REVOKED);
  });

  it("DEK_ROTATED drops the cached primary, so the next encryption uses the new DEK version at once", async () => {
    const { kms, cache } = setup();
    await live(cache);
    expect((await cache.encryptionKey("acme", "pii", 1)).dekVersion).toBe(1);
    kms.rotate("acme", "pii");
    await vi.waitFor(() => expect(cache.stats().invalidations.events).toBe(1), { timeout: 5_000, interval: 5 });
    expect((await cache.encryptionKey("acme", "pii", 1)).dekVersion).toBe(2);
  });

  it("maps each event type to what it drops: key revoked, destroyed or customer key unavailable → the key; version revoked or purged → the version; rotated → the primary; others → nothing", () => {
    const event = (type: KeyEventType, dekVersion = 0) => ({ cursor: "1", tenantId: "t", keyId: "k", type, dekVersion });
    expect(invalidationFor(event(KeyEventType.KEY_REVOKED))?.scope).toBe("key");
    expect(invalidationFor(event(KeyEventType.KEY_DESTROYED))?.scope).toBe("key");
    expect(invalidationFor(event(KeyEventType.CUSTOMER_KEY_UNAVAILABLE))?.scope).toBe("key");
    expect(invalidationFor(event(KeyEventType.DEK_VERSION_REVOKED, 3))).toEqual({ scope: "version", tenantId: "t", keyId: "k", dekVersion: 3 });
    expect(invalidationFor(event(KeyEventType.DEK_VERSION_PURGED, 2))).toEqual({ scope: "version", tenantId: "t", keyId: "k", dekVersion: 2 });
    expect(invalidationFor(event(KeyEventType.DEK_VERSION_PURGED))?.scope).toBe("key");
    expect(invalidationFor(event(KeyEventType.DEK_ROTATED, 2))?.scope).toBe("primary");
    for (const type of [KeyEventType.KEY_CREATED, KeyEventType.KEY_RESTORED, KeyEventType.KEK_ROTATED, KeyEventType.KEK_VERSION_DESTROYED, KeyEventType.CUSTOMER_KEY_AVAILABLE]) {
      expect(invalidationFor(event(type))).toBeUndefined();
    }
  });

  it("while the stream is down, entries live at most the fallback age, and the stats say the fallback is active", async () => {
    const { kms, client, cache, advance } = setup();
    await live(cache);
    expect(cache.stats().fallback).toEqual({ active: false, maxAgeMs: 5_000 });
    const ref = await referenceOf(client, "acme", "pii");
    await cache.decryptionKey("acme", "pii", ref);
    advance(10_000); // past the fallback age, within the maximum age: fine while the stream is live
    await cache.decryptionKey("acme", "pii", ref);
    expect(kms.calls.decrypt).toBe(1);

    kms.breakStreams(true);
    await vi.waitFor(() => expect(cache.stats().eventStream.live).toBe(false), { timeout: 5_000, interval: 5 });
    expect(cache.stats().fallback.active).toBe(true);
    expect(cache.stats().eventStream.watchers[0]?.lastError).toBe("unavailable SHUTTING_DOWN");
    await cache.decryptionKey("acme", "pii", ref); // 10 s old, stream down: not served
    expect(kms.calls.decrypt).toBe(2);
    expect(cache.stats().evictions.fallbackAge).toBe(1);
    advance(4_999);
    await cache.decryptionKey("acme", "pii", ref); // 4.999 s old: within the fallback age
    expect(kms.calls.decrypt).toBe(2);
    advance(1);
    await cache.decryptionKey("acme", "pii", ref);
    expect(kms.calls.decrypt).toBe(3);

    kms.restoreStreams();
    await live(cache);
    expect(cache.stats().fallback.active).toBe(false);
  });

  it("entries fetched before the stream went live are held to the fallback age even once it is live", async () => {
    const { kms, client, cache, advance } = setup();
    kms.breakStreams(true);
    const ref = await referenceOf(client, "acme", "pii");
    await cache.decryptionKey("acme", "pii", ref);
    advance(1_000);
    kms.restoreStreams();
    await live(cache);
    advance(4_000);
    await cache.decryptionKey("acme", "pii", ref); // 5 s old, fetched before coverage began
    expect(kms.calls.decrypt).toBe(2);
    advance(30_000);
    await cache.decryptionKey("acme", "pii", ref); // fetched while covered: kept
    expect(kms.calls.decrypt).toBe(2);
  });

  it("resumes after the last cursor on reconnect: a revocation made while the stream was down is applied when it comes back", async () => {
    const { kms, client, cache } = setup();
    await live(cache);
    kms.rotate("acme", "logs"); // an event, so the watcher has a cursor
    await vi.waitFor(() => expect(cache.stats().eventStream.watchers[0]?.lastCursor).toBeDefined(), { timeout: 5_000, interval: 5 });
    const ref = await referenceOf(client, "acme", "pii");
    await cache.decryptionKey("acme", "pii", ref);
    kms.breakStreams(true);
    await vi.waitFor(() => expect(cache.stats().eventStream.live).toBe(false), { timeout: 5_000, interval: 5 });
    kms.revoke("acme", "pii");
    expect(cache.stats().entries).toBeGreaterThan(0);
    kms.restoreStreams();
    await vi.waitFor(() => expect(cache.stats().invalidations.entries).toBeGreaterThanOrEqual(1), { timeout: 5_000, interval: 5 });
    expect((await refusalOf(cache.decryptionKey("acme", "pii", ref))).reason).toBe(ErrorReason.KEY_REVOKED);
  });

  it("starts over from now when the server says the cursor expired (EVENT_CURSOR_EXPIRED)", async () => {
    const { kms, cache } = setup();
    await live(cache);
    kms.rotate("acme", "logs");
    await vi.waitFor(() => expect(cache.stats().eventStream.watchers[0]?.lastCursor).toBeDefined(), { timeout: 5_000, interval: 5 });
    kms.breakStreams(true);
    await vi.waitFor(() => expect(cache.stats().eventStream.live).toBe(false), { timeout: 5_000, interval: 5 });
    kms.rotate("acme", "logs"); // missed while down, then forgotten by the server
    kms.pruneHistory();
    kms.restoreStreams();
    await vi.waitFor(() => expect(cache.stats().eventStream.watchers[0]?.lastError).toBe("out_of_range EVENT_CURSOR_EXPIRED"), { timeout: 5_000, interval: 5 });
    await live(cache);
    expect(kms.calls.watchKeyEvents).toBeGreaterThanOrEqual(3);
  });

  it("with tenants: 'each', opens one stream per tenant on first use, and each tenant's entries depend on its own stream", async () => {
    const { kms, client, cache } = setup({ tenants: "each" });
    expect(cache.stats().eventStream.watchers).toEqual([]);
    await cache.decryptionKey("acme", "pii", await referenceOf(client, "acme", "pii"));
    await cache.decryptionKey("globex", "pii", await referenceOf(client, "globex", "pii"));
    await live(cache);
    expect(cache.stats().eventStream.watchers.map((w) => w.tenantId).sort()).toEqual(["acme", "globex"]);
    expect(kms.openStreams()).toBe(2);
    kms.revoke("globex", "pii");
    await vi.waitFor(() => expect(cache.stats().invalidations.entries).toBe(1), { timeout: 5_000, interval: 5 });
  });

  it("close() ends the streams", async () => {
    const { kms, cache } = setup();
    await live(cache);
    expect(kms.openStreams()).toBe(1);
    await cache.close();
    await vi.waitFor(() => expect(kms.openStreams()).toBe(0), { timeout: 5_000, interval: 5 });
    expect(cache.stats().eventStream.watchers[0]?.state).toBe("stopped");
  });
});

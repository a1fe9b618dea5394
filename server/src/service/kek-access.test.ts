import { describe, expect, it } from "vitest";
import { systemClock } from "../domain/clock.js";
import { KmsError } from "../domain/kms-error.js";
import type { RootKeyProvider } from "../domain/root-key-provider.js";
import { withKek, type WrappedKekRow } from "./kek-access.js";
import { createKekCache, type KekCacheOptions } from "./kek-cache.js";
import type { KmsContext } from "./kms-context.js";

const row: WrappedKekRow = {
  tenantId: "t1",
  keyId: "k1",
  keyUid: Buffer.alloc(16, 1),
  kekVersion: 1,
  kekAlgorithm: "AES_256",
  wrappedKek: Buffer.alloc(60, 9),
  rootKeyId: "root-1",
};

/** A root provider whose unwraps take a few milliseconds (a KMS round trip) and are counted; `failing` makes them fail. */
function slowProvider(options: { failing?: boolean } = {}): RootKeyProvider & { readonly unwraps: number } {
  let unwraps = 0;
  return {
    name: "fake",
    currentKeyId: "root-1",
    get unwraps() {
      return unwraps;
    },
    wrap: async () => Buffer.alloc(0),
    async unwrap() {
      unwraps++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (options.failing === true) throw new KmsError("PROVIDER_UNAVAILABLE", "the KMS is away");
      return Buffer.alloc(32, 7);
    },
    close: async () => undefined,
  };
}

function contextWith(provider: RootKeyProvider, cache: KekCacheOptions): KmsContext {
  return { db: undefined as never, rootProvider: provider, clock: systemClock, kekCache: createKekCache(cache) };
}

describe("withKek", () => {
  it("unwraps a KEK once for many concurrent misses on a cold cache: the others wait and read the cached result", async () => {
    const provider = slowProvider();
    const context = contextWith(provider, { maxEntries: 10, maxAgeMs: 60_000 });
    const seen = await Promise.all(Array.from({ length: 32 }, () => withKek(context, row, (kek) => (kek.algorithm === "AES_256" ? kek.key[0] : -1))));
    expect(seen).toEqual(Array.from({ length: 32 }, () => 7));
    expect(provider.unwraps).toBe(1);
    await withKek(context, row, () => undefined);
    expect(provider.unwraps).toBe(1);
  });

  it("lets every waiter try on its own when the first unwrap fails, and each sees the provider's error", async () => {
    const provider = slowProvider({ failing: true });
    const context = contextWith(provider, { maxEntries: 10, maxAgeMs: 60_000 });
    const outcomes = await Promise.allSettled(Array.from({ length: 4 }, () => withKek(context, row, () => undefined)));
    expect(outcomes.every((o) => o.status === "rejected" && (o.reason as KmsError).reason === "PROVIDER_UNAVAILABLE")).toBe(true);
    expect(provider.unwraps).toBe(4);
  });

  it("with the cache off, every call unwraps (nothing to share) and none waits forever", async () => {
    const provider = slowProvider();
    const context = contextWith(provider, { maxEntries: 0, maxAgeMs: 0 });
    await Promise.all(Array.from({ length: 4 }, () => withKek(context, row, () => undefined)));
    expect(provider.unwraps).toBe(4);
  });
});

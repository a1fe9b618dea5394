/**
 * Obtains an unwrapped KEK — from the cache, or from the master-key provider —
 * and lends it to a synchronous callback. Using the KEK inside the callback,
 * in the same tick, means an eviction (which wipes) can never pull the
 * material from under a caller mid-operation.
 */
import type { KekAlgorithm } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import { customerKeyError } from "../providers/customer-key-error.js";
import { requireCustomerKeys, isCustomerKeyProvider } from "./customer-keys.js";
import { importKek, wipeKek, type UnwrappedKek } from "./kek-material.js";
import type { KmsContext } from "./kms-context.js";

export interface WrappedKekRow {
  readonly tenantId: string;
  readonly keyId: string;
  readonly keyUid: Uint8Array;
  readonly kekVersion: number;
  readonly kekAlgorithm: KekAlgorithm;
  readonly wrappedKek: Uint8Array | null;
  readonly rootKeyId: string;
  /** kek_versions.root_provider: a customer provider ("AWS_KMS", ...) for a BYOK KEK version; otherwise the master key's. */
  readonly rootProvider?: string | undefined;
}

/**
 * Unwraps in flight, per cache and KEK version: concurrent misses on one KEK
 * (a cold cache under load) wait for the first one's unwrap and read its
 * cached result, so the provider — a customer's KMS, with its quota — sees one
 * call per KEK per cache lifetime, not one per caller in flight.
 */
const unwrapsInFlight = new WeakMap<KmsContext["kekCache"], Map<string, Promise<unknown>>>();

export async function withKek<T>(context: KmsContext, row: WrappedKekRow, use: (kek: UnwrappedKek) => T): Promise<T> {
  const scope = { tenantId: row.tenantId, keyId: row.keyId, keyUid: row.keyUid, kekVersion: row.kekVersion };
  const cached = context.kekCache.get(scope);
  if (cached !== undefined) return use(cached);

  if (row.wrappedKek === null) {
    throw new KmsError("INTERNAL", `KEK version ${row.kekVersion} of key ${row.keyId} has no material left`);
  }
  let inFlight = unwrapsInFlight.get(context.kekCache);
  if (inFlight === undefined) unwrapsInFlight.set(context.kekCache, (inFlight = new Map()));
  const id = `${row.tenantId}\u0000${row.keyId}\u0000${Buffer.from(row.keyUid).toString("hex")}\u0000${row.kekVersion}`;
  const leader = inFlight.get(id);
  if (leader !== undefined) {
    await leader.catch(() => undefined);
    const shared = context.kekCache.get(scope);
    if (shared !== undefined) return use(shared);
    // The leader failed or could not cache (a cache of size 0): unwrap on our own.
  }
  const unwrapping = unwrapKekSecret(context, { ...row, wrappedKek: row.wrappedKek });
  // Followers are released once the result is cached, or the unwrap failed.
  let release = (): void => undefined;
  if (leader === undefined) {
    const done = new Promise<void>((resolve) => (release = resolve));
    inFlight.set(id, done);
    void done.then(() => {
      if (inFlight.get(id) === done) inFlight.delete(id);
    });
  }
  let kek: UnwrappedKek;
  try {
    kek = importKek(row.kekAlgorithm, await unwrapping);
    // Another call may have unwrapped the same KEK meanwhile; keep the cached one.
    const raced = context.kekCache.get(scope);
    if (raced !== undefined) {
      wipeKek(kek);
      return use(raced);
    }
    if (context.kekCache.set(scope, kek)) return use(kek);
  } finally {
    release();
  }
  try {
    return use(kek);
  } finally {
    wipeKek(kek);
  }
}

/**
 * Unwraps a KEK version's secret half: under the master key, or — for a
 * customer-managed (BYOK) KEK version — under the customer's key, whose
 * failures say why (revoked, unreachable, permission denied). The caller owns
 * (and wipes) the result.
 */
export async function unwrapKekSecret(context: KmsContext, row: WrappedKekRow & { readonly wrappedKek: Uint8Array }): Promise<Buffer> {
  const scope = { tenantId: row.tenantId, keyId: row.keyId, kekVersion: row.kekVersion };
  if (row.rootProvider === undefined || !isCustomerKeyProvider(row.rootProvider)) {
    return context.rootProvider.unwrap(row.wrappedKek, scope, row.rootKeyId);
  }
  const customerKeys = requireCustomerKeys(context);
  try {
    const provider = await customerKeys.provider(row.rootProvider, row.rootKeyId);
    return await provider.unwrap(row.wrappedKek, { purpose: "kek", tenantId: row.tenantId, keyId: row.keyId, version: row.kekVersion });
  } catch (error) {
    throw customerKeyError(error, `unwrapping KEK version ${row.kekVersion} of key ${row.keyId}`);
  }
}

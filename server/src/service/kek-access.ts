/**
 * Obtains an unwrapped KEK — from the cache, or from the master-key provider —
 * and lends it to a synchronous callback. Using the KEK inside the callback,
 * in the same tick, means an eviction (which wipes) can never pull the
 * material from under a caller mid-operation.
 */
import type { KekAlgorithm } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
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
}

export async function withKek<T>(context: KmsContext, row: WrappedKekRow, use: (kek: UnwrappedKek) => T): Promise<T> {
  const scope = { tenantId: row.tenantId, keyId: row.keyId, keyUid: row.keyUid, kekVersion: row.kekVersion };
  const cached = context.kekCache.get(scope);
  if (cached !== undefined) return use(cached);

  if (row.wrappedKek === null) {
    throw new KmsError("INTERNAL", `KEK version ${row.kekVersion} of key ${row.keyId} has no material left`);
  }
  const secret = await context.rootProvider.unwrap(
    row.wrappedKek,
    { tenantId: row.tenantId, keyId: row.keyId, kekVersion: row.kekVersion },
    row.rootKeyId,
  );
  const kek = importKek(row.kekAlgorithm, secret);
  // Another call may have unwrapped the same KEK meanwhile; keep the cached one.
  const raced = context.kekCache.get(scope);
  if (raced !== undefined) {
    wipeKek(kek);
    return use(raced);
  }
  if (context.kekCache.set(scope, kek)) return use(kek);
  try {
    return use(kek);
  } finally {
    wipeKek(kek);
  }
}

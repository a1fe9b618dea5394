/**
 * The hot path's one read: the key's state, the DEK version's wrapped material
 * and its KEK, in a single query (a row kept from an earlier call is proven
 * current instead: data-key-material-reader.ts); then the DEK — kept with its
 * cached KEK (kek-cache.ts), or unwrapped by that KEK and kept. When both the
 * row and the DEK are kept, `unwrapKeptDataKey` answers without I/O or a promise.
 */
import { CryptoFailure } from "../crypto/crypto-failure.js";
import { wipe } from "../crypto/secure-buffer.js";
import type { DekVersionState, KekAlgorithm, KeyState } from "../domain/key-model.js";
import { assertDekVersionDecryptable, assertKeyUsable } from "../domain/key-rules.js";
import { KmsError } from "../domain/kms-error.js";
import { readDataKeyMaterial, readKeptDataKeyMaterial } from "../storage/data-key-material-reader.js";
import type { DataKeyMaterial } from "../storage/dek-version.repository.js";
import { findKey } from "../storage/key.repository.js";
import { withKek } from "./kek-access.js";
import { dekWrapContext, unwrapDek } from "./kek-material.js";
import type { KmsContext } from "./kms-context.js";
import { notFoundError } from "./key-reader.js";

export interface UnwrappedDataKey {
  readonly keyUid: Uint8Array;
  readonly dekVersion: number;
  /** The caller owns this buffer and should wipe it when done. */
  readonly plaintext: Buffer;
  /** The last Decrypt of this version on record, if any. */
  readonly lastDecryptTime: Date | undefined;
  /** The row this came from: the same object while the row is unchanged (issued-references.ts). */
  readonly row: object;
}

/**
 * The DEK when memory alone serves it: its row kept and provably current
 * (readKeptDataKeyMaterial), its plaintext kept with the cached KEK. Undefined
 * when that takes I/O: then `unwrapDataKey`. Refuses (throws) exactly as
 * `unwrapDataKey` does for a key or version that is not usable.
 */
export function unwrapKeptDataKey(
  context: KmsContext,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): UnwrappedDataKey | undefined {
  const material = readKeptDataKeyMaterial(context.db, tenantId, keyId, dekVersion);
  if (material === undefined) return undefined;
  const wrappedDek = usableWrappedDek(material, tenantId, keyId);
  const kept = context.kekCache.dataKey(kekRowOf(material, tenantId, keyId), material.dekVersion, wrappedDek);
  return kept === undefined ? undefined : unwrappedDataKey(material, copyOf(kept));
}

export async function unwrapDataKey(
  context: KmsContext,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): Promise<UnwrappedDataKey> {
  const material = await readDataKeyMaterial(context.db, tenantId, keyId, dekVersion);
  if (material === undefined) {
    // Tell "no such version" from "no such key" (or tenant) only for a key that exists.
    if (dekVersion !== "primary" && (await findKey(context.db, tenantId, keyId)) !== undefined) {
      throw new KmsError("DEK_VERSION_NOT_FOUND", `reference: key ${keyId} has no DEK version ${dekVersion}`, { field: "reference" });
    }
    throw await notFoundError(context.db, tenantId, keyId);
  }
  const wrappedDek = usableWrappedDek(material, tenantId, keyId);
  const kekRow = kekRowOf(material, tenantId, keyId);
  // Only now, with the key and version proven usable by this call's read: the DEK kept with its cached KEK.
  const kept = context.kekCache.dataKey(kekRow, material.dekVersion, wrappedDek);
  const plaintext =
    kept !== undefined
      ? copyOf(kept)
      : await withKek(context, kekRow, (kek) => {
          let unwrapped: Buffer;
          try {
            unwrapped = unwrapDek(kek, wrappedDek, dekWrapContext(tenantId, keyId, material.dekVersion));
          } catch (error) {
            if (error instanceof CryptoFailure) {
              throw new KmsError("INTERNAL", `DEK version ${material.dekVersion} of key ${keyId} failed to unwrap under its KEK`, { cause: error });
            }
            throw error;
          }
          const keptCopy = copyOf(unwrapped);
          if (!context.kekCache.keepDataKey(kekRow, material.dekVersion, wrappedDek, keptCopy)) wipe(keptCopy);
          return unwrapped;
        });
  return unwrappedDataKey(material, plaintext);
}

/** The version's wrapped DEK, once the key and the version are proven usable; refuses otherwise. */
function usableWrappedDek(material: DataKeyMaterial, tenantId: string, keyId: string): Buffer {
  assertKeyUsable(tenantId, keyId, material.keyState as KeyState);
  assertDekVersionDecryptable(keyId, material.dekVersion, material.dekState as DekVersionState);
  if (material.wrappedDek === null) {
    throw new KmsError("DEK_VERSION_UNUSABLE", `reference: DEK version ${material.dekVersion} of key ${keyId} has no material`, { field: "reference" });
  }
  return material.wrappedDek;
}

function unwrappedDataKey(material: DataKeyMaterial, plaintext: Buffer): UnwrappedDataKey {
  return { keyUid: material.keyUid, dekVersion: material.dekVersion, plaintext, lastDecryptTime: material.lastDecryptTime ?? undefined, row: material };
}

type KekRow = Parameters<typeof withKek>[1];
const kekRows = new WeakMap<object, KekRow>();

/** The KEK part of a material row, made once per row object (the storage layer hands a kept row out again). */
function kekRowOf(material: DataKeyMaterial, tenantId: string, keyId: string): KekRow {
  let kekRow = kekRows.get(material);
  if (kekRow === undefined) {
    kekRow = Object.freeze({
      tenantId,
      keyId,
      keyUid: material.keyUid,
      kekVersion: material.kekVersion,
      kekAlgorithm: material.kekAlgorithm as KekAlgorithm,
      wrappedKek: material.wrappedKek,
      rootKeyId: material.rootKeyId,
      rootProvider: material.rootProvider,
    });
    // Rows from a transaction or a derived handle are fresh objects each time and not frozen: nothing to remember.
    if (Object.isFrozen(material)) kekRows.set(material, kekRow);
  }
  return kekRow;
}

/** A private copy outside Node's shared buffer pool, so the owner can wipe exactly it. */
function copyOf(plaintext: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(plaintext.byteLength);
  plaintext.copy(copy);
  return copy;
}

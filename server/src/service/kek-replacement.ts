/**
 * A KEK replacement inside a transaction the caller already holds, with the
 * key row locked: the new KEK version (already wrapped — under the master key,
 * or under the customer's key for a BYOK key) becomes PRIMARY; the previous
 * primary becomes RETIRING with a KEK_REWRAP job for its DEK versions
 * (jobs/kek-rewrap.ts), and KEK_ROTATED is appended. Returns the updated key row. Versions already
 * RETIRING keep their job, which now re-wraps under the new primary.
 *
 * The one KEK replacement: RotateKey(rotate_kek) on platform and customer
 * keys, and UpdateKey(customer_key) pointing a BYOK key at another customer key.
 */
import type { Executor, KeyRow } from "../storage/database.js";
import { enqueueKekRewrap } from "../jobs/kek-rewrap.js";
import { insertKekVersion, listKekVersions } from "../storage/kek-version.repository.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { updateKey } from "../storage/key.repository.js";
import { nextVersionNumber } from "../domain/key-rules.js";

export interface ReplacementKek {
  readonly version: number;
  /** The secret half, wrapped by `rootProvider` / `rootKeyId`. */
  readonly wrappedMaterial: Buffer;
  /** RSA only: the SPKI public key, stored in clear. */
  readonly publicKey: Buffer | null;
  /** The master key's provider name, or the customer provider ("AWS_KMS", ...) for a BYOK key. */
  readonly rootProvider: string;
  /** The master key id, or the customer key URI. */
  readonly rootKeyId: string;
}

/** The version number the key's next KEK version takes. */
export async function nextKekVersion(tx: Executor, tenantId: string, keyId: string): Promise<number> {
  return nextVersionNumber(await listKekVersions(tx, tenantId, keyId));
}

export async function replaceKekInTransaction(
  tx: Executor,
  key: { readonly tenantId: string; readonly keyId: string },
  kek: ReplacementKek,
  now: Date,
): Promise<KeyRow> {
  const { tenantId, keyId } = key;
  const keks = await listKekVersions(tx, tenantId, keyId);
  // The version is bound into the wrapped blob's context: a blob made for another number must never be stored.
  if (kek.version !== nextVersionNumber(keks)) {
    throw new Error(`KEK version ${kek.version} of key ${keyId} is not the next one (${nextVersionNumber(keks)})`);
  }
  await insertKekVersion(tx, {
    tenant_id: tenantId,
    key_id: keyId,
    version: kek.version,
    state: "PRIMARY",
    wrapped_material: kek.wrappedMaterial,
    public_key: kek.publicKey,
    root_provider: kek.rootProvider,
    root_key_id: kek.rootKeyId,
    create_time: now,
    destroy_time: null,
  });
  for (const old of keks) {
    if (old.state === "PRIMARY") await enqueueKekRewrap(tx, { tenantId, keyId, kekVersion: old.version, now });
  }
  const row = await updateKey(tx, tenantId, keyId, { primary_kek_version: kek.version });
  if (row === undefined) throw new Error(`key ${tenantId}/${keyId} vanished while its row was locked`);
  await appendKeyEvent(tx, { tenantId, keyId, type: "KEK_ROTATED", kekVersion: kek.version, time: now });
  return row;
}

/**
 * RotateKey: a new DEK version becomes primary and the previous one stays
 * decrypt-only. With rotateKek, a new KEK version is made first and becomes
 * primary (the new DEK is wrapped under it); the previous primary KEK version
 * becomes RETIRING, and a KEK_REWRAP job enqueued in the same transaction
 * re-wraps its DEK versions in the background and then destroys it
 * (jobs/kek-rewrap.ts). Callers' stored DEK references never change, and
 * every version keeps decrypting throughout.
 *
 * The key row is locked (SELECT ... FOR UPDATE) for the whole transaction, so
 * two rotations of one key — from any replica — serialise.
 */
import { importRsaPublicKey } from "../crypto/rsa-oaep.js";
import { generateAes256Key } from "../crypto/random.js";
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import { KmsError } from "../domain/kms-error.js";
import type { KekAlgorithm, TenantKey } from "../domain/key-model.js";
import { assertKeyManageable, nextVersionNumber } from "../domain/key-rules.js";
import { addSeconds } from "../domain/rotation-policy.js";
import type { Executor } from "../storage/database.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { enqueueKekRewrap } from "../jobs/kek-rewrap.js";
import { insertDekVersion, listDekVersions, updateDekVersion } from "../storage/dek-version.repository.js";
import { insertKekVersion, listKekVersions } from "../storage/kek-version.repository.js";
import { updateKey } from "../storage/key.repository.js";
import { withKek } from "./kek-access.js";
import { dekWrapContext, generateKekMaterial, wrapDek, type KekForWrapping, type NewKekMaterial } from "./kek-material.js";
import type { KmsContext } from "./kms-context.js";
import { readKeyRow, readTenantKey } from "./key-reader.js";

export interface RotateKeyInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly rotateKek: boolean;
}

export async function rotateKey(context: KmsContext, input: RotateKeyInput): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const preview = await readKeyRow(context.db, tenantId, keyId);
  assertKeyManageable({ tenantId, keyId, state: preview.state as TenantKey["state"] });
  const algorithm = preview.kek_algorithm as KekAlgorithm;
  if (input.rotateKek && preview.protection === "CUSTOMER_MANAGED") {
    // The background KEK re-wrap (jobs/kek-rewrap.ts) unwraps through the master key only, so it cannot move a BYOK key's DEKs yet.
    throw new KmsError("INVALID_STATE_TRANSITION", `rotate_kek: key ${keyId} is customer-managed; rotate the key in your KMS instead (KEK rotation of customer-managed keys is not available yet)`, {
      field: "rotate_kek",
    });
  }

  // Key generation (RSA-4096 takes about a second) happens before any lock is taken.
  const newKek = input.rotateKek ? await generateKekMaterial(algorithm) : undefined;
  const newDek = generateAes256Key();
  try {
    await context.db.transaction().execute(async (tx) => {
      const row = await readKeyRow(tx, tenantId, keyId, true);
      assertKeyManageable({ tenantId, keyId, state: row.state as TenantKey["state"] });
      const keyUid = row.key_uid;
      const now = context.clock.now();

      let primaryKekVersion = row.primary_kek_version;
      if (newKek !== undefined) {
        primaryKekVersion = await replaceKek(context, tx, { tenantId, keyId, keyUid, algorithm }, newKek, now);
      }

      const deks = await listDekVersions(tx, tenantId, keyId);
      const version = nextVersionNumber(deks);
      const aad = dekWrapContext(tenantId, keyId, version);
      const wrappedDek = await wrapUnderPrimaryKek(context, tx, { tenantId, keyId, keyUid, algorithm }, primaryKekVersion, newKek, newDek, aad);
      await updateDekVersion(tx, tenantId, keyId, row.primary_dek_version, { state: "DECRYPT_ONLY", rotate_time: now });
      await insertDekVersion(tx, {
        tenant_id: tenantId,
        key_id: keyId,
        version,
        state: "PRIMARY",
        kek_version: primaryKekVersion,
        wrapped_material: wrappedDek,
        create_time: now,
        rotate_time: null,
      });
      const kekCreateTime = newKek === undefined ? (await listKekVersions(tx, tenantId, keyId)).find((k) => k.version === primaryKekVersion)!.create_time : now;
      await updateKey(tx, tenantId, keyId, {
        primary_dek_version: version,
        primary_kek_version: primaryKekVersion,
        update_time: now,
        next_rotation_time: earliest(
          addSeconds(now, row.dek_rotation_period_seconds),
          addSeconds(kekCreateTime, row.kek_rotation_period_seconds),
        ),
        rotation_failure_time: null,
        rotation_failure_message: null,
        rotation_failure_attempts: 0,
      });
      if (newKek !== undefined) await appendKeyEvent(tx, { tenantId, keyId, type: "KEK_ROTATED", kekVersion: primaryKekVersion, time: now });
      await appendKeyEvent(tx, { tenantId, keyId, type: "DEK_ROTATED", dekVersion: version, kekVersion: primaryKekVersion, time: now });
    });
  } finally {
    wipe(newDek, newKek?.secret);
  }
  return readTenantKey(context.db, tenantId, keyId);
}

interface KeyScope {
  readonly tenantId: string;
  readonly keyId: string;
  readonly keyUid: Uint8Array;
  readonly algorithm: KekAlgorithm;
}

/**
 * Inserts the new primary KEK version; the previous primary becomes RETIRING
 * with a KEK_REWRAP job for its DEK versions (versions already RETIRING keep
 * theirs, which now re-wraps under the new primary).
 */
async function replaceKek(context: KmsContext, tx: Executor, key: KeyScope, newKek: NewKekMaterial, now: Date): Promise<number> {
  const { tenantId, keyId } = key;
  const keks = await listKekVersions(tx, tenantId, keyId);
  const version = nextVersionNumber(keks);
  await insertKekVersion(tx, {
    tenant_id: tenantId,
    key_id: keyId,
    version,
    state: "PRIMARY",
    wrapped_material: await context.rootProvider.wrap(newKek.secret, { tenantId, keyId, kekVersion: version }),
    public_key: newKek.publicKey,
    root_provider: context.rootProvider.name,
    root_key_id: context.rootProvider.currentKeyId,
    create_time: now,
    destroy_time: null,
  });
  for (const old of keks) {
    if (old.state === "PRIMARY") await enqueueKekRewrap(tx, { tenantId, keyId, kekVersion: old.version, now });
  }
  return version;
}

function earliest(a: Date, b: Date): Date {
  return a <= b ? a : b;
}

function newKekForWrapping(algorithm: KekAlgorithm, kek: NewKekMaterial): KekForWrapping {
  return algorithm === "AES_256" ? { algorithm, key: kek.secret } : { algorithm, publicKey: importRsaPublicKey(kek.publicKey!) };
}

/** Wraps a new DEK under the key's primary KEK version. */
async function wrapUnderPrimaryKek(
  context: KmsContext,
  tx: Executor,
  key: KeyScope,
  kekVersion: number,
  justMade: NewKekMaterial | undefined,
  dek: Buffer,
  aad: Buffer,
): Promise<Buffer> {
  if (justMade !== undefined) return wrapDek(newKekForWrapping(key.algorithm, justMade), dek, aad);
  const primary = (await listKekVersions(tx, key.tenantId, key.keyId)).find((k) => k.version === kekVersion);
  if (primary === undefined) throw new Error(`key ${key.keyId} has no row for its primary KEK version ${kekVersion}`);
  if (key.algorithm === "RSA_4096") {
    // RSA wraps with the public key alone: the private key is never unwrapped for this.
    return wrapDek({ algorithm: "RSA_4096", publicKey: importRsaPublicKey(Buffer.from(primary.public_key!)) }, dek, aad);
  }
  return withKek(
    context,
    { ...key, kekAlgorithm: key.algorithm, kekVersion, wrappedKek: primary.wrapped_material, rootKeyId: primary.root_key_id, rootProvider: primary.root_provider },
    (kek) => wrapDek(kek as KekForWrapping, dek, aad),
  );
}

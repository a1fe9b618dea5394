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
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import { KmsError } from "../domain/kms-error.js";
import type { KekAlgorithm, TenantKey } from "../domain/key-model.js";
import { assertKeyManageable, nextVersionNumber } from "../domain/key-rules.js";
import type { Executor } from "../storage/database.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { enqueueKekRewrap } from "../jobs/kek-rewrap.js";
import { insertKekVersion, listKekVersions } from "../storage/kek-version.repository.js";
import { updateKey } from "../storage/key.repository.js";
import { rotateDekInTransaction } from "./dek-rotation.js";
import { generateKekMaterial, type NewKekMaterial } from "./kek-material.js";
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
  try {
    await context.db.transaction().execute(async (tx) => {
      let row = await readKeyRow(tx, tenantId, keyId, true);
      assertKeyManageable({ tenantId, keyId, state: row.state as TenantKey["state"] });
      const now = context.clock.now();
      if (newKek !== undefined) {
        const kekVersion = await replaceKek(context, tx, { tenantId, keyId }, newKek, now);
        row = (await updateKey(tx, tenantId, keyId, { primary_kek_version: kekVersion })) ?? row;
        await appendKeyEvent(tx, { tenantId, keyId, type: "KEK_ROTATED", kekVersion, time: now });
      }
      // The new DEK is wrapped under the (possibly just made) primary KEK, one implementation for every rotation.
      await rotateDekInTransaction(context, tx, row, now);
      await updateKey(tx, tenantId, keyId, { rotation_failure_time: null, rotation_failure_message: null, rotation_failure_attempts: 0 });
    });
  } finally {
    wipe(newKek?.secret);
  }
  return readTenantKey(context.db, tenantId, keyId);
}

interface KeyScope {
  readonly tenantId: string;
  readonly keyId: string;
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

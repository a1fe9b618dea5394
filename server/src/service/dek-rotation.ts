/**
 * A DEK rotation inside a transaction the caller already holds, with the key
 * row locked: a new DEK version, wrapped under the key's primary KEK version,
 * becomes primary; the previous primary becomes DECRYPT_ONLY. The one DEK
 * rotation: rotateKey (requested and scheduled rotations) and
 * RevokeDekVersion (rotating away from a revoked primary) both call it.
 */
import { generateAes256Key } from "../crypto/random.js";
import { wipe } from "../crypto/secure-buffer.js";
import type { KekAlgorithm } from "../domain/key-model.js";
import { nextVersionNumber } from "../domain/key-rules.js";
import { scheduledRotationTime } from "../domain/rotation-schedule.js";
import type { Executor, KeyRow } from "../storage/database.js";
import { insertDekVersion, listDekVersions, updateDekVersion } from "../storage/dek-version.repository.js";
import { findKekVersion } from "../storage/kek-version.repository.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { updateKey } from "../storage/key.repository.js";
import { withKek } from "./kek-access.js";
import { dekWrapContext, kekForWrappingFromPublicKey, wrapDek, type KekForWrapping } from "./kek-material.js";
import type { KmsContext } from "./kms-context.js";

/**
 * Returns the new primary DEK version. Appends DEK_ROTATED: call other events after it.
 * `primaryKek`: the primary KEK when the caller holds it unwrapped already (one it just made), which spares an
 * unwrap — for a customer-managed key, a call to the customer's KMS inside this transaction.
 */
export async function rotateDekInTransaction(context: KmsContext, tx: Executor, key: KeyRow, now: Date, primaryKek?: KekForWrapping): Promise<number> {
  const tenantId = key.tenant_id;
  const keyId = key.key_id;
  const algorithm = key.kek_algorithm as KekAlgorithm;
  const kek = await findKekVersion(tx, tenantId, keyId, key.primary_kek_version);
  if (kek === undefined) throw new Error(`key ${keyId} has no row for its primary KEK version ${key.primary_kek_version}`);

  const version = nextVersionNumber(await listDekVersions(tx, tenantId, keyId));
  const aad = dekWrapContext(tenantId, keyId, version);
  const dek = generateAes256Key();
  let wrapped: Buffer;
  try {
    if (primaryKek !== undefined) {
      wrapped = wrapDek(primaryKek, dek, aad);
    } else if (algorithm === "RSA_4096") {
      // RSA wraps with the public key alone: the private key is never unwrapped for this.
      wrapped = wrapDek(kekForWrappingFromPublicKey(kek.public_key!), dek, aad);
    } else {
      wrapped = await withKek(
        context,
        {
          tenantId,
          keyId,
          keyUid: key.key_uid,
          kekVersion: kek.version,
          kekAlgorithm: algorithm,
          wrappedKek: kek.wrapped_material,
          rootKeyId: kek.root_key_id,
          rootProvider: kek.root_provider,
        },
        (unwrapped) => wrapDek(unwrapped as KekForWrapping, dek, aad),
      );
    }
  } finally {
    wipe(dek);
  }

  await updateDekVersion(tx, tenantId, keyId, key.primary_dek_version, { state: "DECRYPT_ONLY", rotate_time: now });
  await insertDekVersion(tx, {
    tenant_id: tenantId,
    key_id: keyId,
    version,
    state: "PRIMARY",
    kek_version: kek.version,
    wrapped_material: wrapped,
    create_time: now,
    rotate_time: null,
  });
  await updateKey(tx, tenantId, keyId, {
    primary_dek_version: version,
    update_time: now,
    next_rotation_time:
      scheduledRotationTime({
        state: "ENABLED",
        protection: key.protection,
        rotationPolicy: { dekRotationPeriodSeconds: key.dek_rotation_period_seconds, kekRotationPeriodSeconds: key.kek_rotation_period_seconds },
        primaryDekCreateTime: now,
        primaryKekCreateTime: kek.create_time,
      }) ?? null,
  });
  await appendKeyEvent(tx, { tenantId, keyId, type: "DEK_ROTATED", dekVersion: version, kekVersion: kek.version, time: now });
  return version;
}

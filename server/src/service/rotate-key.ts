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
 *
 * A customer-managed (BYOK) key rotates its KEK the same way, the new version
 * wrapped under the tenant's own key (customer-kek-replacement.ts).
 */
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import type { CustomerKeyProvider, KekAlgorithm, TenantKey } from "../domain/key-model.js";
import { assertKeyManageable } from "../domain/key-rules.js";
import { KmsError } from "../domain/kms-error.js";
import { wrapUnderCurrentRootKey } from "../domain/root-key-provider.js";
import type { Executor, KeyRow } from "../storage/database.js";
import { updateKey } from "../storage/key.repository.js";
import { replaceCustomerKek } from "./customer-kek-replacement.js";
import { rotateDekInTransaction } from "./dek-rotation.js";
import { generateKekMaterial, type KekForWrapping } from "./kek-material.js";
import { nextKekVersion, replaceKekInTransaction } from "./kek-replacement.js";
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
  if (input.rotateKek && preview.protection === "CUSTOMER_MANAGED") {
    await rotateCustomerKek(context, { tenantId, keyId });
  } else {
    await rotatePlatform(context, { tenantId, keyId }, input.rotateKek, preview.kek_algorithm as KekAlgorithm);
  }
  return readTenantKey(context.db, tenantId, keyId);
}

interface KeyScope {
  readonly tenantId: string;
  readonly keyId: string;
}

/** A DEK rotation, after a KEK replaced under the master key when `rotateKek`. */
async function rotatePlatform(context: KmsContext, key: KeyScope, rotateKek: boolean, algorithm: KekAlgorithm): Promise<void> {
  const { tenantId, keyId } = key;
  // Key generation (RSA-4096 takes about a second) happens before any lock is taken.
  const newKek = rotateKek ? await generateKekMaterial(algorithm) : undefined;
  try {
    await context.db.transaction().execute(async (tx) => {
      let row = await readKeyRow(tx, tenantId, keyId, true);
      assertKeyManageable({ tenantId, keyId, state: row.state as TenantKey["state"] });
      const now = context.clock.now();
      if (newKek !== undefined) {
        const version = await nextKekVersion(tx, tenantId, keyId);
        const wrapped = await wrapUnderCurrentRootKey(context.rootProvider, newKek.secret, { tenantId, keyId, kekVersion: version });
        const kek = { version, wrappedMaterial: wrapped.wrapped, publicKey: newKek.publicKey, rootProvider: wrapped.rootProvider, rootKeyId: wrapped.rootKeyId };
        row = await replaceKekInTransaction(tx, key, kek, now);
      }
      await finishRotation(context, tx, row, now);
    });
  } finally {
    wipe(newKek?.secret);
  }
}

/**
 * BYOK: the new KEK version is wrapped under the key's own customer key — the
 * customer's KMS wraps with its current key version, so this is how a
 * rotation the tenant made in its KMS reaches the stored KEK — and the old
 * version's DEKs are re-wrapped in the background like a platform key's.
 */
async function rotateCustomerKek(context: KmsContext, key: KeyScope): Promise<void> {
  await replaceCustomerKek(context, key, {
    target(row) {
      if (row.customer_provider === null || row.customer_key_uri === null) {
        throw new KmsError("INTERNAL", `customer-managed key ${key.keyId} has no customer key reference`);
      }
      return { provider: row.customer_provider as CustomerKeyProvider, keyUri: row.customer_key_uri };
    },
    async commit(tx, row, kek, unwrapped, now) {
      assertKeyManageable({ tenantId: key.tenantId, keyId: key.keyId, state: row.state as TenantKey["state"] });
      const updated = await replaceKekInTransaction(tx, key, kek, now);
      await finishRotation(context, tx, updated, now, unwrapped);
    },
  });
}

/** The new DEK is wrapped under the (possibly just made) primary KEK, one implementation for every rotation. */
async function finishRotation(context: KmsContext, tx: Executor, row: KeyRow, now: Date, primaryKek?: KekForWrapping): Promise<void> {
  await rotateDekInTransaction(context, tx, row, now, primaryKek);
  await updateKey(tx, row.tenant_id, row.key_id, { rotation_failure_time: null, rotation_failure_message: null, rotation_failure_attempts: 0 });
}

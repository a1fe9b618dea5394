/**
 * Replacing the KEK of a customer-managed (BYOK) key: RotateKey(rotate_kek)
 * wraps the new KEK version under the key's own customer key (the customer's
 * KMS uses its current key version), UpdateKey(customer_key) under the new one.
 *
 * The new KEK is generated, wrapped by the customer's KMS and unwrapped again
 * before any transaction opens: a key we cannot use (unreachable, access
 * denied, disabled) is refused, saying why, with nothing stored, and no row
 * lock is held across a call to the customer's cloud. The transaction then
 * checks that nothing moved meanwhile — the version number is bound into the
 * wrapped blob, and the key must still point at the customer key the caller
 * planned from — and otherwise prepares afresh.
 */
import { generateAes256Key } from "../crypto/random.js";
import { wipe } from "../crypto/secure-buffer.js";
import type { CustomerKey } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import type { Executor, KeyRow } from "../storage/database.js";
import type { KekForWrapping } from "./kek-material.js";
import { requireCustomerKeys, wrapKekUnderCustomerKeyProven } from "./customer-keys.js";
import { nextKekVersion, type ReplacementKek } from "./kek-replacement.js";
import type { KmsContext } from "./kms-context.js";
import { readKeyRow } from "./key-reader.js";

/** Concurrent rotations of one key are rare; after this many lost races the caller is told to retry. */
const MAX_ATTEMPTS = 3;

export interface CustomerKekPlan {
  /** Which customer key the new KEK version is wrapped under, given the key as read; throws to refuse. */
  target(row: KeyRow): CustomerKey;
  /**
   * Inside the transaction, key row locked: stores the new version (replaceKekInTransaction) and whatever goes
   * with it. `unwrapped` is the new KEK itself, lent for the call (a DEK wrapped under it needs no customer-KMS call).
   */
  commit(tx: Executor, row: KeyRow, kek: ReplacementKek, unwrapped: KekForWrapping, now: Date): Promise<void>;
}

export async function replaceCustomerKek(context: KmsContext, key: { readonly tenantId: string; readonly keyId: string }, plan: CustomerKekPlan): Promise<void> {
  const { tenantId, keyId } = key;
  const customerKeys = requireCustomerKeys(context);
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const preview = await readKeyRow(context.db, tenantId, keyId);
    const customer = plan.target(preview);
    const version = await nextKekVersion(context.db, tenantId, keyId);
    // BYOK KEKs are AES-256 only (CreateKey refuses RSA), so the secret is the whole KEK.
    const secret = generateAes256Key();
    try {
      const wrapped = await wrapKekUnderCustomerKeyProven(customerKeys, customer, secret, { tenantId, keyId, kekVersion: version });
      const committed = await context.db.transaction().execute(async (tx) => {
        const row = await readKeyRow(tx, tenantId, keyId, true);
        const moved =
          row.customer_provider !== preview.customer_provider ||
          row.customer_key_uri !== preview.customer_key_uri ||
          (await nextKekVersion(tx, tenantId, keyId)) !== version;
        if (moved) return false;
        const kek: ReplacementKek = { version, wrappedMaterial: wrapped, publicKey: null, rootProvider: customer.provider, rootKeyId: customer.keyUri };
        await plan.commit(tx, row, kek, { algorithm: "AES_256", key: secret }, context.clock.now());
        return true;
      });
      if (committed) return;
    } finally {
      wipe(secret);
    }
  }
  throw new KmsError("INTERNAL", `key ${keyId} was changed by other requests ${MAX_ATTEMPTS} times while its new KEK version was being prepared; retry`);
}

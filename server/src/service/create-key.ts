/**
 * CreateKey: the KEK (version 1, wrapped by the master key) and DEK version 1
 * (wrapped by the KEK), written in one transaction. All cryptography happens
 * before the transaction opens, so a slow RSA key generation never holds locks.
 */
import { generateAes256Key, randomBytes } from "../crypto/random.js";
import { wipe } from "../crypto/secure-buffer.js";
import { requireValidId } from "../domain/identifiers.js";
import type { CustomerKey, KekAlgorithm, TenantKey } from "../domain/key-model.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { resolveLifecyclePolicy, type LifecyclePolicyInput } from "../domain/lifecycle-policy.js";
import { wrapUnderCurrentRootKey } from "../domain/root-key-provider.js";
import { addSeconds, resolveRotationPolicy, type RotationPolicyInput } from "../domain/rotation-policy.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { insertDekVersion } from "../storage/dek-version.repository.js";
import { insertKekVersion } from "../storage/kek-version.repository.js";
import { insertKey } from "../storage/key.repository.js";
import { insertTenantIfAbsent } from "../storage/tenant.repository.js";
import { dekWrapContext, generateKekMaterial, wrapDek, type KekForWrapping } from "./kek-material.js";
import { importRsaPublicKey } from "../crypto/rsa-oaep.js";
import type { KmsContext } from "./kms-context.js";
import { readTenantKey } from "./key-reader.js";
import { checkCustomerKeyRequest, probeCustomerKey, requireCustomerKeys, wrapKekUnderCustomerKey } from "./customer-keys.js";

export const DESCRIPTION_MAX_LENGTH = 256;

export interface CreateKeyInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly kekAlgorithm?: KekAlgorithm | undefined;
  readonly rotationPolicy?: RotationPolicyInput | undefined;
  readonly description?: string | undefined;
  readonly lifecyclePolicy?: LifecyclePolicyInput | undefined;
  /** BYOK: each KEK version is wrapped by this key in the tenant's own KMS (enterprise plan only; AES-256 KEKs only). */
  readonly customerKey?: CustomerKey | undefined;
}

export async function createKey(context: KmsContext, input: CreateKeyInput): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const description = input.description ?? "";
  if (description.length > DESCRIPTION_MAX_LENGTH) {
    throw invalidField("description", `must be at most ${DESCRIPTION_MAX_LENGTH} characters`, { maxLength: String(DESCRIPTION_MAX_LENGTH) });
  }
  const policy = resolveRotationPolicy(input.rotationPolicy);
  const lifecycle = resolveLifecyclePolicy(input.lifecyclePolicy);
  const algorithm = input.kekAlgorithm ?? "AES_256";
  const now = context.clock.now();
  const customer = input.customerKey === undefined ? undefined : await checkCustomerKey(context, tenantId, keyId, algorithm, input.customerKey);

  const kek = await generateKekMaterial(algorithm);
  const dek = generateAes256Key();
  try {
    const kekWrap =
      customer === undefined
        ? await wrapUnderCurrentRootKey(context.rootProvider, kek.secret, { tenantId, keyId, kekVersion: 1 })
        : {
            wrapped: await wrapKekUnderCustomerKey(requireCustomerKeys(context), customer, kek.secret, { tenantId, keyId, kekVersion: 1 }),
            rootProvider: customer.provider,
            rootKeyId: customer.keyUri,
          };
    const forWrapping: KekForWrapping =
      algorithm === "AES_256" ? { algorithm, key: kek.secret } : { algorithm, publicKey: importRsaPublicKey(kek.publicKey!) };
    const wrappedDek = wrapDek(forWrapping, dek, dekWrapContext(tenantId, keyId, 1));

    await context.db.transaction().execute(async (tx) => {
      await insertTenantIfAbsent(tx, tenantId, now);
      const outcome = await insertKey(tx, {
        tenant_id: tenantId,
        key_id: keyId,
        key_uid: randomBytes(16),
        description,
        kek_algorithm: algorithm,
        protection: customer === undefined ? "PLATFORM_MANAGED" : "CUSTOMER_MANAGED",
        customer_provider: customer?.provider ?? null,
        customer_key_uri: customer?.keyUri ?? null,
        customer_key_last_success_time: customer === undefined ? null : now,
        state: "ENABLED",
        dek_rotation_period_seconds: policy.dekRotationPeriodSeconds,
        kek_rotation_period_seconds: policy.kekRotationPeriodSeconds,
        primary_dek_version: 1,
        primary_kek_version: 1,
        create_time: now,
        update_time: now,
        revoke_time: null,
        dek_grace_period_seconds: lifecycle.dekGracePeriodSeconds,
        decrypt_quiet_window_seconds: lifecycle.decryptQuietWindowSeconds,
        revocation_waiting_period_seconds: lifecycle.revocationWaitingPeriodSeconds,
        next_rotation_time: addSeconds(now, Math.min(policy.dekRotationPeriodSeconds, policy.kekRotationPeriodSeconds)),
      });
      if (outcome === "already-exists") {
        throw new KmsError("KEY_ALREADY_EXISTS", `key_id: tenant ${tenantId} already has a key ${keyId}`, { field: "key_id" });
      }
      await insertKekVersion(tx, {
        tenant_id: tenantId,
        key_id: keyId,
        version: 1,
        state: "PRIMARY",
        wrapped_material: kekWrap.wrapped,
        public_key: kek.publicKey,
        root_provider: kekWrap.rootProvider,
        root_key_id: kekWrap.rootKeyId,
        create_time: now,
        destroy_time: null,
      });
      await insertDekVersion(tx, {
        tenant_id: tenantId,
        key_id: keyId,
        version: 1,
        state: "PRIMARY",
        kek_version: 1,
        wrapped_material: wrappedDek,
        create_time: now,
        rotate_time: null,
      });
      await appendKeyEvent(tx, { tenantId, keyId, type: "KEY_CREATED", dekVersion: 1, kekVersion: 1, time: now });
    });
  } finally {
    wipe(kek.secret, dek);
  }
  return readTenantKey(context.db, tenantId, keyId);
}

/**
 * The BYOK checks, before anything is generated or stored: the tenant's plan,
 * the key reference's shape, the KEK algorithm, and one wrap+unwrap probe of
 * the customer key (so a key we cannot use is refused now, saying why).
 */
async function checkCustomerKey(context: KmsContext, tenantId: string, keyId: string, algorithm: KekAlgorithm, customerKey: CustomerKey): Promise<CustomerKey> {
  const { customerKeys, customer } = checkCustomerKeyRequest(context, tenantId, customerKey);
  if (algorithm !== "AES_256") throw invalidField("kek_algorithm", "a customer-managed key must use an AES-256 KEK");
  await probeCustomerKey(customerKeys, customer, `creating key ${keyId}`);
  return customer;
}

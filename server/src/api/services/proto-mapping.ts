/** Maps between the domain model and the matih.kms.v1 messages, both ways. */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromDate, type Duration } from "@bufbuild/protobuf/wkt";
import {
  DekVersionSchema,
  DekVersionState as ProtoDekVersionState,
  KekAlgorithm as ProtoKekAlgorithm,
  KekVersionSchema,
  KekVersionState as ProtoKekVersionState,
  KeyProtection as ProtoKeyProtection,
  CustomerKeyProvider as ProtoCustomerKeyProvider,
  CustomerKeySchema,
  CustomerKeyErrorClass as ProtoCustomerKeyErrorClass,
  CustomerKeyHealthSchema,
  KeySchema,
  KeyState as ProtoKeyState,
  LifecyclePolicySchema,
  RotationFailureSchema,
  type CustomerKey as ProtoCustomerKey,
  type LifecyclePolicy,
  KeyStatusSchema,
  RotationPolicySchema,
  DatasetCountSchema,
  DatasetProgressSchema,
  DatasetSchema,
  DekVersionCountSchema,
  DekVersionHoldbackSchema,
  StoreKind as ProtoStoreKind,
  type Dataset as ProtoDataset,
  type Key,
  type KeyStatus,
  type RotationPolicy,
} from "../../../../gen/matih/kms/v1/resources_pb.js";
import type {
  CustomerKey,
  CustomerKeyErrorClass,
  CustomerKeyHealth,
  CustomerKeyProvider,
  DekVersionState,
  KekAlgorithm,
  KekVersionState,
  KeyProtection,
  KeyState,
  RotationFailure,
  TenantKey,
} from "../../domain/key-model.js";
import type { LifecyclePolicyInput } from "../../domain/lifecycle-policy.js";
import type { Dataset, DatasetProgress, StoreKind } from "../../domain/dataset.js";
import type { DekVersionHoldback } from "../../domain/dek-purge-rules.js";
import { nextDekRotationTime, nextKekRotationTime } from "../../domain/key-rules.js";
import { invalidField } from "../../domain/kms-error.js";
import type { RotationPolicyInput } from "../../domain/rotation-policy.js";
import type { KeyStatusReport } from "../../service/encryption-status.js";

const KEY_STATE: Record<KeyState, ProtoKeyState> = {
  ENABLED: ProtoKeyState.ENABLED,
  REVOKED: ProtoKeyState.REVOKED,
  DESTROYED: ProtoKeyState.DESTROYED,
};
const KEK_ALGORITHM: Record<KekAlgorithm, ProtoKekAlgorithm> = {
  AES_256: ProtoKekAlgorithm.AES_256,
  RSA_4096: ProtoKekAlgorithm.RSA_4096,
};
const PROTECTION: Record<KeyProtection, ProtoKeyProtection> = {
  PLATFORM_MANAGED: ProtoKeyProtection.PLATFORM_MANAGED,
  CUSTOMER_MANAGED: ProtoKeyProtection.CUSTOMER_MANAGED,
};
const KEK_VERSION_STATE: Record<KekVersionState, ProtoKekVersionState> = {
  PRIMARY: ProtoKekVersionState.PRIMARY,
  RETIRING: ProtoKekVersionState.RETIRING,
  DESTROYED: ProtoKekVersionState.DESTROYED,
};
const DEK_VERSION_STATE: Record<DekVersionState, ProtoDekVersionState> = {
  PRIMARY: ProtoDekVersionState.PRIMARY,
  DECRYPT_ONLY: ProtoDekVersionState.DECRYPT_ONLY,
  PENDING_PURGE: ProtoDekVersionState.PENDING_PURGE,
  PURGED: ProtoDekVersionState.PURGED,
  REVOKED: ProtoDekVersionState.REVOKED,
};
const CUSTOMER_PROVIDER: Record<CustomerKeyProvider, ProtoCustomerKeyProvider> = {
  AWS_KMS: ProtoCustomerKeyProvider.AWS_KMS,
  AZURE_KEY_VAULT: ProtoCustomerKeyProvider.AZURE_KEY_VAULT,
  GCP_KMS: ProtoCustomerKeyProvider.GCP_KMS,
};

export function keyToProto(key: TenantKey): Key {
  return create(KeySchema, {
    tenantId: key.tenantId,
    keyId: key.keyId,
    description: key.description,
    kekAlgorithm: KEK_ALGORITHM[key.kekAlgorithm],
    protection: PROTECTION[key.protection],
    state: KEY_STATE[key.state],
    rotationPolicy: create(RotationPolicySchema, {
      dekRotationPeriod: seconds(key.rotationPolicy.dekRotationPeriodSeconds),
      kekRotationPeriod: seconds(key.rotationPolicy.kekRotationPeriodSeconds),
    }),
    primaryDekVersion: key.primaryDekVersion,
    primaryKekVersion: key.primaryKekVersion,
    kekVersions: key.kekVersions.map((v) =>
      create(KekVersionSchema, {
        version: v.version,
        state: KEK_VERSION_STATE[v.state],
        createTime: timestampFromDate(v.createTime),
        ...(v.destroyTime === undefined ? {} : { destroyTime: timestampFromDate(v.destroyTime) }),
        rewrappedDekCount: BigInt(v.rewrappedDekCount),
        totalDekCount: BigInt(v.totalDekCount),
      }),
    ),
    dekVersions: dekVersionsToProto(key),
    createTime: timestampFromDate(key.createTime),
    updateTime: timestampFromDate(key.updateTime),
    ...(key.state === "ENABLED"
      ? { nextDekRotationTime: timestampFromDate(nextDekRotationTime(key)), nextKekRotationTime: timestampFromDate(nextKekRotationTime(key)) }
      : {}),
    ...(key.revokeTime === undefined ? {} : { revokeTime: timestampFromDate(key.revokeTime) }),
    lifecyclePolicy: create(LifecyclePolicySchema, {
      dekGracePeriod: seconds(key.lifecyclePolicy.dekGracePeriodSeconds),
      decryptQuietWindow: seconds(key.lifecyclePolicy.decryptQuietWindowSeconds),
      revocationWaitingPeriod: seconds(key.lifecyclePolicy.revocationWaitingPeriodSeconds),
    }),
    ...(key.scheduledDestroyTime === undefined ? {} : { scheduledDestroyTime: timestampFromDate(key.scheduledDestroyTime) }),
    ...(key.destroyTime === undefined ? {} : { destroyTime: timestampFromDate(key.destroyTime) }),
    ...(key.customerKey === undefined
      ? {}
      : { customerKey: create(CustomerKeySchema, { provider: CUSTOMER_PROVIDER[key.customerKey.provider], keyUri: key.customerKey.keyUri }) }),
    ...(key.lastRotationFailure === undefined ? {} : { lastRotationFailure: rotationFailureToProto(key.lastRotationFailure) }),
  });
}

export function rotationFailureToProto(failure: RotationFailure) {
  return create(RotationFailureSchema, { time: timestampFromDate(failure.time), message: failure.message, attempts: failure.attempts });
}

function dekVersionsToProto(key: TenantKey) {
  return key.dekVersions.map((v) =>
    create(DekVersionSchema, {
      version: v.version,
      state: DEK_VERSION_STATE[v.state],
      kekVersion: v.kekVersion,
      createTime: timestampFromDate(v.createTime),
      ...(v.rotateTime === undefined ? {} : { rotateTime: timestampFromDate(v.rotateTime) }),
      ...(v.lastDecryptTime === undefined ? {} : { lastDecryptTime: timestampFromDate(v.lastDecryptTime) }),
      ...(v.purgeTime === undefined ? {} : { purgeTime: timestampFromDate(v.purgeTime) }),
      ...(v.revokeTime === undefined ? {} : { revokeTime: timestampFromDate(v.revokeTime) }),
    }),
  );
}

export function keyStatusToProto(report: KeyStatusReport): KeyStatus {
  const full = keyToProto(report.key);
  return create(KeyStatusSchema, {
    keyId: full.keyId,
    state: full.state,
    kekAlgorithm: full.kekAlgorithm,
    protection: full.protection,
    primaryDekVersion: full.primaryDekVersion,
    primaryDekAge: seconds(report.primaryDekAgeSeconds),
    primaryKekVersion: full.primaryKekVersion,
    primaryKekAge: seconds(report.primaryKekAgeSeconds),
    nextDekRotationTime: timestampFromDate(report.nextDekRotationTime),
    nextKekRotationTime: timestampFromDate(report.nextKekRotationTime),
    rotationOverdue: report.rotationOverdue,
    dekVersions: full.dekVersions,
    kekVersions: full.kekVersions,
    ...(full.lastRotationFailure === undefined ? {} : { lastRotationFailure: full.lastRotationFailure }),
    ...(full.scheduledDestroyTime === undefined ? {} : { scheduledDestroyTime: full.scheduledDestroyTime }),
    dekVersionHoldbacks: report.holdbacks.map(holdbackToProto),
    datasets: report.datasets.map(datasetProgressToProto),
    ...(report.key.customerKeyHealth === undefined ? {} : { customerKeyHealth: customerKeyHealthToProto(report.key.customerKeyHealth) }),
  });
}

const CUSTOMER_KEY_ERROR_CLASS: Record<CustomerKeyErrorClass, ProtoCustomerKeyErrorClass> = {
  REVOKED: ProtoCustomerKeyErrorClass.REVOKED,
  UNREACHABLE: ProtoCustomerKeyErrorClass.UNREACHABLE,
  PERMISSION_DENIED: ProtoCustomerKeyErrorClass.PERMISSION_DENIED,
  OTHER: ProtoCustomerKeyErrorClass.OTHER,
};

function customerKeyHealthToProto(health: CustomerKeyHealth) {
  return create(CustomerKeyHealthSchema, {
    ...(health.lastSuccessTime === undefined ? {} : { lastSuccessTime: timestampFromDate(health.lastSuccessTime) }),
    ...(health.lastErrorTime === undefined ? {} : { lastErrorTime: timestampFromDate(health.lastErrorTime) }),
    ...(health.lastErrorClass === undefined ? {} : { lastErrorClass: CUSTOMER_KEY_ERROR_CLASS[health.lastErrorClass] }),
    lastError: health.lastError ?? "",
  });
}

function holdbackToProto(holdback: DekVersionHoldback) {
  return create(DekVersionHoldbackSchema, {
    version: holdback.version,
    state: DEK_VERSION_STATE[holdback.state],
    graceRemaining: seconds(holdback.graceRemainingSeconds),
    datasetsHolding: holdback.datasetsHolding.map((d) => create(DatasetCountSchema, { datasetId: d.datasetId, ciphertexts: BigInt(d.ciphertexts) })),
    ...(holdback.lastDecryptTime === undefined ? {} : { lastDecryptTime: timestampFromDate(holdback.lastDecryptTime) }),
    quietRemaining: seconds(holdback.quietRemainingSeconds),
  });
}

function datasetProgressToProto(progress: DatasetProgress) {
  return create(DatasetProgressSchema, {
    datasetId: progress.datasetId,
    storeKind: STORE_KIND[progress.storeKind],
    totalCiphertexts: BigInt(progress.totalCiphertexts),
    underPrimary: BigInt(progress.underPrimary),
    ...(progress.lastReportTime === undefined ? {} : { lastReportTime: timestampFromDate(progress.lastReportTime) }),
  });
}

const STORE_KIND: Record<StoreKind, ProtoStoreKind> = {
  POSTGRES: ProtoStoreKind.POSTGRES,
  REDIS: ProtoStoreKind.REDIS,
  KAFKA: ProtoStoreKind.KAFKA,
  S3: ProtoStoreKind.S3,
  ELASTICSEARCH: ProtoStoreKind.ELASTICSEARCH,
  OTHER: ProtoStoreKind.OTHER,
};

/** Undefined for STORE_KIND_UNSPECIFIED (the service refuses it, naming the field). */
export function storeKindFromProto(value: ProtoStoreKind): StoreKind | undefined {
  return (Object.keys(STORE_KIND) as StoreKind[]).find((kind) => STORE_KIND[kind] === value);
}

export function datasetToProto(dataset: Dataset): ProtoDataset {
  return create(DatasetSchema, {
    tenantId: dataset.tenantId,
    keyId: dataset.keyId,
    datasetId: dataset.datasetId,
    storeKind: STORE_KIND[dataset.storeKind],
    description: dataset.description,
    createTime: timestampFromDate(dataset.createTime),
    ...(dataset.lastReportTime === undefined ? {} : { lastReportTime: timestampFromDate(dataset.lastReportTime) }),
    counts: [...dataset.counts]
      .sort(([a], [b]) => a - b)
      .map(([dekVersion, ciphertexts]) => create(DekVersionCountSchema, { dekVersion, ciphertexts: BigInt(ciphertexts) })),
  });
}

function seconds(value: number): Duration {
  return create(DurationSchema, { seconds: BigInt(value) });
}

export function kekAlgorithmFromProto(value: ProtoKekAlgorithm): KekAlgorithm | undefined {
  if (value === ProtoKekAlgorithm.UNSPECIFIED) return undefined;
  const found = (Object.keys(KEK_ALGORITHM) as KekAlgorithm[]).find((k) => KEK_ALGORITHM[k] === value);
  if (found === undefined) throw invalidField("kek_algorithm", "must be KEK_ALGORITHM_AES_256 or KEK_ALGORITHM_RSA_4096");
  return found;
}

export function keyStateFilterFromProto(value: ProtoKeyState): KeyState | undefined {
  if (value === ProtoKeyState.UNSPECIFIED) return undefined;
  const found = (Object.keys(KEY_STATE) as KeyState[]).find((k) => KEY_STATE[k] === value);
  if (found === undefined) throw invalidField("state", "must be KEY_STATE_ENABLED, KEY_STATE_REVOKED or KEY_STATE_DESTROYED");
  return found;
}

export function rotationPolicyFromProto(policy: RotationPolicy | undefined): RotationPolicyInput | undefined {
  if (policy === undefined) return undefined;
  return {
    dekRotationPeriodSeconds: durationSeconds("rotation_policy.dek_rotation_period", policy.dekRotationPeriod),
    kekRotationPeriodSeconds: durationSeconds("rotation_policy.kek_rotation_period", policy.kekRotationPeriod),
  };
}

export function lifecyclePolicyFromProto(policy: LifecyclePolicy | undefined): LifecyclePolicyInput | undefined {
  if (policy === undefined) return undefined;
  return {
    dekGracePeriodSeconds: durationSeconds("lifecycle_policy.dek_grace_period", policy.dekGracePeriod),
    decryptQuietWindowSeconds: durationSeconds("lifecycle_policy.decrypt_quiet_window", policy.decryptQuietWindow),
    revocationWaitingPeriodSeconds: durationSeconds("lifecycle_policy.revocation_waiting_period", policy.revocationWaitingPeriod),
  };
}

export function customerKeyFromProto(customerKey: ProtoCustomerKey | undefined): CustomerKey | undefined {
  if (customerKey === undefined) return undefined;
  const provider = (Object.keys(CUSTOMER_PROVIDER) as CustomerKeyProvider[]).find((p) => CUSTOMER_PROVIDER[p] === customerKey.provider);
  if (provider === undefined) {
    throw invalidField("customer_key.provider", "must be CUSTOMER_KEY_PROVIDER_AWS_KMS, CUSTOMER_KEY_PROVIDER_AZURE_KEY_VAULT or CUSTOMER_KEY_PROVIDER_GCP_KMS");
  }
  return { provider, keyUri: customerKey.keyUri };
}

function durationSeconds(field: string, duration: Duration | undefined): number | undefined {
  if (duration === undefined) return undefined;
  if (duration.nanos !== 0) throw invalidField(field, "must be a whole number of seconds");
  const value = Number(duration.seconds);
  if (!Number.isSafeInteger(value)) throw invalidField(field, "is out of range");
  return value;
}

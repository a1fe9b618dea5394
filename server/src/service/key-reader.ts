/** Reads tenant keys from storage and maps rows to the domain model. */
import type { Selectable } from "kysely";
import type { CustomerKeyErrorClass, CustomerKeyProvider, DekVersionInfo, DekVersionState, KekAlgorithm, KekVersionInfo, KekVersionState, KeyProtection, KeyState, TenantKey } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import type { DekVersionsTable, Executor, KekVersionsTable, KeysTable } from "../storage/database.js";
import { listDekVersions, listDekVersionsForKeys } from "../storage/dek-version.repository.js";
import { listKekVersions, listKekVersionsForKeys } from "../storage/kek-version.repository.js";
import { findKey } from "../storage/key.repository.js";
import { tenantExists } from "../storage/tenant.repository.js";

type KeyRow = Selectable<KeysTable>;
type KekRow = Selectable<KekVersionsTable>;
type DekRow = Selectable<DekVersionsTable>;

export function keyNotFound(tenantId: string, keyId: string): KmsError {
  return new KmsError("KEY_NOT_FOUND", `key_id: tenant ${tenantId} has no key ${keyId}`, { field: "key_id" });
}

export function tenantNotFound(tenantId: string): KmsError {
  return new KmsError("TENANT_NOT_FOUND", `tenant_id: unknown tenant ${tenantId} (it has no keys)`, { field: "tenant_id" });
}

/** Throws KEY_NOT_FOUND (or TENANT_NOT_FOUND, when the tenant has no keys at all). */
export async function notFoundError(db: Executor, tenantId: string, keyId: string): Promise<KmsError> {
  return (await tenantExists(db, tenantId)) ? keyNotFound(tenantId, keyId) : tenantNotFound(tenantId);
}

export async function readKeyRow(db: Executor, tenantId: string, keyId: string, forUpdate = false): Promise<KeyRow> {
  const row = await findKey(db, tenantId, keyId, { forUpdate });
  if (row === undefined) throw await notFoundError(db, tenantId, keyId);
  return row;
}

export async function readTenantKey(db: Executor, tenantId: string, keyId: string): Promise<TenantKey> {
  const row = await readKeyRow(db, tenantId, keyId);
  const [keks, deks] = await Promise.all([listKekVersions(db, tenantId, keyId), listDekVersions(db, tenantId, keyId)]);
  return toTenantKey(row, keks, deks);
}

/** Maps many key rows with a constant number of queries. */
export async function readTenantKeys(db: Executor, rows: readonly KeyRow[]): Promise<TenantKey[]> {
  const first = rows[0];
  if (first === undefined) return [];
  const keyIds = rows.map((r) => r.key_id);
  const [keks, deks] = await Promise.all([
    listKekVersionsForKeys(db, first.tenant_id, keyIds),
    listDekVersionsForKeys(db, first.tenant_id, keyIds),
  ]);
  return rows.map((row) =>
    toTenantKey(
      row,
      keks.filter((k) => k.key_id === row.key_id),
      deks.filter((d) => d.key_id === row.key_id),
    ),
  );
}

export function toTenantKey(row: KeyRow, keks: readonly KekRow[], deks: readonly DekRow[]): TenantKey {
  return {
    tenantId: row.tenant_id,
    keyId: row.key_id,
    description: row.description,
    kekAlgorithm: row.kek_algorithm as KekAlgorithm,
    protection: row.protection as KeyProtection,
    state: row.state as KeyState,
    rotationPolicy: {
      dekRotationPeriodSeconds: row.dek_rotation_period_seconds,
      kekRotationPeriodSeconds: row.kek_rotation_period_seconds,
    },
    primaryDekVersion: row.primary_dek_version,
    primaryKekVersion: row.primary_kek_version,
    kekVersions: [...keks].sort((a, b) => a.version - b.version).map(toKekVersionInfo),
    dekVersions: [...deks].sort((a, b) => a.version - b.version).map(toDekVersionInfo),
    createTime: row.create_time,
    updateTime: row.update_time,
    revokeTime: row.revoke_time ?? undefined,
    lifecyclePolicy: {
      dekGracePeriodSeconds: row.dek_grace_period_seconds,
      decryptQuietWindowSeconds: row.decrypt_quiet_window_seconds,
      revocationWaitingPeriodSeconds: row.revocation_waiting_period_seconds,
    },
    scheduledDestroyTime: row.scheduled_destroy_time ?? undefined,
    destroyTime: row.destroy_time ?? undefined,
    customerKey:
      row.customer_provider === null || row.customer_key_uri === null
        ? undefined
        : { provider: row.customer_provider as CustomerKeyProvider, keyUri: row.customer_key_uri },
    customerKeyHealth:
      row.customer_provider === null
        ? undefined
        : {
            lastSuccessTime: row.customer_key_last_success_time ?? undefined,
            lastErrorTime: row.customer_key_last_error_time ?? undefined,
            lastErrorClass: (row.customer_key_last_error_class ?? undefined) as CustomerKeyErrorClass | undefined,
            lastError: row.customer_key_last_error ?? undefined,
          },
    lastRotationFailure:
      row.rotation_failure_time === null
        ? undefined
        : { time: row.rotation_failure_time, message: row.rotation_failure_message ?? "", attempts: row.rotation_failure_attempts },
  };
}

function toKekVersionInfo(row: KekRow): KekVersionInfo {
  return {
    version: row.version,
    state: row.state as KekVersionState,
    createTime: row.create_time,
    destroyTime: row.destroy_time ?? undefined,
    retireTime: row.retire_time ?? undefined,
    rewrappedDekCount: row.rewrapped_dek_count,
    totalDekCount: row.total_dek_count,
  };
}

function toDekVersionInfo(row: DekRow): DekVersionInfo {
  return {
    version: row.version,
    state: row.state as DekVersionState,
    kekVersion: row.kek_version,
    createTime: row.create_time,
    rotateTime: row.rotate_time ?? undefined,
    lastDecryptTime: row.last_decrypt_time ?? undefined,
    purgeTime: row.purge_time ?? undefined,
    revokeTime: row.revoke_time ?? undefined,
  };
}

/** Rows for storage tests: a complete key (tenant, key, KEK v1, DEK v1) in one call. */
import { randomBytes } from "node:crypto";
import type { Executor, NewDekVersionRow, NewKekVersionRow, NewKeyRow } from "../database.js";
import { insertDekVersion } from "../dek-version.repository.js";
import { insertKekVersion } from "../kek-version.repository.js";
import { insertKey } from "../key.repository.js";
import { insertTenantIfAbsent } from "../tenant.repository.js";

/** A fixed instant with milliseconds, so a lost fraction shows. */
export const T0 = new Date("2025-03-04T05:06:07.891Z");

export function at(secondsAfterT0: number): Date {
  return new Date(T0.getTime() + secondsAfterT0 * 1000);
}

/** Bytes that include 0x00 and 0xff, so an encoding slip shows. */
export function material(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (seed * 31 + i * 17) & 0xff;
  bytes[0] = 0x00;
  bytes[length - 1] = 0xff;
  return bytes;
}

export function keyRow(tenantId: string, keyId: string, overrides: Partial<NewKeyRow> = {}): NewKeyRow {
  return {
    tenant_id: tenantId,
    key_id: keyId,
    key_uid: randomBytes(16),
    description: `key ${keyId}`,
    kek_algorithm: "AES_256",
    protection: "PLATFORM_MANAGED",
    state: "ENABLED",
    dek_rotation_period_seconds: 30 * 86_400,
    kek_rotation_period_seconds: 90 * 86_400,
    primary_dek_version: 1,
    primary_kek_version: 1,
    create_time: T0,
    update_time: T0,
    revoke_time: null,
    dek_grace_period_seconds: 7 * 86_400,
    decrypt_quiet_window_seconds: 7 * 86_400,
    revocation_waiting_period_seconds: 30 * 86_400,
    scheduled_destroy_time: null,
    destroy_time: null,
    next_rotation_time: null,
    rotation_failure_time: null,
    rotation_failure_message: null,
    rotation_failure_attempts: 0,
    customer_provider: overrides.protection === "CUSTOMER_MANAGED" ? "AWS_KMS" : null,
    customer_key_uri: overrides.protection === "CUSTOMER_MANAGED" ? "arn:aws:kms:eu-west-1:111122223333:key/test" : null,
    customer_key_last_success_time: null,
    customer_key_last_error_time: null,
    customer_key_last_error_class: null,
    customer_key_last_error: null,
    ...overrides,
  };
}

export function kekVersionRow(
  tenantId: string,
  keyId: string,
  version: number,
  overrides: Partial<NewKekVersionRow> = {},
): NewKekVersionRow {
  return {
    tenant_id: tenantId,
    key_id: keyId,
    version,
    state: "PRIMARY",
    wrapped_material: material(40, version),
    public_key: null,
    root_provider: "local",
    root_key_id: "local-1",
    create_time: T0,
    destroy_time: null,
    retire_time: null,
    rewrapped_dek_count: 0,
    total_dek_count: 0,
    ...overrides,
  };
}

export function dekVersionRow(
  tenantId: string,
  keyId: string,
  version: number,
  overrides: Partial<NewDekVersionRow> = {},
): NewDekVersionRow {
  return {
    tenant_id: tenantId,
    key_id: keyId,
    version,
    state: "PRIMARY",
    kek_version: 1,
    wrapped_material: material(60, 100 + version),
    create_time: T0,
    rotate_time: null,
    last_decrypt_time: null,
    purge_time: null,
    revoke_time: null,
    ...overrides,
  };
}

/** Inserts the tenant (if new), the key, KEK version 1 and DEK version 1. */
export async function seedKey(
  db: Executor,
  tenantId: string,
  keyId: string,
  overrides: Partial<NewKeyRow> = {},
): Promise<NewKeyRow> {
  const row = keyRow(tenantId, keyId, overrides);
  await insertTenantIfAbsent(db, tenantId, T0);
  const outcome = await insertKey(db, row);
  if (outcome !== "inserted") throw new Error(`fixture key ${tenantId}/${keyId} already exists`);
  await insertKekVersion(db, kekVersionRow(tenantId, keyId, 1));
  await insertDekVersion(db, dekVersionRow(tenantId, keyId, 1));
  return row;
}

/** The SQLSTATE of a database error (both engines put it in `code`). */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

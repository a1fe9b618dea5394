/**
 * Every rule on a key's states and versions, in one place. Pure functions over
 * the plain data of key-model.ts.
 */
import { KmsError } from "./kms-error.js";
import type { DekVersionInfo, DekVersionState, KekVersionInfo, KeyState, TenantKey } from "./key-model.js";
import { addSeconds } from "./rotation-policy.js";

/** A key is usable for GenerateDataKey and Decrypt only while ENABLED. */
export function assertKeyUsable(tenantId: string, keyId: string, state: KeyState): void {
  if (state === "REVOKED") {
    throw new KmsError("KEY_REVOKED", `key ${keyId} of tenant ${tenantId} is revoked: it can neither encrypt nor decrypt`);
  }
  if (state === "DESTROYED") {
    throw new KmsError("KEY_DESTROYED", `key ${keyId} of tenant ${tenantId} is destroyed: its material is erased`);
  }
}

/** Key management (rotate, revoke) is refused on a key that is already past it. */
export function assertKeyManageable(key: Pick<TenantKey, "tenantId" | "keyId" | "state">): void {
  assertKeyUsable(key.tenantId, key.keyId, key.state);
}

/** Every DEK version whose material still exists may decrypt; a purged or revoked one may not. */
export function assertDekVersionDecryptable(keyId: string, version: number, state: DekVersionState): void {
  if (state === "REVOKED") {
    throw new KmsError("DEK_VERSION_REVOKED", `reference: DEK version ${version} of key ${keyId} is revoked`, { field: "reference" });
  }
  if (state === "PURGED") {
    throw new KmsError("DEK_VERSION_UNUSABLE", `reference: DEK version ${version} of key ${keyId} is purged: its material is erased`, {
      field: "reference",
    });
  }
}

export function primaryDekVersion(key: TenantKey): DekVersionInfo {
  const found = key.dekVersions.find((v) => v.version === key.primaryDekVersion);
  if (found === undefined) throw new Error(`key ${key.keyId} has no row for its primary DEK version`);
  return found;
}

export function primaryKekVersion(key: TenantKey): KekVersionInfo {
  const found = key.kekVersions.find((v) => v.version === key.primaryKekVersion);
  if (found === undefined) throw new Error(`key ${key.keyId} has no row for its primary KEK version`);
  return found;
}

/** Rotation is due a full period after the primary version was made. */
export function nextDekRotationTime(key: TenantKey): Date {
  return addSeconds(primaryDekVersion(key).createTime, key.rotationPolicy.dekRotationPeriodSeconds);
}

export function nextKekRotationTime(key: TenantKey): Date {
  return addSeconds(primaryKekVersion(key).createTime, key.rotationPolicy.kekRotationPeriodSeconds);
}

/** The earlier of the next DEK and KEK rotations. */
export function nextRotationTime(key: TenantKey): Date {
  const dek = nextDekRotationTime(key);
  const kek = nextKekRotationTime(key);
  return dek <= kek ? dek : kek;
}

/** Only an enabled key rotates; a revoked or destroyed one is never "overdue". */
export function isRotationOverdue(key: TenantKey, now: Date): boolean {
  if (key.state !== "ENABLED") return false;
  return nextDekRotationTime(key) <= now || nextKekRotationTime(key) <= now;
}

export function nextVersionNumber(versions: readonly { version: number }[]): number {
  return versions.reduce((max, v) => Math.max(max, v.version), 0) + 1;
}

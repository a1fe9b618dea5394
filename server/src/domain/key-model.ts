/**
 * The tenant key: one KEK with its chain of versions, and the chain of DEK
 * versions it wraps. Plain data; the rules over it live beside it in
 * key-rules.ts, so every invariant on states is checked in one place.
 */
import type { LifecyclePolicy } from "./lifecycle-policy.js";
import type { RotationPolicy } from "./rotation-policy.js";

export type KeyState = "ENABLED" | "REVOKED" | "DESTROYED";
export type KekAlgorithm = "AES_256" | "RSA_4096";
export type KeyProtection = "PLATFORM_MANAGED" | "CUSTOMER_MANAGED";
export type KekVersionState = "PRIMARY" | "RETIRING" | "DESTROYED";
export type DekVersionState = "PRIMARY" | "DECRYPT_ONLY" | "PENDING_PURGE" | "PURGED" | "REVOKED";
export type CustomerKeyProvider = "AWS_KMS" | "AZURE_KEY_VAULT" | "GCP_KMS";

export const KEY_STATES: readonly KeyState[] = ["ENABLED", "REVOKED", "DESTROYED"];
export const KEK_ALGORITHMS: readonly KekAlgorithm[] = ["AES_256", "RSA_4096"];

export interface KekVersionInfo {
  readonly version: number;
  readonly state: KekVersionState;
  readonly createTime: Date;
  readonly destroyTime: Date | undefined;
  /** When it stopped being primary. */
  readonly retireTime: Date | undefined;
  /** While RETIRING: re-wrap progress of the DEK versions it wrapped. */
  readonly rewrappedDekCount: number;
  readonly totalDekCount: number;
}

export interface DekVersionInfo {
  readonly version: number;
  readonly state: DekVersionState;
  readonly kekVersion: number;
  readonly createTime: Date;
  readonly rotateTime: Date | undefined;
  readonly lastDecryptTime: Date | undefined;
  readonly purgeTime: Date | undefined;
  readonly revokeTime: Date | undefined;
}

/** A KEK held in the tenant's own cloud KMS. */
export interface CustomerKey {
  readonly provider: CustomerKeyProvider;
  readonly keyUri: string;
}

/** Why the last use or probe of a customer key failed. */
export type CustomerKeyErrorClass = "REVOKED" | "UNREACHABLE" | "PERMISSION_DENIED" | "OTHER";

/** The last results of using or probing a customer key (BYOK). */
export interface CustomerKeyHealth {
  readonly lastSuccessTime: Date | undefined;
  readonly lastErrorTime: Date | undefined;
  readonly lastErrorClass: CustomerKeyErrorClass | undefined;
  readonly lastError: string | undefined;
}

export interface RotationFailure {
  readonly time: Date;
  readonly message: string;
  readonly attempts: number;
}

export interface TenantKey {
  readonly tenantId: string;
  readonly keyId: string;
  readonly description: string;
  readonly kekAlgorithm: KekAlgorithm;
  readonly protection: KeyProtection;
  readonly state: KeyState;
  readonly rotationPolicy: RotationPolicy;
  readonly primaryDekVersion: number;
  readonly primaryKekVersion: number;
  readonly kekVersions: readonly KekVersionInfo[];
  readonly dekVersions: readonly DekVersionInfo[];
  readonly createTime: Date;
  readonly updateTime: Date;
  readonly revokeTime: Date | undefined;
  readonly lifecyclePolicy: LifecyclePolicy;
  /** While REVOKED: when the key is destroyed unless restored. */
  readonly scheduledDestroyTime: Date | undefined;
  readonly destroyTime: Date | undefined;
  readonly customerKey: CustomerKey | undefined;
  /** BYOK only. */
  readonly customerKeyHealth?: CustomerKeyHealth | undefined;
  readonly lastRotationFailure: RotationFailure | undefined;
}

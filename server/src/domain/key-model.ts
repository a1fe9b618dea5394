/**
 * The tenant key: one KEK with its chain of versions, and the chain of DEK
 * versions it wraps. Plain data; the rules over it live beside it in
 * key-rules.ts, so every invariant on states is checked in one place.
 */
import type { RotationPolicy } from "./rotation-policy.js";

export type KeyState = "ENABLED" | "REVOKED" | "DESTROYED";
export type KekAlgorithm = "AES_256" | "RSA_4096";
export type KeyProtection = "PLATFORM_MANAGED" | "CUSTOMER_MANAGED";
export type KekVersionState = "PRIMARY" | "RETIRING" | "DESTROYED";
export type DekVersionState = "PRIMARY" | "DECRYPT_ONLY" | "PENDING_PURGE" | "PURGED";

export const KEY_STATES: readonly KeyState[] = ["ENABLED", "REVOKED", "DESTROYED"];
export const KEK_ALGORITHMS: readonly KekAlgorithm[] = ["AES_256", "RSA_4096"];

export interface KekVersionInfo {
  readonly version: number;
  readonly state: KekVersionState;
  readonly createTime: Date;
  readonly destroyTime: Date | undefined;
}

export interface DekVersionInfo {
  readonly version: number;
  readonly state: DekVersionState;
  readonly kekVersion: number;
  readonly createTime: Date;
  readonly rotateTime: Date | undefined;
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
}

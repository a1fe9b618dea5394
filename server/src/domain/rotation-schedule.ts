/**
 * When a key's scheduled rotation is due, and what is due: the DEK, the KEK,
 * or both. `keys.next_rotation_time` holds `scheduledRotationTime` so that
 * the scheduler finds due keys through an index; the scheduler re-checks
 * with `dueRotations` before it rotates.
 */
import type { KeyProtection, KeyState } from "./key-model.js";
import type { RotationPolicy } from "./rotation-policy.js";
import { addSeconds } from "./rotation-policy.js";

export interface RotationScheduleFacts {
  readonly state: KeyState;
  readonly protection: KeyProtection;
  readonly rotationPolicy: RotationPolicy;
  readonly primaryDekCreateTime: Date;
  readonly primaryKekCreateTime: Date;
}

export interface DueRotations {
  readonly dek: boolean;
  /** Never for a customer-managed key: its KEK is rotated by the customer, in the customer's KMS. */
  readonly kek: boolean;
}

/**
 * The next time something rotates: the earlier of the DEK and KEK due times
 * (the DEK's alone for a customer-managed key); undefined unless ENABLED — a
 * revoked or destroyed key is never rotated.
 */
export function scheduledRotationTime(key: RotationScheduleFacts): Date | undefined {
  if (key.state !== "ENABLED") return undefined;
  const dek = addSeconds(key.primaryDekCreateTime, key.rotationPolicy.dekRotationPeriodSeconds);
  if (key.protection === "CUSTOMER_MANAGED") return dek;
  const kek = addSeconds(key.primaryKekCreateTime, key.rotationPolicy.kekRotationPeriodSeconds);
  return dek <= kek ? dek : kek;
}

export function dueRotations(key: RotationScheduleFacts, now: Date): DueRotations {
  if (key.state !== "ENABLED") return { dek: false, kek: false };
  return {
    dek: addSeconds(key.primaryDekCreateTime, key.rotationPolicy.dekRotationPeriodSeconds) <= now,
    kek:
      key.protection === "PLATFORM_MANAGED" &&
      addSeconds(key.primaryKekCreateTime, key.rotationPolicy.kekRotationPeriodSeconds) <= now,
  };
}

const FIRST_RETRY_SECONDS = 5 * 60;
const MAX_RETRY_SECONDS = 6 * 60 * 60;

/**
 * After the n-th consecutive failed scheduled rotation, the key is retried
 * this much later: 5 minutes, doubling, at most 6 hours. Pushing a failing key
 * back keeps it from being claimed first on every run, so a batch full of
 * failing keys can never starve the healthy ones.
 */
export function rotationRetryDelaySeconds(attempts: number): number {
  const exponent = Math.max(0, Math.min(attempts - 1, 20));
  return Math.min(FIRST_RETRY_SECONDS * 2 ** exponent, MAX_RETRY_SECONDS);
}

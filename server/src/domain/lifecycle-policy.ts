import { invalidField } from "./kms-error.js";

/** How long superseded material is kept and how long a revocation may be undone, in seconds. */
export interface LifecyclePolicy {
  /** After a DEK version stops being primary, it may not be purged before this has passed. */
  readonly dekGracePeriodSeconds: number;
  /** A DEK version is purged only if no Decrypt of it was served for this long. */
  readonly decryptQuietWindowSeconds: number;
  /** A revoked key can be restored for this long; then it is destroyed. */
  readonly revocationWaitingPeriodSeconds: number;
}

const DAY = 86_400;

export const DEFAULT_LIFECYCLE_POLICY: LifecyclePolicy = {
  dekGracePeriodSeconds: 7 * DAY,
  decryptQuietWindowSeconds: 7 * DAY,
  revocationWaitingPeriodSeconds: 30 * DAY,
};

export const LIFECYCLE_BOUNDS = {
  dekGracePeriod: { min: 1 * DAY, max: 365 * DAY },
  decryptQuietWindow: { min: 1 * DAY, max: 90 * DAY },
  revocationWaitingPeriod: { min: 7 * DAY, max: 90 * DAY },
} as const;

export interface LifecyclePolicyInput {
  readonly dekGracePeriodSeconds?: number | undefined;
  readonly decryptQuietWindowSeconds?: number | undefined;
  readonly revocationWaitingPeriodSeconds?: number | undefined;
}

/** Fills unset periods from `base` (the defaults, or the key's current policy) and refuses any out of bounds. */
export function resolveLifecyclePolicy(input: LifecyclePolicyInput | undefined, base: LifecyclePolicy = DEFAULT_LIFECYCLE_POLICY): LifecyclePolicy {
  const policy = {
    dekGracePeriodSeconds: input?.dekGracePeriodSeconds ?? base.dekGracePeriodSeconds,
    decryptQuietWindowSeconds: input?.decryptQuietWindowSeconds ?? base.decryptQuietWindowSeconds,
    revocationWaitingPeriodSeconds: input?.revocationWaitingPeriodSeconds ?? base.revocationWaitingPeriodSeconds,
  };
  check("lifecycle_policy.dek_grace_period", policy.dekGracePeriodSeconds, LIFECYCLE_BOUNDS.dekGracePeriod);
  check("lifecycle_policy.decrypt_quiet_window", policy.decryptQuietWindowSeconds, LIFECYCLE_BOUNDS.decryptQuietWindow);
  check("lifecycle_policy.revocation_waiting_period", policy.revocationWaitingPeriodSeconds, LIFECYCLE_BOUNDS.revocationWaitingPeriod);
  return policy;
}

function check(field: string, seconds: number, bounds: { min: number; max: number }): void {
  if (!Number.isInteger(seconds) || seconds < bounds.min || seconds > bounds.max) {
    throw invalidField(field, `must be a whole number of seconds from ${bounds.min / DAY} to ${bounds.max / DAY} days`, {
      minSeconds: String(bounds.min),
      maxSeconds: String(bounds.max),
    });
  }
}

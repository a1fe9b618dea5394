import { invalidField } from "./kms-error.js";

/** How often a key's versions are replaced, in whole seconds. */
export interface RotationPolicy {
  readonly dekRotationPeriodSeconds: number;
  readonly kekRotationPeriodSeconds: number;
}

const DAY = 86_400;

/** Platform defaults: DEKs every 30 days, KEKs every 90 (the documented promise). */
export const DEFAULT_ROTATION_POLICY: RotationPolicy = {
  dekRotationPeriodSeconds: 30 * DAY,
  kekRotationPeriodSeconds: 90 * DAY,
};

/**
 * Bounds on per-key overrides. Below a day, rotation churn buys nothing; above
 * a year (DEK) or two (KEK), a key outlives any sane compliance window.
 */
export const ROTATION_BOUNDS = {
  dek: { min: 1 * DAY, max: 365 * DAY },
  kek: { min: 1 * DAY, max: 730 * DAY },
} as const;

export interface RotationPolicyInput {
  readonly dekRotationPeriodSeconds?: number | undefined;
  readonly kekRotationPeriodSeconds?: number | undefined;
}

/** Fills unset periods with the defaults and refuses any outside the bounds. */
export function resolveRotationPolicy(input: RotationPolicyInput | undefined): RotationPolicy {
  const dek = input?.dekRotationPeriodSeconds ?? DEFAULT_ROTATION_POLICY.dekRotationPeriodSeconds;
  const kek = input?.kekRotationPeriodSeconds ?? DEFAULT_ROTATION_POLICY.kekRotationPeriodSeconds;
  checkPeriod("rotation_policy.dek_rotation_period", dek, ROTATION_BOUNDS.dek);
  checkPeriod("rotation_policy.kek_rotation_period", kek, ROTATION_BOUNDS.kek);
  return { dekRotationPeriodSeconds: dek, kekRotationPeriodSeconds: kek };
}

function checkPeriod(field: string, seconds: number, bounds: { min: number; max: number }): void {
  if (!Number.isInteger(seconds) || seconds < bounds.min || seconds > bounds.max) {
    throw invalidField(field, `must be a whole number of seconds from ${bounds.min / DAY} to ${bounds.max / DAY} days`, {
      minSeconds: String(bounds.min),
      maxSeconds: String(bounds.max),
    });
  }
}

export function addSeconds(time: Date, seconds: number): Date {
  return new Date(time.getTime() + seconds * 1000);
}

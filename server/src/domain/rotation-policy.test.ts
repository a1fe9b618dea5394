import { describe, expect, it } from "vitest";
import { DEFAULT_ROTATION_POLICY, resolveRotationPolicy } from "./rotation-policy.js";

const DAY = 86_400;

describe("rotation policy", () => {
  it("fills unset periods with the platform defaults of 30 and 90 days", () => {
    expect(resolveRotationPolicy(undefined)).toEqual({ dekRotationPeriodSeconds: 30 * DAY, kekRotationPeriodSeconds: 90 * DAY });
    expect(resolveRotationPolicy({ dekRotationPeriodSeconds: 7 * DAY })).toEqual({ ...DEFAULT_ROTATION_POLICY, dekRotationPeriodSeconds: 7 * DAY });
  });

  it("accepts overrides on the bounds", () => {
    expect(resolveRotationPolicy({ dekRotationPeriodSeconds: DAY, kekRotationPeriodSeconds: 730 * DAY })).toEqual({
      dekRotationPeriodSeconds: DAY,
      kekRotationPeriodSeconds: 730 * DAY,
    });
  });

  it.each([
    ["rotation_policy.dek_rotation_period", { dekRotationPeriodSeconds: DAY - 1 }],
    ["rotation_policy.dek_rotation_period", { dekRotationPeriodSeconds: 366 * DAY }],
    ["rotation_policy.dek_rotation_period", { dekRotationPeriodSeconds: 1.5 * DAY + 0.5 }],
    ["rotation_policy.kek_rotation_period", { kekRotationPeriodSeconds: 731 * DAY }],
    ["rotation_policy.kek_rotation_period", { kekRotationPeriodSeconds: -1 }],
  ])("refuses %s out of bounds (%j)", (field, input) => {
    expect(() => resolveRotationPolicy(input)).toThrow(expect.objectContaining({ reason: "INVALID_FIELD", field }));
  });
});

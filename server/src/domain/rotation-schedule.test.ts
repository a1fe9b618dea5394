import { describe, expect, it } from "vitest";
import { dueRotations, rotationRetryDelaySeconds, scheduledRotationTime, type RotationScheduleFacts } from "./rotation-schedule.js";

const DAY = 86_400;
const T = new Date("2026-03-01T00:00:00Z");
const at = (days: number) => new Date(T.getTime() + days * DAY * 1000);

const facts = (overrides: Partial<RotationScheduleFacts> = {}): RotationScheduleFacts => ({
  state: "ENABLED",
  protection: "PLATFORM_MANAGED",
  rotationPolicy: { dekRotationPeriodSeconds: 30 * DAY, kekRotationPeriodSeconds: 90 * DAY },
  primaryDekCreateTime: T,
  primaryKekCreateTime: at(-80),
  ...overrides,
});

describe("rotation schedule", () => {
  it("is due at the earlier of the DEK and KEK due times", () => {
    expect(scheduledRotationTime(facts())).toEqual(at(10));
    expect(dueRotations(facts(), at(10))).toEqual({ dek: false, kek: true });
    expect(dueRotations(facts(), at(30))).toEqual({ dek: true, kek: true });
    expect(dueRotations(facts(), at(9.99))).toEqual({ dek: false, kek: false });
  });

  it("never schedules the KEK of a customer-managed key: the customer rotates it in its own KMS", () => {
    const byok = facts({ protection: "CUSTOMER_MANAGED" });
    expect(scheduledRotationTime(byok)).toEqual(at(30));
    expect(dueRotations(byok, at(400))).toEqual({ dek: true, kek: false });
  });

  it("schedules nothing for a key that is not enabled", () => {
    for (const state of ["REVOKED", "DESTROYED"] as const) {
      expect(scheduledRotationTime(facts({ state }))).toBeUndefined();
      expect(dueRotations(facts({ state }), at(400))).toEqual({ dek: false, kek: false });
    }
  });

  it("backs a failing key off from 5 minutes, doubling, to at most 6 hours", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 50].map(rotationRetryDelaySeconds)).toEqual([300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600]);
  });
});

import { describe, expect, it } from "vitest";
import type { TenantKey } from "./key-model.js";
import { assertDekVersionDecryptable, assertKeyUsable, isRotationOverdue, nextDekRotationTime, nextKekRotationTime, nextVersionNumber } from "./key-rules.js";
import { DEFAULT_LIFECYCLE_POLICY } from "./lifecycle-policy.js";
import { DEFAULT_ROTATION_POLICY } from "./rotation-policy.js";

const created = new Date("2026-01-01T00:00:00Z");
const unused = { lastDecryptTime: undefined, purgeTime: undefined, revokeTime: undefined };
const key: TenantKey = {
  tenantId: "t1",
  keyId: "pii",
  description: "",
  kekAlgorithm: "AES_256",
  protection: "PLATFORM_MANAGED",
  state: "ENABLED",
  rotationPolicy: DEFAULT_ROTATION_POLICY,
  primaryDekVersion: 2,
  primaryKekVersion: 1,
  kekVersions: [{ version: 1, state: "PRIMARY", createTime: created, destroyTime: undefined, retireTime: undefined, rewrappedDekCount: 0, totalDekCount: 0 }],
  dekVersions: [
    { ...unused, version: 1, state: "DECRYPT_ONLY", kekVersion: 1, createTime: created, rotateTime: new Date("2026-01-10T00:00:00Z") },
    { ...unused, version: 2, state: "PRIMARY", kekVersion: 1, createTime: new Date("2026-01-10T00:00:00Z"), rotateTime: undefined },
  ],
  createTime: created,
  updateTime: created,
  revokeTime: undefined,
  lifecyclePolicy: DEFAULT_LIFECYCLE_POLICY,
  scheduledDestroyTime: undefined,
  destroyTime: undefined,
  customerKey: undefined,
  lastRotationFailure: undefined,
};

describe("key rules", () => {
  it("allows use only while the key is enabled, with a reason per state", () => {
    expect(() => assertKeyUsable("t1", "pii", "ENABLED")).not.toThrow();
    expect(() => assertKeyUsable("t1", "pii", "REVOKED")).toThrow(expect.objectContaining({ reason: "KEY_REVOKED" }));
    expect(() => assertKeyUsable("t1", "pii", "DESTROYED")).toThrow(expect.objectContaining({ reason: "KEY_DESTROYED" }));
  });

  it("lets every DEK version with material decrypt, and refuses a purged one", () => {
    for (const state of ["PRIMARY", "DECRYPT_ONLY", "PENDING_PURGE"] as const) {
      expect(() => assertDekVersionDecryptable("pii", 1, state)).not.toThrow();
    }
    expect(() => assertDekVersionDecryptable("pii", 1, "PURGED")).toThrow(expect.objectContaining({ reason: "DEK_VERSION_UNUSABLE" }));
    expect(() => assertDekVersionDecryptable("pii", 1, "REVOKED")).toThrow(expect.objectContaining({ reason: "DEK_VERSION_REVOKED" }));
  });

  it("dates the next rotation a full period after the primary version was made", () => {
    expect(nextDekRotationTime(key).toISOString()).toBe("2026-02-09T00:00:00.000Z");
    expect(nextKekRotationTime(key).toISOString()).toBe("2026-04-01T00:00:00.000Z");
  });

  it("reports a rotation overdue only for an enabled key past its date", () => {
    expect(isRotationOverdue(key, new Date("2026-02-08T23:59:59Z"))).toBe(false);
    expect(isRotationOverdue(key, new Date("2026-02-09T00:00:00Z"))).toBe(true);
    expect(isRotationOverdue({ ...key, state: "REVOKED" }, new Date("2027-01-01T00:00:00Z"))).toBe(false);
  });

  it("numbers a new version one past the highest", () => {
    expect(nextVersionNumber([])).toBe(1);
    expect(nextVersionNumber([{ version: 3 }, { version: 1 }])).toBe(4);
  });
});

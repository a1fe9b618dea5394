import { describe, expect, it } from "vitest";
import type { Dataset } from "./dataset.js";
import { planPurge, type PurgeFacts } from "./dek-purge-rules.js";
import type { DekVersionInfo } from "./key-model.js";
import { DEFAULT_LIFECYCLE_POLICY } from "./lifecycle-policy.js";

const DAY_MS = 86_400_000;
const T = new Date("2026-03-01T00:00:00Z");
const at = (days: number) => new Date(T.getTime() + days * DAY_MS);

function version(v: number, state: DekVersionInfo["state"], extra: Partial<DekVersionInfo> = {}): DekVersionInfo {
  return {
    version: v,
    state,
    kekVersion: 1,
    createTime: at(-30),
    rotateTime: state === "PRIMARY" ? undefined : T,
    lastDecryptTime: undefined,
    purgeTime: undefined,
    revokeTime: undefined,
    ...extra,
  };
}

function key(versions: DekVersionInfo[], state: PurgeFacts["state"] = "ENABLED"): PurgeFacts {
  return { state, lifecyclePolicy: DEFAULT_LIFECYCLE_POLICY, dekVersions: versions };
}

function dataset(id: string, lastReport: Date | undefined, counts: [number, number][]): Dataset {
  return { tenantId: "t", keyId: "k", datasetId: id, storeKind: "POSTGRES", description: "", createTime: at(-40), lastReportTime: lastReport, counts: new Map(counts) };
}

describe("DEK purge rules", () => {
  const superseded = [version(1, "DECRYPT_ONLY"), version(2, "PRIMARY")];

  it("holds a decrypt-only version until the grace period is over, to the second", () => {
    const before = planPurge(key(superseded), [], new Date(at(7).getTime() - 1000));
    expect(before).toMatchObject({ toPendingPurge: [], toPurged: [] });
    expect(before.holdbacks).toEqual([expect.objectContaining({ version: 1, graceRemainingSeconds: 1, datasetsHolding: [], quietRemainingSeconds: 0 })]);
    expect(planPurge(key(superseded), [], at(7))).toMatchObject({ toPendingPurge: [1], toPurged: [1] });
  });

  it("never plans anything for a primary, revoked or purged version, nor for a key that is not enabled", () => {
    const versions = [version(1, "PURGED"), version(2, "REVOKED", { revokeTime: T }), version(3, "PRIMARY")];
    expect(planPurge(key(versions), [], at(400))).toEqual({ toPendingPurge: [], toPurged: [], holdbacks: [] });
    const revokedKey = planPurge(key(superseded, "REVOKED"), [], at(400));
    expect(revokedKey).toMatchObject({ toPendingPurge: [], toPurged: [] });
    expect(revokedKey.holdbacks).toHaveLength(1);
  });

  it("holds a version while a dataset reports ciphertexts under it, or has not reported since it was superseded", () => {
    const datasets = [
      dataset("counting", at(1), [[1, 5]]),
      dataset("silent", undefined, []),
      dataset("stale", at(-1), []),
      dataset("clear", at(1), [[2, 9]]),
    ];
    const plan = planPurge(key(superseded), datasets, at(8));
    expect(plan).toMatchObject({ toPendingPurge: [1], toPurged: [] });
    expect(plan.holdbacks[0]!.datasetsHolding).toEqual([
      { datasetId: "counting", ciphertexts: 5, reportOutdated: false },
      { datasetId: "silent", ciphertexts: 0, reportOutdated: true },
      { datasetId: "stale", ciphertexts: 0, reportOutdated: true },
    ]);
    // A report made at the very moment of the rotation vouches for it.
    expect(planPurge(key(superseded), [dataset("same-instant", T, [])], at(8)).toPurged).toEqual([1]);
  });

  it("holds a version until no Decrypt of it was served for the whole quiet window", () => {
    const used = [version(1, "PENDING_PURGE", { lastDecryptTime: at(6) }), version(2, "PRIMARY")];
    const plan = planPurge(key(used), [], at(8));
    expect(plan.toPurged).toEqual([]);
    expect(plan.holdbacks[0]).toMatchObject({ lastDecryptTime: at(6), quietRemainingSeconds: 5 * 86_400 });
    expect(planPurge(key(used), [], at(13)).toPurged).toEqual([1]);
  });
});

/**
 * When a superseded DEK version may be purged, and — while it may not — what
 * holds it back. One pure function serves both the purge job (what to do now)
 * and the encryption status (why not yet), so the two can never disagree.
 *
 * A version that stopped being primary (DECRYPT_ONLY) becomes PENDING_PURGE
 * once its grace period (counted from its rotate_time) is over. It is PURGED —
 * its material erased — only when, in addition:
 *  - every registered dataset of the key has reported since the version
 *    stopped being primary, and none reports a ciphertext under it (a report
 *    older than that cannot vouch for it: new data may have been written
 *    under it after that report; a dataset that never reported holds it too);
 *  - no Decrypt of it was served during the quiet window.
 * Nothing moves while the key is not ENABLED: a revoked key may be restored
 * and must find its versions as it left them.
 */
import type { Dataset } from "./dataset.js";
import type { DekVersionInfo, DekVersionState, KeyState } from "./key-model.js";
import type { LifecyclePolicy } from "./lifecycle-policy.js";
import { addSeconds } from "./rotation-policy.js";

export interface DatasetHolding {
  readonly datasetId: string;
  /** As last reported (0 when the dataset has not reported since the version was superseded). */
  readonly ciphertexts: number;
  /** True when the dataset has not reported since the version stopped being primary. */
  readonly reportOutdated: boolean;
}

export interface DekVersionHoldback {
  readonly version: number;
  readonly state: DekVersionState;
  /** Zero once the grace period is over. */
  readonly graceRemainingSeconds: number;
  readonly datasetsHolding: readonly DatasetHolding[];
  readonly lastDecryptTime: Date | undefined;
  /** Zero once no Decrypt was served for the whole quiet window. */
  readonly quietRemainingSeconds: number;
}

export interface PurgePlan {
  /** DECRYPT_ONLY versions whose grace period is over. */
  readonly toPendingPurge: readonly number[];
  /** Versions (DECRYPT_ONLY or PENDING_PURGE) that nothing holds any more. */
  readonly toPurged: readonly number[];
  /** Every superseded version that still has material, with what holds it. */
  readonly holdbacks: readonly DekVersionHoldback[];
}

export interface PurgeFacts {
  readonly state: KeyState;
  readonly lifecyclePolicy: LifecyclePolicy;
  readonly dekVersions: readonly DekVersionInfo[];
}

export function planPurge(key: PurgeFacts, datasets: readonly Dataset[], now: Date): PurgePlan {
  const toPendingPurge: number[] = [];
  const toPurged: number[] = [];
  const holdbacks: DekVersionHoldback[] = [];
  const { dekGracePeriodSeconds, decryptQuietWindowSeconds } = key.lifecyclePolicy;

  for (const version of key.dekVersions) {
    if (version.state !== "DECRYPT_ONLY" && version.state !== "PENDING_PURGE") continue;
    // A superseded version always has a rotate_time; without one, its grace has not begun.
    const graceEnd = version.rotateTime === undefined ? undefined : addSeconds(version.rotateTime, dekGracePeriodSeconds);
    const graceRemainingSeconds = graceEnd === undefined ? dekGracePeriodSeconds : secondsUntil(graceEnd, now);
    const quietRemainingSeconds =
      version.lastDecryptTime === undefined ? 0 : secondsUntil(addSeconds(version.lastDecryptTime, decryptQuietWindowSeconds), now);
    const datasetsHolding = datasetsHoldingVersion(datasets, version);
    holdbacks.push({
      version: version.version,
      state: version.state,
      graceRemainingSeconds,
      datasetsHolding,
      lastDecryptTime: version.lastDecryptTime,
      quietRemainingSeconds,
    });

    if (key.state !== "ENABLED" || graceEnd === undefined || graceRemainingSeconds > 0) continue;
    if (version.state === "DECRYPT_ONLY") toPendingPurge.push(version.version);
    if (datasetsHolding.length === 0 && quietRemainingSeconds === 0) toPurged.push(version.version);
  }
  return { toPendingPurge, toPurged, holdbacks };
}

function datasetsHoldingVersion(datasets: readonly Dataset[], version: DekVersionInfo): DatasetHolding[] {
  const holding: DatasetHolding[] = [];
  for (const dataset of datasets) {
    const ciphertexts = dataset.counts.get(version.version) ?? 0;
    const reportOutdated =
      dataset.lastReportTime === undefined || version.rotateTime === undefined || dataset.lastReportTime < version.rotateTime;
    if (ciphertexts > 0 || reportOutdated) holding.push({ datasetId: dataset.datasetId, ciphertexts, reportOutdated });
  }
  return holding;
}

/** Whole seconds from `now` until `time`, rounded up; zero once it has passed. */
function secondsUntil(time: Date, now: Date): number {
  return Math.max(0, Math.ceil((time.getTime() - now.getTime()) / 1000));
}

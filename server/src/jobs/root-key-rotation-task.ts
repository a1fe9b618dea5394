/**
 * The scheduled master-key rotation (yearly by default): when the CURRENT
 * master key is older than the configured number of days, rotate it (the
 * rotation's transaction re-checks the age under the CURRENT row's lock, so
 * replicas ticking together rotate once). Also resumes the re-wrap of KEKs
 * left under an older master key when none is under way.
 */
import { rotateRootKey, resumeRootRewrapIfNeeded } from "../service/root-key-rotation.js";
import { nextRootKeyRotationTime, syncRootKey } from "../service/root-key-registry.js";
import type { KmsContext } from "../service/kms-context.js";

export function rootKeyRotationTask(rotationDays: number): (context: KmsContext, now: Date) => Promise<void> {
  return async (context, now) => {
    const current = await syncRootKey(context);
    const due = nextRootKeyRotationTime(current, rotationDays);
    const rotatable = context.rootProvider.createKeyVersion !== undefined;
    if (rotatable && due !== undefined && due <= now) {
      await rotateRootKey(context, { onlyIfOlderThanDays: rotationDays });
      return;
    }
    if (context.rootProvider.currentKeyId === current.root_key_id) await resumeRootRewrapIfNeeded(context);
  };
}

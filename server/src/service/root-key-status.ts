/** GetRootKeyStatus: the master key in use, its age and next rotation, and the KEK re-wrap's progress. */
import type { KmsContext } from "./kms-context.js";
import { countKeksByRootKey, nextRootKeyRotationTime, syncRootKey } from "./root-key-registry.js";

export interface RootKeyStatusReport {
  readonly provider: string;
  readonly currentKeyId: string;
  readonly currentKeyCreateTime: Date;
  /** Undefined when scheduled rotation is off. */
  readonly nextRotationTime: Date | undefined;
  /** KEK versions still wrapped under an older master key version. */
  readonly keksPendingRewrap: number;
  /** KEK versions with material (destroyed and customer-managed ones have none). */
  readonly keksTotal: number;
}

export async function getRootKeyStatus(context: KmsContext, options: { readonly rotationDays: number }): Promise<RootKeyStatusReport> {
  const current = await syncRootKey(context);
  const counts = await countKeksByRootKey(context, current.root_key_id);
  return {
    provider: current.provider,
    currentKeyId: current.root_key_id,
    currentKeyCreateTime: current.create_time,
    nextRotationTime: nextRootKeyRotationTime(current, options.rotationDays),
    keksPendingRewrap: counts.pending,
    keksTotal: counts.total,
  };
}

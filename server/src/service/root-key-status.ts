/**
 * GetRootKeyStatus: the master key in use, its age and next rotation, the
 * master-key re-wrap's progress, and — during a switch of root provider — the
 * configured provider and whether the previous one is still needed.
 */
import type { KmsContext } from "./kms-context.js";
import { countKeksByRootKey, nextRootKeyRotationTime, syncRootKey } from "./root-key-registry.js";
import { configuredRootKey, previousRootProviderUsage, type PreviousRootProviderUsage, type RootKeyTarget } from "./root-provider-switch.js";

export interface RootRewrapProgress {
  readonly jobId: number;
  readonly done: number;
  readonly total: number;
  readonly lastError: string | undefined;
}

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
  /** What this server is configured to wrap under (KMS_ROOT_PROVIDER). */
  readonly configured: RootKeyTarget;
  /** The ROOT_REWRAP job under way, if any. */
  readonly rewrap: RootRewrapProgress | undefined;
  /** Set when a previous root provider is configured (KMS_ROOT_PROVIDER_PREVIOUS). */
  readonly previous: PreviousRootProviderUsage | undefined;
}

export async function getRootKeyStatus(context: KmsContext, options: { readonly rotationDays: number }): Promise<RootKeyStatusReport> {
  const current = await syncRootKey(context);
  const counts = await countKeksByRootKey(context, current.root_key_id);
  const job = await context.db
    .selectFrom("jobs")
    .select(["job_id", "done", "total", "last_error"])
    .where("kind", "=", "ROOT_REWRAP")
    .where("state", "=", "PENDING")
    .orderBy("job_id", "desc")
    .limit(1)
    .executeTakeFirst();
  return {
    provider: current.provider,
    currentKeyId: current.root_key_id,
    currentKeyCreateTime: current.create_time,
    nextRotationTime: nextRootKeyRotationTime(current, options.rotationDays),
    keksPendingRewrap: counts.pending,
    keksTotal: counts.total,
    configured: configuredRootKey(context.rootProvider),
    rewrap: job === undefined ? undefined : { jobId: Number(job.job_id), done: job.done, total: job.total, lastError: job.last_error ?? undefined },
    previous: await previousRootProviderUsage(context),
  };
}

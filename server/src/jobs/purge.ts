/**
 * The purge: superseded DEK versions move DECRYPT_ONLY → PENDING_PURGE once
 * their grace period is over, and PENDING_PURGE → PURGED (material erased)
 * once, in addition, every dataset reports none of its ciphertexts under them
 * and no Decrypt of them was served in the quiet window
 * (domain/dek-purge-rules.ts). Keys are found through an SQL prefilter of that
 * rule and each is decided under its row lock, skipped when another replica
 * holds it; one key's failure does not stop the others.
 */
import type { BackgroundLogger } from "./job-handler.js";
import { findPurgeCandidateKeys, type KeyName } from "../storage/lifecycle.repository.js";
import type { KmsContext } from "../service/kms-context.js";
import { purgeKeyVersions } from "../service/purge-dek-versions.js";

export interface PurgeRunOptions {
  /** Keys looked at per query (default 100). */
  readonly batchSize?: number;
  readonly logger?: BackgroundLogger;
}

export interface PurgedVersion extends KeyName {
  readonly dekVersion: number;
}

export interface PurgeRunResult {
  readonly pendingPurge: PurgedVersion[];
  readonly purged: PurgedVersion[];
  readonly failed: (KeyName & { readonly error: unknown })[];
}

export async function runPurge(context: KmsContext, now: Date, options: PurgeRunOptions = {}): Promise<PurgeRunResult> {
  const batchSize = options.batchSize ?? 100;
  const result: PurgeRunResult = { pendingPurge: [], purged: [], failed: [] };
  let after: KeyName | undefined;
  for (;;) {
    const keys = await findPurgeCandidateKeys(context.db, now, after, batchSize);
    for (const key of keys) {
      try {
        const step = await purgeKeyVersions(context, key, now);
        for (const dekVersion of step.toPendingPurge) result.pendingPurge.push({ ...key, dekVersion });
        for (const dekVersion of step.purged) result.purged.push({ ...key, dekVersion });
      } catch (error) {
        options.logger?.error("purge of a key's DEK versions failed", { tenant_id: key.tenantId, key_id: key.keyId, err: error });
        result.failed.push({ ...key, error });
      }
    }
    after = keys[keys.length - 1];
    if (keys.length < batchSize || after === undefined) return result;
  }
}

/** The periodic task: one pass at `now`; keys that failed are left for the next pass and thrown together for the log. */
export async function purgeTask(context: KmsContext, now: Date): Promise<void> {
  const { failed } = await runPurge(context, now);
  if (failed.length > 0) {
    throw new AggregateError(failed.map((f) => f.error), `purge failed for ${failed.length} key(s): ${failed.map((f) => `${f.tenantId}/${f.keyId}`).join(", ")}`);
  }
}

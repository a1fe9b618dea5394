/**
 * Destruction: REVOKED keys whose waiting period is over are destroyed
 * (service/destroy-key.ts). Found through the partial index on
 * scheduled_destroy_time; each key is destroyed in its own transaction under
 * its row lock, skipped when another replica (or a racing restore) holds it.
 */
import type { BackgroundLogger } from "./job-handler.js";
import { findKeysDueForDestruction, type KeyName } from "../storage/lifecycle.repository.js";
import { destroyKeyIfDue } from "../service/destroy-key.js";
import type { KmsContext } from "../service/kms-context.js";

export interface DestructionRunOptions {
  /** Keys looked at per query (default 100). */
  readonly batchSize?: number;
  readonly logger?: BackgroundLogger;
}

export interface DestructionRunResult {
  readonly destroyed: KeyName[];
  readonly failed: (KeyName & { readonly error: unknown })[];
}

export async function runDestruction(context: KmsContext, now: Date, options: DestructionRunOptions = {}): Promise<DestructionRunResult> {
  const batchSize = options.batchSize ?? 100;
  const result: DestructionRunResult = { destroyed: [], failed: [] };
  let after: KeyName | undefined;
  for (;;) {
    const keys = await findKeysDueForDestruction(context.db, now, after, batchSize);
    for (const key of keys) {
      try {
        if (await destroyKeyIfDue(context, key, now)) {
          result.destroyed.push(key);
          options.logger?.info("key destroyed: its waiting period after revocation is over", { tenant_id: key.tenantId, key_id: key.keyId });
        }
      } catch (error) {
        options.logger?.error("destruction of a key failed", { tenant_id: key.tenantId, key_id: key.keyId, err: error });
        result.failed.push({ ...key, error });
      }
    }
    after = keys[keys.length - 1];
    if (keys.length < batchSize || after === undefined) return result;
  }
}

/** The periodic task: one pass at `now`; keys that failed are left for the next pass and thrown together for the log. */
export async function destructionTask(context: KmsContext, now: Date): Promise<void> {
  const { failed } = await runDestruction(context, now);
  if (failed.length > 0) {
    throw new AggregateError(failed.map((f) => f.error), `destruction failed for ${failed.length} key(s): ${failed.map((f) => `${f.tenantId}/${f.keyId}`).join(", ")}`);
  }
}

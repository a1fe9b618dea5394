/**
 * One key's step of the purge: under the key's row lock, superseded DEK
 * versions move on as domain/dek-purge-rules.ts decides — DECRYPT_ONLY to
 * PENDING_PURGE once the grace period is over, then to PURGED (wrapped
 * material erased, purge_time, a DEK_VERSION_PURGED event) once nothing needs
 * them. RegisterDataset and ReportInventory take the same row FOR SHARE, so
 * the decision is made on a consistent inventory.
 */
import { planPurge } from "../domain/dek-purge-rules.js";
import { listDekVersions } from "../storage/dek-version.repository.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { lockKeyUnlessBusy, type KeyName } from "../storage/lifecycle.repository.js";
import { readDatasetsByKey } from "./dataset-reader.js";
import type { KmsContext } from "./kms-context.js";
import { toTenantKey } from "./key-reader.js";

export interface PurgeStep {
  /** False when another transaction held the key: it is left for the next run. */
  readonly visited: boolean;
  readonly toPendingPurge: readonly number[];
  readonly purged: readonly number[];
}

export async function purgeKeyVersions(context: KmsContext, name: KeyName, now: Date): Promise<PurgeStep> {
  const step = await purgeInTransaction(context, name, now);
  // A purged DEK must not outlive its row in this process either: drop the key's cached KEKs and the DEKs kept with them.
  if (step.purged.length > 0) context.kekCache.deleteKey(name.tenantId, name.keyId);
  return step;
}

function purgeInTransaction(context: KmsContext, name: KeyName, now: Date): Promise<PurgeStep> {
  return context.db.transaction().execute(async (tx) => {
    const row = await lockKeyUnlessBusy(tx, name);
    if (row === undefined) return { visited: false, toPendingPurge: [], purged: [] };
    const key = toTenantKey(row, [], await listDekVersions(tx, name.tenantId, name.keyId));
    const datasets = (await readDatasetsByKey(tx, name.tenantId, [name.keyId])).get(name.keyId) ?? [];
    const plan = planPurge(key, datasets, now);

    const purged = new Set(plan.toPurged);
    const pendingOnly = plan.toPendingPurge.filter((version) => !purged.has(version));
    if (pendingOnly.length > 0) {
      await tx
        .updateTable("dek_versions")
        .set({ state: "PENDING_PURGE" })
        .where("tenant_id", "=", name.tenantId)
        .where("key_id", "=", name.keyId)
        .where("version", "in", pendingOnly)
        .where("state", "=", "DECRYPT_ONLY")
        .execute();
    }
    if (plan.toPurged.length > 0) {
      await tx
        .updateTable("dek_versions")
        .set({ state: "PURGED", wrapped_material: null, purge_time: now })
        .where("tenant_id", "=", name.tenantId)
        .where("key_id", "=", name.keyId)
        .where("version", "in", [...plan.toPurged])
        .where("state", "in", ["DECRYPT_ONLY", "PENDING_PURGE"])
        .execute();
      for (const version of plan.toPurged) {
        await appendKeyEvent(tx, { tenantId: name.tenantId, keyId: name.keyId, type: "DEK_VERSION_PURGED", dekVersion: version, time: now });
      }
    }
    return { visited: true, toPendingPurge: plan.toPendingPurge, purged: plan.toPurged };
  });
}

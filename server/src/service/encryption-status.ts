/**
 * GetEncryptionStatus: every key of a tenant with its versions, ages and next
 * rotation; for each superseded DEK version, what holds it back from purge
 * (domain/dek-purge-rules.ts, the rule the purge job applies); and the
 * re-encryption progress of each registered dataset.
 */
import { datasetProgress, type Dataset, type DatasetProgress } from "../domain/dataset.js";
import { planPurge, type DekVersionHoldback } from "../domain/dek-purge-rules.js";
import { requireValidId } from "../domain/identifiers.js";
import type { TenantKey } from "../domain/key-model.js";
import { isRotationOverdue, nextDekRotationTime, nextKekRotationTime, primaryDekVersion, primaryKekVersion } from "../domain/key-rules.js";
import { listKeys } from "../storage/key.repository.js";
import { tenantExists } from "../storage/tenant.repository.js";
import { readDatasetsByKey } from "./dataset-reader.js";
import type { KmsContext } from "./kms-context.js";
import { readTenantKeys, tenantNotFound } from "./key-reader.js";

export interface KeyStatusReport {
  readonly key: TenantKey;
  readonly primaryDekAgeSeconds: number;
  readonly primaryKekAgeSeconds: number;
  readonly nextDekRotationTime: Date;
  readonly nextKekRotationTime: Date;
  readonly rotationOverdue: boolean;
  /** For each superseded version that still has material: what holds it back from purge. */
  readonly holdbacks: readonly DekVersionHoldback[];
  /** Re-encryption progress of each registered dataset. */
  readonly datasets: readonly DatasetProgress[];
}

export interface EncryptionStatusReport {
  readonly tenantId: string;
  readonly reportTime: Date;
  readonly keys: KeyStatusReport[];
}

const BATCH = 500;

export async function getEncryptionStatus(context: KmsContext, input: { tenantId: string }): Promise<EncryptionStatusReport> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  if (!(await tenantExists(context.db, tenantId))) throw tenantNotFound(tenantId);
  const reportTime = context.clock.now();
  const keys: KeyStatusReport[] = [];
  let afterKeyId: string | undefined;
  for (;;) {
    const rows = await listKeys(context.db, tenantId, { limit: BATCH, ...(afterKeyId === undefined ? {} : { afterKeyId }) });
    const datasets = await readDatasetsByKey(
      context.db,
      tenantId,
      rows.map((row) => row.key_id),
    );
    for (const key of await readTenantKeys(context.db, rows)) keys.push(statusOf(key, datasets.get(key.keyId) ?? [], reportTime));
    const last = rows[rows.length - 1];
    if (rows.length < BATCH || last === undefined) break;
    afterKeyId = last.key_id;
  }
  return { tenantId, reportTime, keys };
}

function statusOf(key: TenantKey, datasets: readonly Dataset[], now: Date): KeyStatusReport {
  const ageSeconds = (since: Date) => Math.max(0, Math.floor((now.getTime() - since.getTime()) / 1000));
  return {
    key,
    primaryDekAgeSeconds: ageSeconds(primaryDekVersion(key).createTime),
    primaryKekAgeSeconds: ageSeconds(primaryKekVersion(key).createTime),
    nextDekRotationTime: nextDekRotationTime(key),
    nextKekRotationTime: nextKekRotationTime(key),
    rotationOverdue: isRotationOverdue(key, now),
    holdbacks: planPurge(key, datasets, now).holdbacks,
    datasets: datasets.map((dataset) => datasetProgress(dataset, key.primaryDekVersion)),
  };
}

/** Reads datasets with their last reported counts and maps rows to the domain model. */
import type { Dataset, StoreKind } from "../domain/dataset.js";
import type { Executor } from "../storage/database.js";
import { listDatasetCountsForKeys, listDatasetsForKeys, type DatasetCountRow, type DatasetRow } from "../storage/dataset.repository.js";

export function toDataset(row: DatasetRow, counts: readonly DatasetCountRow[]): Dataset {
  return {
    tenantId: row.tenant_id,
    keyId: row.key_id,
    datasetId: row.dataset_id,
    storeKind: row.store_kind as StoreKind,
    description: row.description,
    createTime: row.create_time,
    lastReportTime: row.last_report_time ?? undefined,
    counts: new Map(
      counts
        .filter((c) => c.key_id === row.key_id && c.dataset_id === row.dataset_id)
        .map((c) => [c.dek_version, Number(c.ciphertexts)] as const),
    ),
  };
}

/** Every dataset of the given keys of one tenant, by key, in dataset_id order; two queries whatever the number. */
export async function readDatasetsByKey(db: Executor, tenantId: string, keyIds: readonly string[]): Promise<Map<string, Dataset[]>> {
  const rows = await listDatasetsForKeys(db, tenantId, keyIds);
  const counts = rows.length === 0 ? [] : await listDatasetCountsForKeys(db, tenantId, keyIds);
  const byKey = new Map<string, Dataset[]>(keyIds.map((keyId) => [keyId, []]));
  for (const row of rows) byKey.get(row.key_id)?.push(toDataset(row, counts));
  return byKey;
}

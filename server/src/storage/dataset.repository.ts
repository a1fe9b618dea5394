import type { Executor } from "./database.js";
import type { Selectable } from "kysely";
import type { DatasetCountsTable, DatasetsTable } from "./database.js";

export type DatasetRow = Selectable<DatasetsTable>;
export type DatasetCountRow = Selectable<DatasetCountsTable>;

/** Inserts a dataset unless the key already has one with that id (ON CONFLICT keeps the transaction usable). */
export async function insertDataset(
  db: Executor,
  row: { tenant_id: string; key_id: string; dataset_id: string; store_kind: string; description: string; create_time: Date },
): Promise<"inserted" | "already-exists"> {
  const inserted = await db
    .insertInto("datasets")
    .values({ ...row, last_report_time: null })
    .onConflict((conflict) => conflict.columns(["tenant_id", "key_id", "dataset_id"]).doNothing())
    .returning("dataset_id")
    .executeTakeFirst();
  return inserted === undefined ? "already-exists" : "inserted";
}

export async function findDataset(
  db: Executor,
  tenantId: string,
  keyId: string,
  datasetId: string,
  options: { forUpdate?: boolean } = {},
): Promise<DatasetRow | undefined> {
  let query = db
    .selectFrom("datasets")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("dataset_id", "=", datasetId);
  if (options.forUpdate === true) query = query.forUpdate();
  return query.executeTakeFirst();
}

/** The datasets of several keys of one tenant, by key_id then dataset_id. */
export async function listDatasetsForKeys(db: Executor, tenantId: string, keyIds: readonly string[]): Promise<DatasetRow[]> {
  if (keyIds.length === 0) return [];
  return db
    .selectFrom("datasets")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "in", [...keyIds])
    .orderBy("key_id")
    .orderBy("dataset_id")
    .execute();
}

/** The last reported counts of every dataset of several keys of one tenant. */
export async function listDatasetCountsForKeys(db: Executor, tenantId: string, keyIds: readonly string[]): Promise<DatasetCountRow[]> {
  if (keyIds.length === 0) return [];
  return db
    .selectFrom("dataset_counts")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "in", [...keyIds])
    .orderBy("key_id")
    .orderBy("dataset_id")
    .orderBy("dek_version")
    .execute();
}

/**
 * Replaces a dataset's counts with a new report: the old rows go, the
 * non-zero new ones are written (a zero is "no row"), and the report time is
 * set. Call it inside a transaction with the dataset row locked.
 */
export async function replaceDatasetCounts(
  tx: Executor,
  dataset: { tenantId: string; keyId: string; datasetId: string },
  counts: ReadonlyMap<number, number>,
  reportTime: Date,
): Promise<void> {
  const { tenantId, keyId, datasetId } = dataset;
  await tx
    .deleteFrom("dataset_counts")
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("dataset_id", "=", datasetId)
    .execute();
  const rows = [...counts]
    .filter(([, ciphertexts]) => ciphertexts > 0)
    .map(([dekVersion, ciphertexts]) => ({ tenant_id: tenantId, key_id: keyId, dataset_id: datasetId, dek_version: dekVersion, ciphertexts }));
  if (rows.length > 0) await tx.insertInto("dataset_counts").values(rows).execute();
  await tx
    .updateTable("datasets")
    .set({ last_report_time: reportTime })
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("dataset_id", "=", datasetId)
    .execute();
}

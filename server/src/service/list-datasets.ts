/** ListDatasets: a key's datasets with their last reported counts, in dataset_id order. */
import type { Dataset } from "../domain/dataset.js";
import { requireValidId } from "../domain/identifiers.js";
import { findKey } from "../storage/key.repository.js";
import { readDatasetsByKey } from "./dataset-reader.js";
import type { KmsContext } from "./kms-context.js";
import { notFoundError } from "./key-reader.js";

export async function listDatasets(context: KmsContext, input: { tenantId: string; keyId: string }): Promise<Dataset[]> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  if ((await findKey(context.db, tenantId, keyId)) === undefined) throw await notFoundError(context.db, tenantId, keyId);
  return (await readDatasetsByKey(context.db, tenantId, [keyId])).get(keyId) ?? [];
}

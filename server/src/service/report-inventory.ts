/**
 * ReportInventory: a dataset's new report replaces its previous one — how
 * many ciphertexts it holds under each DEK version; versions not listed hold
 * none. Counts for a DEK version the key does not have are refused, naming
 * the entry, and nothing is stored.
 */
import type { Dataset } from "../domain/dataset.js";
import { requireValidId } from "../domain/identifiers.js";
import type { KeyState } from "../domain/key-model.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { findDataset, replaceDatasetCounts } from "../storage/dataset.repository.js";
import { listDekVersions } from "../storage/dek-version.repository.js";
import { lockKeyShared } from "../storage/lifecycle.repository.js";
import { toDataset } from "./dataset-reader.js";
import type { KmsContext } from "./kms-context.js";
import { notFoundError } from "./key-reader.js";
import { assertKeyNotDestroyed } from "./register-dataset.js";

export interface DekVersionCountInput {
  readonly dekVersion: number;
  readonly ciphertexts: bigint | number;
}

export interface ReportInventoryInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly datasetId: string;
  readonly counts: readonly DekVersionCountInput[];
}

export async function reportInventory(context: KmsContext, input: ReportInventoryInput): Promise<Dataset> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const datasetId = requireValidId("dataset_id", input.datasetId);
  const counts = checkedCounts(input.counts);
  const now = context.clock.now();

  return context.db.transaction().execute(async (tx) => {
    // FOR SHARE: a purge of this key (FOR UPDATE) decides on this report or on the one before, never half of one.
    const key = await lockKeyShared(tx, { tenantId, keyId });
    if (key === undefined) throw await notFoundError(tx, tenantId, keyId);
    assertKeyNotDestroyed(tenantId, keyId, key.state as KeyState);
    const dataset = await findDataset(tx, tenantId, keyId, datasetId, { forUpdate: true });
    if (dataset === undefined) {
      throw new KmsError("DATASET_NOT_FOUND", `dataset_id: key ${keyId} has no dataset ${datasetId}; register it first`, { field: "dataset_id" });
    }
    const versions = new Set((await listDekVersions(tx, tenantId, keyId)).map((v) => v.version));
    input.counts.forEach((entry, index) => {
      if (!versions.has(entry.dekVersion)) {
        throw invalidField(`counts[${index}].dek_version`, `key ${keyId} has no DEK version ${entry.dekVersion}`);
      }
    });
    await replaceDatasetCounts(tx, { tenantId, keyId, datasetId }, counts, now);
    return toDataset(
      { ...dataset, last_report_time: now },
      [...counts]
        .filter(([, n]) => n > 0)
        .map(([dekVersion, ciphertexts]) => ({ tenant_id: tenantId, key_id: keyId, dataset_id: datasetId, dek_version: dekVersion, ciphertexts })),
    );
  });
}

function checkedCounts(entries: readonly DekVersionCountInput[]): Map<number, number> {
  const counts = new Map<number, number>();
  entries.forEach((entry, index) => {
    if (!Number.isSafeInteger(entry.dekVersion) || entry.dekVersion < 1) {
      throw invalidField(`counts[${index}].dek_version`, "must be a DEK version number, 1 or more");
    }
    if (counts.has(entry.dekVersion)) {
      throw invalidField(`counts[${index}].dek_version`, `DEK version ${entry.dekVersion} is listed twice; give one count per version`);
    }
    const ciphertexts = Number(entry.ciphertexts);
    if (!Number.isSafeInteger(ciphertexts) || ciphertexts < 0) {
      throw invalidField(`counts[${index}].ciphertexts`, `must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
    }
    counts.set(entry.dekVersion, ciphertexts);
  });
  return counts;
}

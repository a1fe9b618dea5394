/**
 * RegisterDataset: a data owner declares a place (a table, a topic, a
 * bucket...) that keeps ciphertexts under a key's DEKs. From then on, no
 * superseded DEK version of the key is purged until this dataset has reported
 * that it holds no ciphertext under it.
 */
import { STORE_KINDS, type Dataset, type StoreKind } from "../domain/dataset.js";
import { requireValidId } from "../domain/identifiers.js";
import type { KeyState } from "../domain/key-model.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { insertDataset } from "../storage/dataset.repository.js";
import { lockKeyShared } from "../storage/lifecycle.repository.js";
import { DESCRIPTION_MAX_LENGTH } from "./create-key.js";
import type { KmsContext } from "./kms-context.js";
import { notFoundError } from "./key-reader.js";

/** A key's datasets are listed in one response, so their number is bounded. */
export const MAX_DATASETS_PER_KEY = 1_000;

export interface RegisterDatasetInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly datasetId: string;
  readonly storeKind: StoreKind | undefined;
  readonly description?: string | undefined;
}

export async function registerDataset(context: KmsContext, input: RegisterDatasetInput): Promise<Dataset> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const datasetId = requireValidId("dataset_id", input.datasetId);
  const storeKind = input.storeKind;
  if (storeKind === undefined || !STORE_KINDS.includes(storeKind)) {
    throw invalidField("store_kind", `is required: one of ${STORE_KINDS.map((k) => `STORE_KIND_${k}`).join(", ")}`);
  }
  const description = input.description ?? "";
  if (description.length > DESCRIPTION_MAX_LENGTH) {
    throw invalidField("description", `must be at most ${DESCRIPTION_MAX_LENGTH} characters`, { maxLength: String(DESCRIPTION_MAX_LENGTH) });
  }
  const now = context.clock.now();

  await context.db.transaction().execute(async (tx) => {
    // FOR SHARE: a purge of this key (which locks it FOR UPDATE) sees this dataset or runs before it exists.
    const key = await lockKeyShared(tx, { tenantId, keyId });
    if (key === undefined) throw await notFoundError(tx, tenantId, keyId);
    assertKeyNotDestroyed(tenantId, keyId, key.state as KeyState);
    const { n } = await tx
      .selectFrom("datasets")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .executeTakeFirstOrThrow();
    if (Number(n) >= MAX_DATASETS_PER_KEY) {
      throw invalidField("dataset_id", `key ${keyId} already has the maximum of ${MAX_DATASETS_PER_KEY} datasets`, {
        maxDatasets: String(MAX_DATASETS_PER_KEY),
      });
    }
    const outcome = await insertDataset(tx, {
      tenant_id: tenantId,
      key_id: keyId,
      dataset_id: datasetId,
      store_kind: storeKind,
      description,
      create_time: now,
    });
    if (outcome === "already-exists") {
      throw new KmsError("DATASET_ALREADY_EXISTS", `dataset_id: key ${keyId} already has a dataset ${datasetId}`, { field: "dataset_id" });
    }
  });
  return { tenantId, keyId, datasetId, storeKind, description, createTime: now, lastReportTime: undefined, counts: new Map() };
}

/** Datasets stay readable on a destroyed key (its tombstone) but can no longer change. */
export function assertKeyNotDestroyed(tenantId: string, keyId: string, state: KeyState): void {
  if (state === "DESTROYED") {
    throw new KmsError("KEY_DESTROYED", `key ${keyId} of tenant ${tenantId} is destroyed: its datasets can no longer change`);
  }
}

/**
 * The re-encryption inventory: a dataset is a place where a data owner keeps
 * ciphertexts under one key's DEKs (a table, a topic, a bucket...). Its owner
 * reports how many ciphertexts remain under each DEK version; a superseded
 * version is purged only once every dataset says none remain.
 */
export type StoreKind = "POSTGRES" | "REDIS" | "KAFKA" | "S3" | "ELASTICSEARCH" | "OTHER";

export const STORE_KINDS: readonly StoreKind[] = ["POSTGRES", "REDIS", "KAFKA", "S3", "ELASTICSEARCH", "OTHER"];

export interface Dataset {
  readonly tenantId: string;
  readonly keyId: string;
  readonly datasetId: string;
  readonly storeKind: StoreKind;
  readonly description: string;
  readonly createTime: Date;
  /** Undefined until the first report. */
  readonly lastReportTime: Date | undefined;
  /** Ciphertexts per DEK version, as last reported; versions with none are absent. */
  readonly counts: ReadonlyMap<number, number>;
}

/** Re-encryption progress of one dataset: how much of it is already under the key's primary DEK version. */
export interface DatasetProgress {
  readonly datasetId: string;
  readonly storeKind: StoreKind;
  readonly totalCiphertexts: number;
  readonly underPrimary: number;
  readonly lastReportTime: Date | undefined;
}

export function datasetProgress(dataset: Dataset, primaryDekVersion: number): DatasetProgress {
  let total = 0;
  for (const count of dataset.counts.values()) total += count;
  return {
    datasetId: dataset.datasetId,
    storeKind: dataset.storeKind,
    totalCiphertexts: total,
    underPrimary: dataset.counts.get(primaryDekVersion) ?? 0,
    lastReportTime: dataset.lastReportTime,
  };
}

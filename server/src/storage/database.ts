import type { ColumnType, Generated, Insertable, Kysely, Selectable, Updateable } from "kysely";

/**
 * Row types of the KMS database, as kysely sees them. Column names are the
 * database's (snake_case); repositories return these rows unmapped and the
 * service layer turns them into domain objects.
 *
 * Key material is only ever stored wrapped: by the root (master) key for a
 * KEK version, by a KEK version for a DEK version.
 *
 * Later migrations add tables here: one interface per table and one entry in
 * `Database`.
 */
export interface Database {
  datasets: DatasetsTable;
  dataset_counts: DatasetCountsTable;
  event_sequence: EventSequenceTable;
  key_events: KeyEventsTable;
  jobs: JobsTable;
  job_batches: JobBatchesTable;
  root_keys: RootKeysTable;
  tenants: TenantsTable;
  keys: KeysTable;
  kek_versions: KekVersionsTable;
  dek_versions: DekVersionsTable;
}

/** The `Kysely` the repositories take; a `Transaction<Database>` is one too. */
export type Executor = Kysely<Database>;

/** `timestamptz`: both engines return `Date`. */
export type Timestamp = ColumnType<Date, Date, Date>;
export type NullableTimestamp = ColumnType<Date | null, Date | null | undefined, Date | null>;
/** `bytea`: read as `Buffer` on both engines, written from any `Uint8Array`. */
export type Bytes = ColumnType<Buffer, Uint8Array, Uint8Array>;
export type NullableBytes = ColumnType<Buffer | null, Uint8Array | null | undefined, Uint8Array | null>;

export const KEK_ALGORITHMS = ["AES_256", "RSA_4096"] as const;
export type KekAlgorithm = (typeof KEK_ALGORITHMS)[number];

export const KEY_PROTECTIONS = ["PLATFORM_MANAGED", "CUSTOMER_MANAGED"] as const;
export type KeyProtection = (typeof KEY_PROTECTIONS)[number];

export const KEY_STATES = ["ENABLED", "REVOKED", "DESTROYED"] as const;
export type KeyState = (typeof KEY_STATES)[number];

export const KEK_VERSION_STATES = ["PRIMARY", "RETIRING", "DESTROYED"] as const;
export type KekVersionState = (typeof KEK_VERSION_STATES)[number];

export const DEK_VERSION_STATES = ["PRIMARY", "DECRYPT_ONLY", "PENDING_PURGE", "PURGED", "REVOKED"] as const;
export type DekVersionState = (typeof DEK_VERSION_STATES)[number];

export interface TenantsTable {
  tenant_id: string;
  create_time: Timestamp;
}

export interface KeysTable {
  tenant_id: string;
  key_id: string;
  /** 16 random bytes naming this key for its whole life; never reused. */
  key_uid: Bytes;
  description: ColumnType<string, string | undefined, string>;
  kek_algorithm: KekAlgorithm;
  protection: KeyProtection;
  state: KeyState;
  dek_rotation_period_seconds: number;
  kek_rotation_period_seconds: number;
  primary_dek_version: number;
  primary_kek_version: number;
  create_time: Timestamp;
  update_time: Timestamp;
  revoke_time: NullableTimestamp;
  dek_grace_period_seconds: ColumnType<number, number | undefined, number>;
  decrypt_quiet_window_seconds: ColumnType<number, number | undefined, number>;
  revocation_waiting_period_seconds: ColumnType<number, number | undefined, number>;
  /** While REVOKED: when it is destroyed unless restored. */
  scheduled_destroy_time: NullableTimestamp;
  destroy_time: NullableTimestamp;
  /** When the next rotation is due; null unless ENABLED. */
  next_rotation_time: NullableTimestamp;
  rotation_failure_time: NullableTimestamp;
  rotation_failure_message: ColumnType<string | null, string | null | undefined, string | null>;
  rotation_failure_attempts: ColumnType<number, number | undefined, number>;
  /** BYOK: "AWS_KMS" | "AZURE_KEY_VAULT" | "GCP_KMS"; null for platform-managed keys. */
  customer_provider: ColumnType<string | null, string | null | undefined, string | null>;
  customer_key_uri: ColumnType<string | null, string | null | undefined, string | null>;
  customer_key_last_success_time: NullableTimestamp;
  customer_key_last_error_time: NullableTimestamp;
  customer_key_last_error_class: ColumnType<string | null, string | null | undefined, string | null>;
  customer_key_last_error: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface KekVersionsTable {
  tenant_id: string;
  key_id: string;
  version: number;
  state: KekVersionState;
  /** The KEK wrapped by the root key; null for a customer-managed KEK and once destroyed. */
  wrapped_material: NullableBytes;
  /** RSA-4096 public key, SPKI DER (not secret); null for AES. */
  public_key: NullableBytes;
  root_provider: string;
  root_key_id: string;
  create_time: Timestamp;
  destroy_time: NullableTimestamp;
  /** When it stopped being primary. */
  retire_time: NullableTimestamp;
  /** While RETIRING: re-wrap progress of the DEK versions it wrapped. */
  rewrapped_dek_count: ColumnType<number, number | undefined, number>;
  total_dek_count: ColumnType<number, number | undefined, number>;
}

export interface DekVersionsTable {
  tenant_id: string;
  key_id: string;
  version: number;
  state: DekVersionState;
  /** The KEK version that wraps `wrapped_material`. */
  kek_version: number;
  /** The DEK wrapped by KEK version `kek_version`; null once purged. */
  wrapped_material: NullableBytes;
  create_time: Timestamp;
  /** When this version stopped being primary. */
  rotate_time: NullableTimestamp;
  /** The last Decrypt served of this version (written at most once a minute). */
  last_decrypt_time: NullableTimestamp;
  purge_time: NullableTimestamp;
  revoke_time: NullableTimestamp;
}

export interface DatasetsTable {
  tenant_id: string;
  key_id: string;
  dataset_id: string;
  store_kind: string;
  description: ColumnType<string, string | undefined, string>;
  create_time: Timestamp;
  last_report_time: NullableTimestamp;
}

export interface DatasetCountsTable {
  tenant_id: string;
  key_id: string;
  dataset_id: string;
  dek_version: number;
  ciphertexts: number;
}

export interface EventSequenceTable {
  singleton: boolean;
  last_event_id: number;
}

export interface KeyEventsTable {
  event_id: number;
  tenant_id: string;
  key_id: string;
  type: string;
  dek_version: number | null;
  kek_version: number | null;
  event_time: Timestamp;
}

export interface JobsTable {
  job_id: Generated<number>;
  kind: string;
  tenant_id: string | null;
  key_id: string | null;
  kek_version: number | null;
  root_key_id: string | null;
  state: "PENDING" | "DONE" | "FAILED";
  total: ColumnType<number, number | undefined, number>;
  done: ColumnType<number, number | undefined, number>;
  lease_owner: string | null;
  lease_until: NullableTimestamp;
  attempts: ColumnType<number, number | undefined, number>;
  /** Batches applied so far; the last one's job_batches.batch_no. */
  batches: ColumnType<number, number | undefined, number>;
  last_error: string | null;
  create_time: Timestamp;
  update_time: Timestamp;
  finish_time: NullableTimestamp;
}

export interface JobBatchesTable {
  job_id: number;
  batch_no: number;
  rows: number;
  worker: string;
  apply_time: Timestamp;
}

export interface RootKeysTable {
  root_key_id: string;
  provider: string;
  state: "CURRENT" | "RETIRING" | "RETIRED";
  create_time: Timestamp;
  retire_time: NullableTimestamp;
}

export type TenantRow = Selectable<TenantsTable>;
export type NewTenantRow = Insertable<TenantsTable>;

export type KeyRow = Selectable<KeysTable>;
export type NewKeyRow = Insertable<KeysTable>;
/** What may change on a key: everything but its identity. */
export type KeyPatch = Omit<Updateable<KeysTable>, "tenant_id" | "key_id" | "key_uid" | "create_time">;

export type KekVersionRow = Selectable<KekVersionsTable>;
export type NewKekVersionRow = Insertable<KekVersionsTable>;
export type KekVersionPatch = Omit<Updateable<KekVersionsTable>, "tenant_id" | "key_id" | "version" | "create_time">;

export type DekVersionRow = Selectable<DekVersionsTable>;
export type NewDekVersionRow = Insertable<DekVersionsTable>;
export type DekVersionPatch = Omit<Updateable<DekVersionsTable>, "tenant_id" | "key_id" | "version" | "create_time">;

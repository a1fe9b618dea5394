import type { ColumnType, Insertable, Kysely, Selectable, Updateable } from "kysely";

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

export const DEK_VERSION_STATES = ["PRIMARY", "DECRYPT_ONLY", "PENDING_PURGE", "PURGED"] as const;
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

import { sql } from "kysely";
import type {
  DekVersionPatch,
  DekVersionRow,
  DekVersionState,
  Executor,
  KekAlgorithm,
  KekVersionState,
  KeyState,
  NewDekVersionRow,
} from "./database.js";

export async function insertDekVersion(db: Executor, row: NewDekVersionRow): Promise<void> {
  await db.insertInto("dek_versions").values(row).execute();
}

export async function findDekVersion(
  db: Executor,
  tenantId: string,
  keyId: string,
  version: number,
): Promise<DekVersionRow | undefined> {
  return db
    .selectFrom("dek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", version)
    .executeTakeFirst();
}

/** A key's DEK versions, oldest first. */
export async function listDekVersions(db: Executor, tenantId: string, keyId: string): Promise<DekVersionRow[]> {
  return db
    .selectFrom("dek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .orderBy("version")
    .execute();
}

/** The DEK versions of several keys of one tenant in one query, by key_id then version. */
export async function listDekVersionsForKeys(
  db: Executor,
  tenantId: string,
  keyIds: readonly string[],
): Promise<DekVersionRow[]> {
  if (keyIds.length === 0) return [];
  return db
    .selectFrom("dek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "in", [...keyIds])
    .orderBy("key_id")
    .orderBy("version")
    .execute();
}

/** Applies `patch`; returns the updated row, or undefined when there is no such version. */
export async function updateDekVersion(
  db: Executor,
  tenantId: string,
  keyId: string,
  version: number,
  patch: DekVersionPatch,
): Promise<DekVersionRow | undefined> {
  if (Object.keys(patch).length === 0) throw new Error("updateDekVersion: empty patch");
  return db
    .updateTable("dek_versions")
    .set(patch)
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", version)
    .returningAll()
    .executeTakeFirst();
}

export interface RewrappedDekVersion {
  readonly version: number;
  /** The KEK version that now wraps the material. */
  readonly kekVersion: number;
  readonly wrappedMaterial: Uint8Array;
}

/**
 * Stores re-wrapped material for several DEK versions of one key in one
 * statement (after a KEK rotation). Purged versions are never given material
 * back. Returns how many rows changed, so the caller can check it against
 * `rows.length`.
 */
export async function updateDekVersionsWrapped(
  db: Executor,
  tenantId: string,
  keyId: string,
  rows: readonly RewrappedDekVersion[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const values = sql.join(
    rows.map((row) => sql`(${row.version}::integer, ${row.kekVersion}::integer, ${row.wrappedMaterial}::bytea)`),
  );
  const result = await sql`
    update dek_versions as d
    set kek_version = v.kek_version, wrapped_material = v.wrapped_material
    from (values ${values}) as v (version, kek_version, wrapped_material)
    where d.tenant_id = ${tenantId}
      and d.key_id = ${keyId}
      and d.version = v.version
      and d.state <> 'PURGED'`.execute(db);
  return Number(result.numAffectedRows ?? 0n);
}

/** Everything the hot path needs to hand out or unwrap one DEK version. */
export interface DataKeyMaterial {
  readonly keyUid: Buffer;
  readonly keyState: KeyState;
  readonly kekAlgorithm: KekAlgorithm;
  readonly dekVersion: number;
  readonly dekState: DekVersionState;
  /** Null once the version is purged. */
  readonly wrappedDek: Buffer | null;
  /** The last Decrypt of this version on record (decrypt-tracking.ts); null if none. */
  readonly lastDecryptTime: Date | null;
  readonly kekVersion: number;
  readonly kekState: KekVersionState;
  /** The KEK wrapped by the root key; null for customer-managed KEKs and destroyed versions. */
  readonly wrappedKek: Buffer | null;
  /** RSA SPKI DER; null for AES. */
  readonly kekPublicKey: Buffer | null;
  readonly rootProvider: string;
  readonly rootKeyId: string;
}

/**
 * The hot path's single query: key → DEK version (the primary one, or the one
 * asked for) → the KEK version that wraps it. Undefined when the key or that
 * DEK version does not exist; telling which is the (rare) caller's job.
 */
export async function loadDataKeyMaterial(
  db: Executor,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): Promise<DataKeyMaterial | undefined> {
  return db
    .selectFrom("keys as k")
    .innerJoin("dek_versions as d", (join) =>
      join
        .onRef("d.tenant_id", "=", "k.tenant_id")
        .onRef("d.key_id", "=", "k.key_id")
        .on((eb) =>
          dekVersion === "primary" ? eb("d.version", "=", eb.ref("k.primary_dek_version")) : eb("d.version", "=", dekVersion),
        ),
    )
    .innerJoin("kek_versions as kv", (join) =>
      join
        .onRef("kv.tenant_id", "=", "d.tenant_id")
        .onRef("kv.key_id", "=", "d.key_id")
        .onRef("kv.version", "=", "d.kek_version"),
    )
    .where("k.tenant_id", "=", tenantId)
    .where("k.key_id", "=", keyId)
    .select(DATA_KEY_MATERIAL_COLUMNS)
    .executeTakeFirst();
}

/** What the hot path's read selects, over keys k, dek_versions d and kek_versions kv (also used by the batched read). */
export const DATA_KEY_MATERIAL_COLUMNS = [
  "k.key_uid as keyUid",
  "k.state as keyState",
  "k.kek_algorithm as kekAlgorithm",
  "d.version as dekVersion",
  "d.state as dekState",
  "d.wrapped_material as wrappedDek",
  "d.last_decrypt_time as lastDecryptTime",
  "d.kek_version as kekVersion",
  "kv.state as kekState",
  "kv.wrapped_material as wrappedKek",
  "kv.public_key as kekPublicKey",
  "kv.root_provider as rootProvider",
  "kv.root_key_id as rootKeyId",
] as const;

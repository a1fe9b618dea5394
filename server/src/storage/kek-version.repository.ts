import type { Executor, KekVersionPatch, KekVersionRow, NewKekVersionRow } from "./database.js";

export async function insertKekVersion(db: Executor, row: NewKekVersionRow): Promise<void> {
  await db.insertInto("kek_versions").values(row).execute();
}

export async function findKekVersion(
  db: Executor,
  tenantId: string,
  keyId: string,
  version: number,
): Promise<KekVersionRow | undefined> {
  return db
    .selectFrom("kek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", version)
    .executeTakeFirst();
}

/** A key's KEK versions, oldest first. */
export async function listKekVersions(db: Executor, tenantId: string, keyId: string): Promise<KekVersionRow[]> {
  return db
    .selectFrom("kek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .orderBy("version")
    .execute();
}

/** The KEK versions of several keys of one tenant in one query, by key_id then version. */
export async function listKekVersionsForKeys(
  db: Executor,
  tenantId: string,
  keyIds: readonly string[],
): Promise<KekVersionRow[]> {
  if (keyIds.length === 0) return [];
  return db
    .selectFrom("kek_versions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("key_id", "in", [...keyIds])
    .orderBy("key_id")
    .orderBy("version")
    .execute();
}

/** Applies `patch`; returns the updated row, or undefined when there is no such version. */
export async function updateKekVersion(
  db: Executor,
  tenantId: string,
  keyId: string,
  version: number,
  patch: KekVersionPatch,
): Promise<KekVersionRow | undefined> {
  if (Object.keys(patch).length === 0) throw new Error("updateKekVersion: empty patch");
  return db
    .updateTable("kek_versions")
    .set(patch)
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .where("version", "=", version)
    .returningAll()
    .executeTakeFirst();
}

import type { Executor, KeyPatch, KeyRow, KeyState, NewKeyRow } from "./database.js";

/**
 * Inserts a key unless the tenant already has one with that key_id.
 *
 * The duplicate is detected with ON CONFLICT DO NOTHING rather than by
 * catching the unique violation (SQLSTATE 23505): a failed statement aborts
 * the enclosing PostgreSQL transaction, while DO NOTHING leaves it usable.
 * (A clash of the random key_uid is not swallowed: it still raises 23505.)
 */
export async function insertKey(db: Executor, row: NewKeyRow): Promise<"inserted" | "already-exists"> {
  const inserted = await db
    .insertInto("keys")
    .values(row)
    .onConflict((conflict) => conflict.columns(["tenant_id", "key_id"]).doNothing())
    .returning("key_id")
    .executeTakeFirst();
  return inserted === undefined ? "already-exists" : "inserted";
}

export interface FindKeyOptions {
  /** Lock the row (SELECT ... FOR UPDATE) until the enclosing transaction ends. */
  forUpdate?: boolean | undefined;
}

export async function findKey(
  db: Executor,
  tenantId: string,
  keyId: string,
  options: FindKeyOptions = {},
): Promise<KeyRow | undefined> {
  let query = db.selectFrom("keys").selectAll().where("tenant_id", "=", tenantId).where("key_id", "=", keyId);
  if (options.forUpdate === true) query = query.forUpdate();
  return query.executeTakeFirst();
}

export interface ListKeysOptions {
  /** Only keys in this state. */
  state?: KeyState | undefined;
  /** Keyset pagination: only keys whose key_id sorts after this one. */
  afterKeyId?: string | undefined;
  /** At most this many rows; ask for one more than a page to learn whether another page follows. */
  limit: number;
}

/** A tenant's keys in key_id (byte) order, one page at a time. */
export async function listKeys(db: Executor, tenantId: string, options: ListKeysOptions): Promise<KeyRow[]> {
  if (!Number.isInteger(options.limit) || options.limit < 1) throw new RangeError("limit must be a positive integer");
  let query = db.selectFrom("keys").selectAll().where("tenant_id", "=", tenantId);
  if (options.state !== undefined) query = query.where("state", "=", options.state);
  if (options.afterKeyId !== undefined) query = query.where("key_id", ">", options.afterKeyId);
  // key_id is declared COLLATE "C", so this order and the ">" above are byte
  // order on every engine and locale, and the primary key index serves both.
  return query.orderBy("key_id").limit(options.limit).execute();
}

/** Applies `patch`; returns the updated row, or undefined when there is no such key. */
export async function updateKey(
  db: Executor,
  tenantId: string,
  keyId: string,
  patch: KeyPatch,
): Promise<KeyRow | undefined> {
  if (Object.keys(patch).length === 0) throw new Error("updateKey: empty patch");
  return db
    .updateTable("keys")
    .set(patch)
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .returningAll()
    .executeTakeFirst();
}

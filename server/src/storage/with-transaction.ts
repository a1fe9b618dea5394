import type { Transaction } from "kysely";
import type { Database, Executor } from "./database.js";

/**
 * Runs `fn` in a transaction: a new one, or — when `db` already is a
 * transaction — the enclosing one (kysely does not nest transactions).
 * Commits when `fn` resolves, rolls back when it throws.
 *
 * Inside `fn`, use the transaction it is given, never the outer `Kysely`: on
 * PGlite the outer one waits for the session the transaction holds.
 */
export async function withTransaction<T>(db: Executor, fn: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
  if (db.isTransaction) return fn(db as Transaction<Database>);
  return db.transaction().execute(fn);
}

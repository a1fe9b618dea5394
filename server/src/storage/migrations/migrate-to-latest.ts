import { type Kysely, type Migration, type MigrationResult, Migrator, NO_MIGRATIONS, sql } from "kysely";
import * as createKeyTables from "./20251129120000_create-key-tables.js";
import * as lifecycle from "./20251129130000_lifecycle.js";
import * as jobBatches from "./20251129140000_job-batches.js";
import * as hotPathGenerations from "./20251129150000_hot-path-generations.js";
import * as hotPathLeases from "./20251129190000_hot-path-leases.js";

/**
 * Every migration, by name; kysely applies them in name order. Listed here
 * rather than found by scanning a folder, so it works the same under tsx,
 * vitest and a bundle. Add a new migration as a new timestamped file and one
 * line below; never edit a released one.
 */
export const migrations: Readonly<Record<string, Migration>> = {
  "20251129120000_create-key-tables": createKeyTables,
  "20251129130000_lifecycle": lifecycle,
  "20251129140000_job-batches": jobBatches,
  "20251129150000_hot-path-generations": hotPathGenerations,
  "20251129190000_hot-path-leases": hotPathLeases,
};

/**
 * A kysely Migrator over `migrations`, keeping its bookkeeping tables in the
 * connection's current schema (the first existing schema on search_path).
 *
 * Naming the schema matters: without it kysely looks for its tables in every
 * schema and would take another schema's `kysely_migration` for its own.
 *
 * Concurrency: on PostgreSQL the Migrator creates its tables tolerating a
 * racing creator, then holds a session advisory lock while it applies
 * migrations inside one transaction, so replicas starting together apply each
 * migration once; the others wait and then find nothing to do.
 */
export async function createMigrator(db: Kysely<any>): Promise<Migrator> {
  const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db);
  const schema = rows[0]?.schema;
  if (schema === null || schema === undefined) {
    throw new Error("cannot migrate: no schema on the search_path exists");
  }
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableSchema: schema,
  });
}

/** Applies every pending migration; returns the names applied. Throws if one fails. */
export async function migrateToLatest(db: Kysely<any>): Promise<string[]> {
  const migrator = await createMigrator(db);
  return checked(await migrator.migrateToLatest());
}

/** Reverts every applied migration, newest first; returns the names reverted. */
export async function migrateDownToEmpty(db: Kysely<any>): Promise<string[]> {
  const migrator = await createMigrator(db);
  return checked(await migrator.migrateTo(NO_MIGRATIONS));
}

function checked(resultSet: { error?: unknown; results?: MigrationResult[] }): string[] {
  const results = resultSet.results ?? [];
  if (resultSet.error !== undefined) {
    const failed = results.find((result) => result.status === "Error")?.migrationName;
    const where = failed === undefined ? "" : ` in ${failed}`;
    throw new Error(`database migration failed${where}`, { cause: resultSet.error });
  }
  return results.filter((result) => result.status === "Success").map((result) => result.migrationName);
}

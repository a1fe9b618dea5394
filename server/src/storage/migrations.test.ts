import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engines } from "../../../test/support/databases.js";
import { createTestDatabase } from "../../../test/support/kms-processes.js";
import { migrateDownToEmpty, migrateToLatest, migrations } from "./migrations/migrate-to-latest.js";
import { type OpenedDatabase, openDatabase } from "./open-database.js";

const KEY_TABLES = ["dataset_counts", "datasets", "dek_versions", "event_sequence", "hot_path_generations", "hot_path_pending", "hot_path_pings", "hot_path_replicas", "job_batches", "jobs", "kek_versions", "key_events", "keys", "root_keys", "tenants"];
const KYSELY_TABLES = ["kysely_migration", "kysely_migration_lock"];

async function tablesOf(opened: OpenedDatabase): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select table_name as name from information_schema.tables
    where table_schema = current_schema() order by table_name`.execute(opened.db);
  return rows.map((row) => row.name);
}

async function appliedMigrations(opened: OpenedDatabase): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(opened.db);
  return rows.map((row) => row.name);
}

describe.each(engines)("migrations on $name", (engine) => {
  let opened: OpenedDatabase;
  // PostgreSQL: a database of its own, not a schema in the shared one. Down migrations drop tables, and
  // kysely's Migrator introspects every schema of its database, so a table dropped here while another
  // file migrates would fail that file ("relation … does not exist").
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let databaseUrl: string | undefined;
  beforeAll(async () => {
    if (engine.name === "postgres") {
      database = await createTestDatabase("kms_migrations");
      databaseUrl = database.url;
      opened = await openDatabase({ databaseUrl, poolSize: 5 });
    } else {
      opened = await engine.open({ migrate: false });
    }
  });
  afterAll(async () => {
    await opened?.close();
    await database?.drop();
  });

  it("start from an empty database", async () => {
    expect(await tablesOf(opened)).toEqual([]);
  });

  it("apply every migration to an empty database, creating the key tables", async () => {
    expect(await migrateToLatest(opened.db)).toEqual(Object.keys(migrations).sort());
    expect(await tablesOf(opened)).toEqual([...KEY_TABLES, ...KYSELY_TABLES].sort());
    expect(await appliedMigrations(opened)).toEqual(Object.keys(migrations).sort());
  });

  it("apply nothing the second time", async () => {
    expect(await migrateToLatest(opened.db)).toEqual([]);
  });

  it("reverse every migration with down, leaving only kysely's bookkeeping", async () => {
    expect(await migrateDownToEmpty(opened.db)).toEqual(Object.keys(migrations).sort().reverse());
    expect(await tablesOf(opened)).toEqual(KYSELY_TABLES);
    expect(await appliedMigrations(opened)).toEqual([]);
  });

  it("apply again after down (down removed everything up creates)", async () => {
    expect(await migrateToLatest(opened.db)).toEqual(Object.keys(migrations).sort());
    expect(await tablesOf(opened)).toEqual([...KEY_TABLES, ...KYSELY_TABLES].sort());
  });

  it("apply each migration once when several servers migrate the same empty database at once", async () => {
    await migrateDownToEmpty(opened.db);
    await sql`drop table kysely_migration`.execute(opened.db);
    await sql`drop table kysely_migration_lock`.execute(opened.db);
    expect(await tablesOf(opened)).toEqual([]);

    // Each "server" has its own pool (its own sessions) on PostgreSQL; PGlite
    // is one process's embedded database, so its servers share the instance.
    const servers: OpenedDatabase[] = [opened];
    if (engine.name === "postgres") {
      const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(opened.db);
      const schema = rows[0]!.schema;
      for (let i = 0; i < 3; i++) servers.push(await openDatabase({ databaseUrl, schema }));
    } else {
      servers.push(opened, opened, opened);
    }
    try {
      const applied = await Promise.all(servers.map((server) => migrateToLatest(server.db)));
      expect(applied.flat().sort()).toEqual(Object.keys(migrations).sort());
      expect(await appliedMigrations(opened)).toEqual(Object.keys(migrations).sort());
      expect(await tablesOf(opened)).toEqual([...KEY_TABLES, ...KYSELY_TABLES].sort());
    } finally {
      for (const server of servers) if (server !== opened) await server.close();
    }
  });
});

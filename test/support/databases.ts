/**
 * The database engines every storage-touching test runs its cases on:
 *
 *   describe.each(engines)("key repository on $name", (engine) => {
 *     let opened: OpenedDatabase;
 *     beforeAll(async () => { opened = await engine.open(); });
 *     afterAll(async () => { await opened.close(); });
 *     ...
 *   });
 *
 * `open()` gives a fresh, migrated, isolated database:
 * - pglite: a new in-memory PGlite (2-3 s and 0.5-0.85 GB each: open one per
 *   test file in beforeAll, not one per test, and close it);
 * - postgres: a new schema with a random name in the database at
 *   KMS_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
 *   dropped when the whole run ends (see test-schemas.global-setup.ts).
 *
 * PostgreSQL is not optional: if it cannot be reached, the postgres cases
 * fail with a message saying so. Outside CI, KMS_TEST_SKIP_POSTGRES=1 leaves
 * them out instead; in CI that flag is refused.
 */
import { type OpenedDatabase, openDatabase } from "../../server/src/storage/open-database.js";
import { migrateToLatest } from "../../server/src/storage/migrations/migrate-to-latest.js";
import { createTestSchema, isSet, postgresTestUrl } from "./test-schemas.js";

export { createTestSchema, postgresTestUrl };

export type EngineName = "postgres" | "pglite";

export interface OpenEngineOptions {
  /** Apply every migration (default true); false gives an empty database. */
  migrate?: boolean | undefined;
}

export interface TestEngine {
  readonly name: EngineName;
  open(options?: OpenEngineOptions): Promise<OpenedDatabase>;
}

const inCi = isSet(process.env["CI"]);
const skipPostgres = process.env["KMS_TEST_SKIP_POSTGRES"] === "1";
if (skipPostgres && inCi) {
  throw new Error("KMS_TEST_SKIP_POSTGRES=1 is refused in CI: the storage tests must run on PostgreSQL there");
}

const pgliteEngine: TestEngine = {
  name: "pglite",
  async open(options = {}) {
    const opened = await openDatabase({});
    return prepared(opened, options);
  },
};

const postgresEngine: TestEngine = {
  name: "postgres",
  async open(options = {}) {
    // The schema outlives close(): it is dropped when the run ends (test-schemas.global-setup.ts).
    const schema = await createTestSchema();
    return prepared(await openDatabase({ databaseUrl: postgresTestUrl, schema, poolSize: 5 }), options);
  },
};

export const engines: TestEngine[] = skipPostgres ? [pgliteEngine] : [postgresEngine, pgliteEngine];

export function openEngineDatabase(name: EngineName, options?: OpenEngineOptions): Promise<OpenedDatabase> {
  const engine = engines.find((candidate) => candidate.name === name);
  if (engine === undefined) throw new Error(`engine ${name} is not enabled (KMS_TEST_SKIP_POSTGRES=1?)`);
  return engine.open(options);
}

async function prepared(opened: OpenedDatabase, options: OpenEngineOptions): Promise<OpenedDatabase> {
  if (options.migrate === false) return opened;
  try {
    await migrateToLatest(opened.db);
  } catch (error) {
    await opened.close();
    throw error;
  }
  return opened;
}

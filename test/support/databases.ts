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
 *   dropped again by `close()`.
 *
 * PostgreSQL is not optional: if it cannot be reached, the postgres cases
 * fail with a message saying so. Outside CI, KMS_TEST_SKIP_POSTGRES=1 leaves
 * them out instead; in CI that flag is refused.
 */
import pg from "pg";
import { type OpenedDatabase, openDatabase } from "../../server/src/storage/open-database.js";
import { migrateToLatest } from "../../server/src/storage/migrations/migrate-to-latest.js";

export type EngineName = "postgres" | "pglite";

export interface OpenEngineOptions {
  /** Apply every migration (default true); false gives an empty database. */
  migrate?: boolean | undefined;
}

export interface TestEngine {
  readonly name: EngineName;
  open(options?: OpenEngineOptions): Promise<OpenedDatabase>;
}

export const postgresTestUrl = process.env["KMS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

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
    const schema = await createTestSchema();
    let opened: OpenedDatabase;
    try {
      opened = await openDatabase({ databaseUrl: postgresTestUrl, schema, poolSize: 5 });
    } catch (error) {
      await dropTestSchema(schema);
      throw error;
    }
    const withSchemaDropped: OpenedDatabase = {
      db: opened.db,
      engine: opened.engine,
      async close() {
        try {
          await opened.close();
        } finally {
          await dropTestSchema(schema);
        }
      },
    };
    return prepared(withSchemaDropped, options);
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

// Schemas are named kms_test_<unix seconds>_<random>, so a run can drop the
// ones a crashed run left behind without touching any a parallel run still uses.
const SCHEMA_PREFIX = "kms_test_";
const STALE_AFTER_SECONDS = 6 * 60 * 60;
let staleSchemasDropped = false;

/** A fresh, empty schema in the test PostgreSQL (for opening one database twice: two "replicas"). */
export async function createTestSchema(): Promise<string> {
  const seconds = Math.floor(Date.now() / 1000);
  const schema = `${SCHEMA_PREFIX}${seconds}_${Math.random().toString(36).slice(2, 10)}`;
  await withAdminClient(async (client) => {
    if (!staleSchemasDropped) {
      staleSchemasDropped = true;
      await dropStaleSchemas(client, seconds);
    }
    await client.query(`create schema ${schema}`);
  });
  return schema;
}

export async function dropTestSchema(schema: string): Promise<void> {
  await withAdminClient((client) => client.query(`drop schema if exists ${schema} cascade`));
}

async function dropStaleSchemas(client: pg.Client, nowSeconds: number): Promise<void> {
  const { rows } = await client.query<{ nspname: string }>(
    "select nspname from pg_namespace where nspname like 'kms\\_test\\_%'",
  );
  for (const { nspname } of rows) {
    const created = Number(/^kms_test_(\d+)_[a-z0-9]+$/.exec(nspname)?.[1]);
    if (Number.isFinite(created) && nowSeconds - created > STALE_AFTER_SECONDS) {
      await client.query(`drop schema if exists ${nspname} cascade`);
    }
  }
}

async function withAdminClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: postgresTestUrl, connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
  } catch (error) {
    const hint = inCi
      ? "CI must provide PostgreSQL for the storage tests."
      : "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), point " +
        "KMS_TEST_DATABASE_URL at one, or set KMS_TEST_SKIP_POSTGRES=1 to run the PGlite cases only.";
    await client.end().catch(() => undefined);
    throw new Error(`PostgreSQL for the storage tests is unreachable at ${redacted(postgresTestUrl)}. ${hint}`, {
      cause: error,
    });
  }
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function redacted(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparseable URL)";
  }
}

function isSet(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

/**
 * Throw-away PostgreSQL schemas for tests, named kms_test_<run id>_<random>
 * where the run id is <unix seconds>_<random>: a run can drop what a crashed
 * run left behind by age, and its own schemas by run id, without touching a
 * parallel run's. Dropped at the end of the run (test-schemas.global-setup.ts).
 */
import pg from "pg";

export const postgresTestUrl = process.env["KMS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";
export const RUN_ID_VARIABLE = "KMS_TEST_RUN_ID";

const SCHEMA_PREFIX = "kms_test_";
const STALE_AFTER_SECONDS = 6 * 60 * 60;
const inCi = isSet(process.env["CI"]);

export function newRunId(): string {
  return `${Math.floor(Date.now() / 1000)}_${randomTag()}`;
}

/** A fresh, empty schema in the test PostgreSQL; it lives until the run ends. */
export async function createTestSchema(): Promise<string> {
  // Outside the global set-up (a script importing this), the schema is left to the next run's stale sweep.
  const runId = process.env[RUN_ID_VARIABLE] ?? newRunId();
  const schema = `${SCHEMA_PREFIX}${runId}_${randomTag()}`;
  await withAdminClient((client) => client.query(`create schema ${schema}`));
  return schema;
}

export async function dropStaleSchemas(): Promise<void> {
  const nowSeconds = Math.floor(Date.now() / 1000);
  await withReachableAdminClient(async (client) => {
    for (const schema of await testSchemas(client)) {
      const created = Number(/^kms_test_(\d+)_/.exec(schema)?.[1]);
      if (Number.isFinite(created) && nowSeconds - created > STALE_AFTER_SECONDS) await dropSchema(client, schema);
    }
  });
}

export async function dropSchemasOfRun(runId: string): Promise<void> {
  await withReachableAdminClient(async (client) => {
    for (const schema of await testSchemas(client)) {
      if (schema.startsWith(`${SCHEMA_PREFIX}${runId}_`)) await dropSchema(client, schema);
    }
  });
}

async function testSchemas(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ nspname: string }>(
    "select nspname from pg_namespace where nspname like 'kms\\_test\\_%'",
  );
  return rows.map((row) => row.nspname);
}

async function dropSchema(client: pg.Client, schema: string): Promise<void> {
  await client.query(`drop schema if exists ${schema} cascade`);
}

// The sweeps are housekeeping: when PostgreSQL is down the tests that need it say so themselves.
async function withReachableAdminClient(fn: (client: pg.Client) => Promise<void>): Promise<void> {
  if (process.env["KMS_TEST_SKIP_POSTGRES"] === "1") return;
  await withAdminClient(fn).catch((error: unknown) => {
    if (!(error instanceof PostgresUnreachableError)) throw error;
  });
}

class PostgresUnreachableError extends Error {}

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
    throw new PostgresUnreachableError(
      `PostgreSQL for the storage tests is unreachable at ${redacted(postgresTestUrl)}. ${hint}`,
      { cause: error },
    );
  }
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function randomTag(): string {
  return Math.random().toString(36).slice(2, 10).padEnd(8, "0");
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

export function isSet(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

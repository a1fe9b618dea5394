import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { Database } from "./database.js";
import { createEngineActivity, registerEngineActivity } from "./engine-activity.js";
import { type HotPathLease, registerHotPathLease, startHotPathLease } from "./hot-path-lease.js";
import { registerPreparedStatementRunner } from "./prepared-statements.js";
import { LONGEST_LEASE_MS, ReplicaSyncedDialect, type ReplicaSyncSettings } from "./replica-synced-dialect.js";
import { type PostgresTlsOptions, resolvePostgresConnection } from "./postgres-tls.js";

export type DatabaseEngine = "postgres" | "pglite";

export interface OpenedDatabase {
  readonly db: Kysely<Database>;
  readonly engine: DatabaseEngine;
  /**
   * PostgreSQL only, after migrating: registers this handle as a replica with a
   * hot-path lease (hot-path-lease.ts), so that it serves kept rows without a
   * statement. close() ends it.
   */
  startHotPathLease?(options: { leaseMs: number; onTrouble?: (message: string, error?: unknown) => void }): Promise<void>;
  /** Ends every connection (PostgreSQL) or closes the embedded database (PGlite). */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A PostgreSQL URL (`postgres://user@host:5432/db?sslmode=verify-full`). Without one, PGlite is used. */
  databaseUrl?: string | undefined;
  /** PGlite only: the data directory; undefined keeps the database in memory. */
  dataDir?: string | undefined;
  /** PostgreSQL only: TLS options; they win over the URL's `ssl*` parameters. */
  ssl?: PostgresTlsOptions | undefined;
  /** PostgreSQL only: the schema to work in (search_path), e.g. one per test run. It must exist. */
  schema?: string | undefined;
  /** PostgreSQL only: the most connections in the pool (default 10). */
  poolSize?: number | undefined;
  /** PostgreSQL only: connect timeout in milliseconds (default 10 s). */
  connectTimeoutMillis?: number | undefined;
  /**
   * PostgreSQL only: called when an idle pooled connection fails (the server
   * restarted, the network dropped). The pool discards that connection and
   * opens a new one when needed; without a listener the error is dropped.
   */
  onIdleConnectionError?: ((error: Error) => void) | undefined;
}

/** application_name of each replica's listening connection, for pg_stat_activity. */
const HOT_PATH_LISTENER_NAME = "matih-kms hot-path listener";
const PG_INT8_OID = 20;
const PG_BYTEA_OID = 17;
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Opens the KMS database: PostgreSQL when a URL is given, otherwise embedded
 * PGlite. Applies no migrations (see `migrateToLatest`).
 *
 * Both engines return the same JavaScript types: `timestamptz` as `Date`,
 * `bytea` as `Buffer`, `int8` as `number` when it fits exactly, else `bigint`.
 */
export async function openDatabase(options: OpenDatabaseOptions = {}): Promise<OpenedDatabase> {
  if (options.databaseUrl !== undefined) return openPostgres(options.databaseUrl, options);
  for (const name of ["ssl", "schema", "poolSize"] as const) {
    if (options[name] !== undefined) throw new Error(`the ${name} option applies to PostgreSQL only, and no databaseUrl was given`);
  }
  return openPGlite(options.dataDir);
}

async function openPostgres(databaseUrl: string, options: OpenDatabaseOptions): Promise<OpenedDatabase> {
  if (options.dataDir !== undefined) throw new Error("give either databaseUrl (PostgreSQL) or dataDir (PGlite), not both");
  const { connectionString, ssl } = await resolvePostgresConnection(databaseUrl, options.ssl);
  const schema = options.schema;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Error("schema must be a lower-case SQL identifier (letters, digits, '_')");
  }
  const pool = new pg.Pool({
    connectionString,
    ssl,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMillis ?? 10_000,
    types: { getTypeParser: postgresTypeParser } as pg.CustomTypesConfig,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  const onIdleError = options.onIdleConnectionError;
  pool.on("error", (error) => onIdleError?.(error));
  const replicaSync: ReplicaSyncSettings = { fallbackWaitMs: LONGEST_LEASE_MS };
  const db = new Kysely<Database>({ dialect: new ReplicaSyncedDialect(new PostgresDialect({ pool }), replicaSync) });
  registerPreparedStatementRunner(db, async (name, text, values) => (await pool.query({ name, text, values: [...values] })).rows);
  let lease: HotPathLease | undefined;
  let leaseStarting: Promise<HotPathLease> | undefined;
  let closed = false;
  return {
    db,
    engine: "postgres",
    async startHotPathLease({ leaseMs, onTrouble }) {
      if (lease !== undefined || leaseStarting !== undefined) throw new Error("this database already holds a hot-path lease");
      if (closed) throw new Error("this database is closed");
      // Every replica runs the same lease: it is what a writer waits out when it cannot confirm acknowledgements.
      replicaSync.fallbackWaitMs = leaseMs;
      replicaSync.onTrouble = onTrouble;
      leaseStarting = startHotPathLease({
        leaseMs,
        onTrouble,
        newClient: () =>
          new pg.Client({
            connectionString,
            ssl,
            connectionTimeoutMillis: options.connectTimeoutMillis ?? 10_000,
            // A silently dropped connection must end in an error, not hang its acknowledgements.
            keepAlive: true,
            application_name: HOT_PATH_LISTENER_NAME,
            keepAliveInitialDelayMillis: 10_000,
            ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
          }),
      });
      try {
        lease = await leaseStarting;
      } finally {
        leaseStarting = undefined;
      }
      // Closed while it started: stop it rather than leave it renewing behind a closed pool.
      if (closed) {
        await lease.stop();
        return;
      }
      registerHotPathLease(db, lease);
    },
    async close() {
      closed = true;
      registerHotPathLease(db, undefined);
      await leaseStarting?.catch(() => undefined);
      await lease?.stop();
      await db.destroy();
      // Kysely only ends the pool if the database was ever used.
      if (!pool.ended) await pool.end();
    },
  };
}

async function openPGlite(dataDir: string | undefined): Promise<OpenedDatabase> {
  // Loaded only here: a server on PostgreSQL never carries the embedded engine's code (megabytes of heap).
  const [{ PGlite }, { PGliteDialect }] = await Promise.all([import("@electric-sql/pglite"), import("./pglite/pglite-dialect.js")]);
  const pglite = await PGlite.create(dataDir, {
    parsers: {
      // PGlite reads bytea as Uint8Array; node-postgres as Buffer. Use Buffer on both.
      [PG_BYTEA_OID]: parseByteaHex,
      [PG_INT8_OID]: parseInt8,
    },
  });
  const activity = createEngineActivity();
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite, activity }) });
  registerEngineActivity(db, activity);
  return {
    db,
    engine: "pglite",
    async close() {
      await db.destroy();
      // Kysely only destroys the driver (closing PGlite) if the database was ever used.
      if (!pglite.closed) await pglite.close();
    },
  };
}

function postgresTypeParser(oid: number, format?: "text" | "binary"): (value: string) => unknown {
  if (oid === PG_INT8_OID && format !== "binary") return parseInt8;
  return format === undefined ? pg.types.getTypeParser(oid) : pg.types.getTypeParser(oid, format);
}

/** int8 as an exact number when it fits, as a bigint when it does not. */
function parseInt8(text: string): number | bigint {
  const value = BigInt(text);
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** bytea text output is hex: `\x0a1b…`. */
function parseByteaHex(text: string): Buffer {
  if (!text.startsWith("\\x")) throw new Error("unexpected bytea text format (expected hex)");
  return Buffer.from(text.slice(2), "hex");
}

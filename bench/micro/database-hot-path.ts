/**
 * npm run bench:db-hot-path [-- --database pglite|pglite-memory|postgres] [--calls N]
 *
 * What the hot path's database work costs, one call at a time, in this
 * process (no RPC): the single read GenerateDataKey and Decrypt make
 * (loadDataKeyMaterial, through kysely and the project's PGlite driver), the
 * same SQL sent straight to the engine, as a prepared statement (planned
 * once), inside a PL/pgSQL function (plan kept for the session), through
 * kysely's executeQuery without the builder, the builder alone (DummyDriver),
 * a trivial `select 1`, the last-decrypt-time UPDATE Decrypt writes (at most
 * once a minute per DEK version), and the whole generateDataKey and
 * decryptDataKey service functions. The database is a throw-away one.
 *
 * On PGlite every microsecond here is spent on the server's event-loop
 * thread (the WASM PostgreSQL runs on it), and all of it is serialised by
 * the driver's mutex: 1e6 / (µs per call) is a hard ceiling on hot-path
 * calls per second, whatever the transport.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import {
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type CompiledQuery,
} from "kysely";
import pg from "pg";
import { systemClock } from "../../server/src/domain/clock.js";
import { openLocalRootProvider } from "../../server/src/providers/local/local-root-provider.js";
import { createKey } from "../../server/src/service/create-key.js";
import { decryptDataKey } from "../../server/src/service/decrypt-data-key.js";
import { generateDataKey } from "../../server/src/service/generate-data-key.js";
import { createKekCache } from "../../server/src/service/kek-cache.js";
import type { KmsContext } from "../../server/src/service/kms-context.js";
import type { Database } from "../../server/src/storage/database.js";
import { loadDataKeyMaterial } from "../../server/src/storage/dek-version.repository.js";
import { migrateToLatest } from "../../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase, type OpenedDatabase } from "../../server/src/storage/open-database.js";
import { PGliteDialect } from "../../server/src/storage/pglite/pglite-dialect.js";
import { table } from "../lib/report.js";
import { keyIdFor, tenantIdFor } from "../seed/key-names.js";

const { values: flags } = parseArgs({
  options: {
    database: { type: "string", default: "pglite" },
    calls: { type: "string", default: "3000" },
    keys: { type: "string", default: "200" },
    "postgres-url": { type: "string", default: "postgres://postgres@127.0.0.1:5432/postgres" },
  },
});
const engine = flags.database as "pglite" | "pglite-memory" | "postgres";
const calls = Number(flags.calls);
const keyCount = Number(flags.keys);

const dir = await mkdtemp(join(tmpdir(), "kms-db-bench-"));
let raw: (text: string, params: unknown[]) => Promise<unknown>;
/** The hot-path SELECT as a prepared statement: parsed and planned once per session. */
let prepared: (sqlText: string) => Promise<(params: unknown[]) => Promise<unknown>>;
/** A Kysely that reports the SQL it runs (to capture loadDataKeyMaterial's exact statement). */
let capturing: (onQuery: (query: CompiledQuery) => void) => Kysely<Database>;
let opened: OpenedDatabase;
let cleanup: () => Promise<void> = async () => {};
if (engine === "postgres") {
  const name = `kms_bench_micro_${process.pid}`;
  const admin = new pg.Client({ connectionString: flags["postgres-url"] });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(flags["postgres-url"]!);
  url.pathname = `/${name}`;
  opened = await openDatabase({ databaseUrl: url.toString() });
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  raw = (text, params) => client.query(text, params);
  prepared = async (text) => (params) => client.query({ name: "hot_path", text, values: params });
  const logPool = new pg.Pool({ connectionString: url.toString(), max: 1 });
  capturing = (onQuery) => new Kysely<Database>({ dialect: new PostgresDialect({ pool: logPool }), log: (event) => onQuery(event.query) });
  cleanup = async () => {
    await logPool.end();
    await client.end();
    await opened.close();
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  };
} else {
  // As open-database.ts opens it (its bytea/int8 parsers only change how results are mapped).
  const pglite = await PGlite.create(engine === "pglite" ? join(dir, "pglite") : undefined);
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  opened = { db, engine: "pglite", close: () => db.destroy() };
  raw = (text, params) => pglite.query(text, params);
  prepared = async (text) => {
    await pglite.query(`prepare hot_path as ${text}`);
    // EXECUTE takes no bind parameters; the ids here are [A-Za-z0-9_-] only.
    return (params) => pglite.query(`execute hot_path(${params.map((p) => `'${String(p)}'`).join(", ")})`);
  };
  capturing = (onQuery) => new Kysely<Database>({ dialect: new PGliteDialect({ pglite }), log: (event) => onQuery(event.query) });
  cleanup = () => opened.close();
}

try {
  await migrateToLatest(opened.db);
  const rootProvider = await openLocalRootProvider(dir);
  const context: KmsContext = { db: opened.db, rootProvider, clock: systemClock, kekCache: createKekCache({ maxEntries: 10_000, maxAgeMs: 300_000 }) };
  const keys = Array.from({ length: keyCount }, (_, i) => ({ tenantId: tenantIdFor(i, 10), keyId: keyIdFor(i) }));
  const t = performance.now();
  for (const key of keys) await createKey(context, key);
  const createMs = (performance.now() - t) / keys.length;

  let hotSql = "";
  let hotQuery: CompiledQuery | undefined;
  const logging = capturing((query) => {
    hotSql = query.sql;
    hotQuery = query;
  });
  await loadDataKeyMaterial(logging, keys[0]!.tenantId, keys[0]!.keyId, "primary");
  const executePrepared = await prepared(hotSql);
  // The same SELECT inside a PL/pgSQL function: PL/pgSQL keeps the statement's plan for the
  // session, and the call takes ordinary bind parameters (a migration could add such a function).
  await raw(
    `create function bench_hot_path_material(p_tenant text, p_key text)
       returns table (o_key_uid bytea, o_key_state text, o_kek_algorithm text, o_dek_version integer, o_dek_state text,
                      o_wrapped_dek bytea, o_kek_version integer, o_kek_state text, o_wrapped_kek bytea, o_kek_public_key bytea,
                      o_root_provider text, o_root_key_id text)
       language plpgsql stable as $fn$
     begin
       return query ${hotSql.replace("$1", "p_tenant").replace("$2", "p_key")};
     end $fn$`,
    [],
  );
  // kysely alone: the same repository function over a driver that returns no rows at once.
  const dummy = new Kysely<Database>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => new DummyDriver(),
      createIntrospector: (db) => new PostgresIntrospector(db),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
  });
  const references = await Promise.all(keys.map((key) => generateDataKey(context, key)));

  const measure = async (name: string, fn: (i: number) => Promise<unknown>): Promise<[string, string, string]> => {
    for (let i = 0; i < Math.min(200, calls); i++) await fn(i); // warm-up
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await fn(i);
    const wallUs = ((performance.now() - t0) * 1000) / calls;
    const cpu = process.cpuUsage(cpu0);
    const cpuUs = (cpu.user + cpu.system) / calls;
    return [name, wallUs.toFixed(0), cpuUs.toFixed(0)];
  };
  const key = (i: number) => keys[i % keys.length]!;
  const rows = [
    await measure("select 1 (engine, no kysely)", () => raw("select 1", [])),
    await measure("hot-path SELECT, same SQL straight to the engine", (i) => raw(hotSql, [key(i).tenantId, key(i).keyId])),
    await measure("hot-path SELECT as a prepared statement (planned once)", (i) => executePrepared([key(i).tenantId, key(i).keyId])),
    await measure("hot-path SELECT inside a PL/pgSQL function (plan kept)", (i) =>
      raw("select * from bench_hot_path_material($1, $2)", [key(i).tenantId, key(i).keyId]),
    ),
    await measure("same compiled query through kysely's executeQuery (driver, no builder)", (i) =>
      opened.db.executeQuery({ ...hotQuery!, parameters: [key(i).tenantId, key(i).keyId] }),
    ),
    await measure("loadDataKeyMaterial (kysely + driver + engine)", (i) => loadDataKeyMaterial(opened.db, key(i).tenantId, key(i).keyId, "primary")),
    await measure("generateDataKey service function (read + unwrap + reference)", (i) => generateDataKey(context, key(i))),
    await measure("decryptDataKey service function", (i) => {
      const ref = references[i % references.length]!;
      return decryptDataKey(context, { ...key(i), reference: ref.reference });
    }),
    await measure("UPDATE last_decrypt_time (autocommit, one row)", (i) =>
      opened.db
        .updateTable("dek_versions")
        .set({ last_decrypt_time: new Date() } as never)
        .where("tenant_id", "=", key(i).tenantId)
        .where("key_id", "=", key(i).keyId)
        .where("version", "=", 1)
        .execute(),
    ),
    await measure("loadDataKeyMaterial on kysely's DummyDriver (build + compile, no database)", (i) =>
      loadDataKeyMaterial(dummy, key(i).tenantId, key(i).keyId, "primary"),
    ),
  ];
  process.stdout.write(
    `\ndatabase hot-path costs on ${engine}${engine === "pglite" ? " (data directory on disk, as the server runs it)" : ""}, ${calls} sequential calls each, ${keyCount} keys; CreateKey in-process: ${createMs.toFixed(1)} ms/key\n\n`,
  );
  process.stdout.write(table(["operation", "wall µs/call", "CPU µs/call (this process)"], rows, new Set([1, 2])) + "\n");
  if (engine === "postgres") process.stdout.write("(PostgreSQL: the backend's CPU is in another process and not counted in this column.)\n");
  await rootProvider.close();
} finally {
  await cleanup();
  await rm(dir, { recursive: true, force: true });
}

/**
 * The real KMS as a server child: `loadConfig(process.env)` and `startKms`,
 * exactly as server/src/main.ts wires it (JSON-lines logger on stdout, which
 * the orchestrator sends to a file). Configure it with the usual variables:
 * KMS_DATA_DIR, KMS_PORT=0, DATABASE_URL for PostgreSQL.
 *
 * Flags, for the investigation only:
 * --instrument     count the SQL statements kysely runs, and the time spent
 *                  inside PGlite's `query` (the one session every statement
 *                  is serialised on); the orchestrator reads them per phase.
 * --hot-path-listeners
 *                  also serve GenerateDataKey and Decrypt on two more ports,
 *                  with the same implementation object over the same context:
 *                  a @grpc/grpc-js listener and a hand-written gRPC handler on
 *                  Node's http2 API (see hot-path-listeners.ts): prototypes of
 *                  the proposed cheaper transports, measured in the same process.
 */
import { performance } from "node:perf_hooks";
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import { createJsonLinesLogger } from "../../server/src/api/logger.js";
import { loadConfig } from "../../server/src/config.js";
import { startKms, type StartOverrides } from "../../server/src/start-kms.js";
import { engineActivityOf, registerEngineActivity } from "../../server/src/storage/engine-activity.js";
import { openDatabase } from "../../server/src/storage/open-database.js";
import { migrateToLatest } from "../../server/src/storage/migrations/migrate-to-latest.js";
import { join } from "node:path";
import type { Listener } from "./hot-path-listeners.js";
import { announceReady, serveCounters, stopOnSignal } from "./child-support.js";

const instrument = process.argv.includes("--instrument");
const withHotPathListeners = process.argv.includes("--hot-path-listeners");

const counters = { statements: 0, pgliteQueries: 0, pgliteQueryMs: 0 };
const logger = createJsonLinesLogger();
const config = loadConfig(process.env);
const overrides: { -readonly [K in keyof StartOverrides]: StartOverrides[K] } = { logger };

let closeOwnDatabase: (() => Promise<void>) | undefined;
if (instrument) {
  // Time spent inside PGlite's query(): the WASM PostgreSQL runs on this
  // thread, so this is CPU the event loop cannot spend on RPCs.
  // Loaded only for the investigation: the measured server carries what production loads, no more.
  const { PGlite } = await import("@electric-sql/pglite");
  let owner: object | null = PGlite.prototype;
  while (owner !== null && !Object.prototype.hasOwnProperty.call(owner, "query")) owner = Object.getPrototypeOf(owner);
  if (owner !== null) {
    const holder = owner as { query: (...args: unknown[]) => Promise<unknown> };
    const original = holder.query;
    holder.query = async function timedQuery(this: unknown, ...args: unknown[]) {
      const started = performance.now();
      try {
        return await original.apply(this, args);
      } finally {
        counters.pgliteQueries++;
        counters.pgliteQueryMs += performance.now() - started;
      }
    };
  }
  const counting: KyselyPlugin = {
    transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
      counters.statements++;
      return args.node;
    },
    transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      return Promise.resolve(args.result);
    },
  };
  const opened =
    config.databaseUrl === undefined
      ? await openDatabase({ dataDir: join(config.dataDir, "pglite") })
      : await openDatabase({ databaseUrl: config.databaseUrl });
  await migrateToLatest(opened.db);
  const counted = opened.db.withPlugin(counting);
  // The counting handle reaches the same PGlite session: give it the engine's write generation, so the
  // hot path keeps its read as it does uninstrumented (the counts then show what reached the engine).
  const activity = engineActivityOf(opened.db);
  if (activity !== undefined) registerEngineActivity(counted, activity);
  overrides.database = { db: counted, engine: opened.engine, close: () => opened.close() };
  closeOwnDatabase = () => opened.close();
}

const kms = await startKms(config, overrides);
serveCounters(
  () => ({ ...counters }),
  () => {
    counters.statements = 0;
    counters.pgliteQueries = 0;
    counters.pgliteQueryMs = 0;
  },
);

const listeners: Listener[] = [];
let extraPorts: Record<string, number> = {};
if (withHotPathListeners) {
  if (kms.devTlsDir === undefined) throw new Error("--hot-path-listeners needs the development PKI");
  const { startFastPathListener, startGrpcJsListener } = await import("./hot-path-listeners.js");
  const grpcJs = await startGrpcJsListener(kms.context, kms.devTlsDir, logger);
  const fastPath = await startFastPathListener(kms.context, kms.devTlsDir, logger);
  listeners.push(grpcJs, fastPath);
  extraPorts = { grpcJs: grpcJs.port, fastPath: fastPath.port };
}

stopOnSignal(async () => {
  for (const listener of listeners) await listener.close();
  await kms.stop(1_000);
  await closeOwnDatabase?.();
});
announceReady(kms.server.port, `startKms (${kms.database.engine}${instrument ? ", instrumented" : ""})`);
process.send?.({ type: "extra-ports", ports: extraPorts });

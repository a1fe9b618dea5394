/**
 * The hot path's read of a DEK version's material (`loadDataKeyMaterial`),
 * kept between calls on the embedded engine while nothing has been written.
 *
 * On PGlite the read is the hot path's biggest cost (about 0.8 ms of the
 * event-loop thread per call, docs/decisions/0003-hot-path-performance.md).
 * Every statement passes through this process's driver, so a row read at
 * write generation G is exactly what the database holds for as long as the
 * generation is still G: any write anywhere (a revocation, a rotation, a
 * purge) moves it and empties the whole cache before the next lookup. A
 * revocation therefore still takes effect on the very next call.
 *
 * Kept: the row as read — key and version states, wrapped (never plaintext)
 * material. Not kept: "not found" answers, and anything read through a
 * transaction or a derived handle, which have no write generation. On
 * PostgreSQL every call reads, since other replicas write too: the reads of
 * calls arriving together share one prepared statement
 * (batched-material-reads.ts).
 */
import type { Executor } from "./database.js";
import { CompiledQuery } from "kysely";
import { type BatchStatementRunner, createBatchedMaterialRead, type MaterialRead } from "./batched-material-reads.js";
import { type DataKeyMaterial, loadDataKeyMaterial } from "./dek-version.repository.js";
import { engineActivityOf } from "./engine-activity.js";
import { preparedStatementRunnerOf } from "./prepared-statements.js";

/** The largest value a PostgreSQL integer column holds. */
const MAX_STORED_VERSION = 2_147_483_647;

/** Rows kept per database; about 0.5 KB each. */
export const MATERIAL_CACHE_MAX_ENTRIES = 10_000;

interface MaterialCache {
  generation: number;
  readonly rows: Map<string, DataKeyMaterial>;
}

const caches = new WeakMap<object, MaterialCache>();

export async function readDataKeyMaterial(
  db: Executor,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): Promise<DataKeyMaterial | undefined> {
  // A reference names its version as a uint32, the column is an integer: no row can match beyond it, and
  // the value must never reach a statement other calls share (it would fail the whole batch).
  if (dekVersion !== "primary" && !(Number.isInteger(dekVersion) && dekVersion >= 1 && dekVersion <= MAX_STORED_VERSION)) {
    return undefined;
  }
  const runPrepared = preparedStatementRunnerOf(db);
  if (runPrepared !== undefined) return batchedReadOf(db, () => runPrepared)(tenantId, keyId, dekVersion);
  const activity = engineActivityOf(db);
  if (activity === undefined) return loadDataKeyMaterial(db, tenantId, keyId, dekVersion);

  let cache = caches.get(db);
  if (cache === undefined) {
    cache = { generation: activity.writeGeneration, rows: new Map() };
    caches.set(db, cache);
  }
  const generation = activity.writeGeneration;
  if (cache.generation !== generation) {
    cache.rows.clear();
    cache.generation = generation;
  }
  // Ids cannot contain '/', so this is unambiguous.
  const id = `${tenantId}/${keyId}/${dekVersion}`;
  // First in, first out when full: a write empties the cache often enough that recency buys little.
  const kept = cache.rows.get(id);
  if (kept !== undefined) return kept;

  const row = await batchedReadOf(db, () => pgliteStatementRunner(db))(tenantId, keyId, dekVersion);
  // Keep it only if nothing was written between taking the generation and the read.
  if (row !== undefined && activity.writeGeneration === generation && cache.generation === generation) {
    cache.rows.set(id, Object.freeze(row));
    if (cache.rows.size > MATERIAL_CACHE_MAX_ENTRIES) {
      const oldest = cache.rows.keys().next().value;
      if (oldest !== undefined) cache.rows.delete(oldest);
    }
  }
  return row;
}

const batchedReads = new WeakMap<object, MaterialRead>();

/** PGlite has no named statements: the batch runs through kysely (and so through the driver's mutex and counters). */
function pgliteStatementRunner(db: Executor): BatchStatementRunner {
  return async (_name, text, values) => (await db.executeQuery(CompiledQuery.raw(text, [...values]))).rows;
}

function batchedReadOf(db: Executor, runner: () => BatchStatementRunner): MaterialRead {
  let read = batchedReads.get(db);
  if (read === undefined) {
    read = createBatchedMaterialRead(runner());
    batchedReads.set(db, read);
  }
  return read;
}

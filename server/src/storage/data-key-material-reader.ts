/**
 * The hot path's read of a DEK version's material (`loadDataKeyMaterial`),
 * kept between calls for as long as it provably still is what the database
 * holds. Kept: the row as read — key and version states, wrapped (never
 * plaintext) material. Not kept: "not found" answers, and anything read
 * through a transaction or a derived handle.
 *
 * - PGlite: every statement passes through this process's driver, so a row
 *   read at write generation G is current for as long as the generation is
 *   still G (engine-activity.ts): a hit costs no statement at all.
 * - PostgreSQL: other replicas and operators write too. A row is kept with its
 *   tenant's hot-path generation, read in the same statement; that counter
 *   moves in the same transaction as any write to the tenant's keys, KEK or
 *   DEK versions (migration 20251129150000).
 *   - With a hot-path lease (hot-path-lease.ts, decision 0008) a hit costs no
 *     statement: the commit notified this replica of the new generation, and
 *     the writer answered only after this replica applied it.
 *   - Without one (no lease configured, or its connection is down), every call
 *     goes to the database after it arrived, but for a kept row reads only the
 *     generation: unchanged means nothing was committed to that tenant's rows
 *     since, so the kept row is served; changed means it is read again.
 *
 * Either way a revocation, rotation or purge through the service — on any
 * replica — takes effect for every call after it answered. The reads of calls arriving together share one
 * statement (batched-material-reads.ts).
 */
import { CompiledQuery } from "kysely";
import type { Executor } from "./database.js";
import { type BatchStatementRunner, createBatchedMaterialRead, type MaterialRead } from "./batched-material-reads.js";
import { type DataKeyMaterial, loadDataKeyMaterial } from "./dek-version.repository.js";
import { engineActivityOf } from "./engine-activity.js";
import { type HotPathLease, hotPathLeaseOf } from "./hot-path-lease.js";
import { preparedStatementRunnerOf } from "./prepared-statements.js";

/** The largest value a PostgreSQL integer column holds. */
const MAX_STORED_VERSION = 2_147_483_647;

/** Rows kept per database; about 0.5 KB each. */
export const MATERIAL_CACHE_MAX_ENTRIES = 10_000;

interface KeptRow {
  readonly row: DataKeyMaterial;
  /** PGlite: the engine's write generation; PostgreSQL: the tenant's hot-path generation. */
  readonly generation: number;
  /** PostgreSQL with a lease: the lease epoch the read was sent in. */
  readonly epoch: number;
}

interface MaterialCache {
  /** PGlite only: the write generation the kept rows belong to. */
  generation: number;
  readonly rows: Map<string, KeptRow>;
}

const caches = new WeakMap<object, MaterialCache>();

/**
 * The kept row, when it can be served with no statement at all: on PGlite
 * while nothing was written since it was read, on PostgreSQL while a trusted
 * lease vouches for it. Undefined otherwise (then `readDataKeyMaterial`
 * decides). No promise: the hot path answers a call served from memory
 * without an await.
 */
export function readKeptDataKeyMaterial(db: Executor, tenantId: string, keyId: string, dekVersion: number | "primary"): DataKeyMaterial | undefined {
  const cache = caches.get(db);
  if (cache === undefined) return undefined;
  const kept = cache.rows.get(rowId(tenantId, keyId, dekVersion));
  if (kept === undefined) return undefined;
  if (preparedStatementRunnerOf(db) !== undefined) {
    const lease = hotPathLeaseOf(db);
    return lease !== undefined && lease.trusted() && vouchedFor(kept, lease, tenantId) ? kept.row : undefined;
  }
  const activity = engineActivityOf(db);
  return activity !== undefined && cache.generation === activity.writeGeneration ? kept.row : undefined;
}

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
  if (runPrepared !== undefined) {
    return readOnPostgres(cacheOf(db, 0), batchedReadOf(db, () => runPrepared), hotPathLeaseOf(db), tenantId, keyId, dekVersion);
  }
  const activity = engineActivityOf(db);
  if (activity === undefined) return loadDataKeyMaterial(db, tenantId, keyId, dekVersion);

  const cache = cacheOf(db, activity.writeGeneration);
  const generation = activity.writeGeneration;
  if (cache.generation !== generation) {
    cache.rows.clear();
    cache.generation = generation;
  }
  const id = rowId(tenantId, keyId, dekVersion);
  const kept = cache.rows.get(id);
  if (kept !== undefined) return kept.row;

  const { row } = await batchedReadOf(db, () => pgliteStatementRunner(db))(tenantId, keyId, dekVersion, true);
  // Keep it only if nothing was written between taking the generation and the read.
  if (row !== undefined && activity.writeGeneration === generation && cache.generation === generation) {
    return keep(cache, id, row, generation);
  }
  return row;
}

/**
 * PostgreSQL. With a running lease (hot-path-lease.ts): a kept row is served
 * without a statement while no notification has moved its tenant past the
 * row's generation. Without one: when its tenant's generation, read after the
 * call arrived, has not moved.
 */
async function readOnPostgres(
  cache: MaterialCache,
  read: MaterialRead,
  lease: HotPathLease | undefined,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): Promise<DataKeyMaterial | undefined> {
  const id = rowId(tenantId, keyId, dekVersion);
  const kept = cache.rows.get(id);
  const leased = lease !== undefined && lease.trusted();
  if (kept !== undefined) {
    if (leased) {
      if (vouchedFor(kept, lease, tenantId)) return kept.row;
    } else {
      const { generation } = await read(tenantId, keyId, dekVersion, false);
      if (generation === kept.generation) return kept.row;
    }
    if (cache.rows.get(id) === kept) cache.rows.delete(id);
  }
  // Taken before the read: a read sent in an older epoch may have missed notifications.
  const epoch = lease?.epoch() ?? 0;
  const { row, generation } = await read(tenantId, keyId, dekVersion, true);
  if (row === undefined) return undefined;
  // A read that finished late must not replace what a later one kept (generations only grow).
  const newer = cache.rows.get(id);
  if (newer !== undefined && newer.generation >= generation && newer.epoch >= epoch) return row;
  return keep(cache, id, row, generation, epoch);
}

/** Read in the lease's current epoch, and no notification has moved its tenant past it since. */
function vouchedFor(kept: KeptRow, lease: HotPathLease, tenantId: string): boolean {
  return kept.epoch === lease.epoch() && kept.generation >= lease.floor(tenantId);
}

function keep(cache: MaterialCache, id: string, row: DataKeyMaterial, generation: number, epoch = 0): DataKeyMaterial {
  const frozen = Object.freeze(row);
  cache.rows.delete(id);
  cache.rows.set(id, { row: frozen, generation, epoch });
  // First in, first out when full: a write empties the cache (or the tenant's part of it) often enough that recency buys little.
  if (cache.rows.size > MATERIAL_CACHE_MAX_ENTRIES) {
    const oldest = cache.rows.keys().next().value;
    if (oldest !== undefined) cache.rows.delete(oldest);
  }
  return frozen;
}

function cacheOf(db: Executor, generation: number): MaterialCache {
  let cache = caches.get(db);
  if (cache === undefined) {
    cache = { generation, rows: new Map() };
    caches.set(db, cache);
  }
  return cache;
}

/** Ids cannot contain '/', so this is unambiguous. */
function rowId(tenantId: string, keyId: string, dekVersion: number | "primary"): string {
  return `${tenantId}/${keyId}/${dekVersion}`;
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

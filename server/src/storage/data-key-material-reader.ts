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
 * PostgreSQL every call reads, since other replicas write too, through a
 * statement prepared once per connection (prepared-statements.ts).
 */
import type { Executor } from "./database.js";
import { type DataKeyMaterial, dataKeyMaterialQuery, loadDataKeyMaterial } from "./dek-version.repository.js";
import { engineActivityOf } from "./engine-activity.js";
import { type PreparedStatementRunner, preparedStatementRunnerOf } from "./prepared-statements.js";

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
  const runPrepared = preparedStatementRunnerOf(db);
  if (runPrepared !== undefined) return loadPrepared(db, runPrepared, tenantId, keyId, dekVersion);
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

  const row = await loadDataKeyMaterial(db, tenantId, keyId, dekVersion);
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

/**
 * The statement text for each shape of the read ("primary" or a numbered
 * version), compiled once by kysely from the same query builder, and where
 * each call's values go in its parameter list.
 */
interface PreparedShape {
  readonly name: string;
  readonly text: string;
  readonly slots: ReadonlyArray<"tenant" | "key" | "version" | { readonly constant: unknown }>;
}

const shapes = new Map<"primary" | "version", PreparedShape>();
// Ids are validated ("a-z0-9-_.") before they get here, so these can never be real values.
const TENANT_MARK = "\u0000tenant";
const KEY_MARK = "\u0000key";
const VERSION_MARK = -7_654_321;

function preparedShape(db: Executor, shape: "primary" | "version"): PreparedShape {
  let prepared = shapes.get(shape);
  if (prepared === undefined) {
    const compiled = dataKeyMaterialQuery(db, TENANT_MARK, KEY_MARK, shape === "primary" ? "primary" : VERSION_MARK).compile();
    const slots = compiled.parameters.map((value) =>
      value === TENANT_MARK ? "tenant" : value === KEY_MARK ? "key" : value === VERSION_MARK ? "version" : { constant: value },
    );
    prepared = { name: `matih_kms_data_key_material_${shape}`, text: compiled.sql, slots };
    shapes.set(shape, prepared);
  }
  return prepared;
}

async function loadPrepared(
  db: Executor,
  runPrepared: PreparedStatementRunner,
  tenantId: string,
  keyId: string,
  dekVersion: number | "primary",
): Promise<DataKeyMaterial | undefined> {
  const shape = preparedShape(db, dekVersion === "primary" ? "primary" : "version");
  const values = shape.slots.map((slot) =>
    slot === "tenant" ? tenantId : slot === "key" ? keyId : slot === "version" ? dekVersion : slot.constant,
  );
  const rows = await runPrepared(shape.name, shape.text, values);
  return rows[0] as DataKeyMaterial | undefined;
}

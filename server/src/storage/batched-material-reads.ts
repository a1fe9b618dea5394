/**
 * The hot path's read, for many calls at once.
 *
 * Calls arrive together: 64 in flight over one HTTP/2 connection. On
 * PostgreSQL every call must read (another replica may have just revoked the
 * key), and one round trip per call cost the server more in socket writes and
 * node-postgres bookkeeping than everything else on the hot path (a profile:
 * `writev` alone about 70 µs per call). On PGlite the reads that miss its
 * cache are planned one by one on the event-loop thread (about 0.8 ms each).
 * So reads asked for in the same turn of the event loop go out as one
 * statement over `unnest(...) with ordinality` and each caller gets its own
 * row. A read still starts after its call arrived and sees what was committed
 * by then: revocation keeps taking effect on the very next call.
 *
 * Each read also returns its tenant's hot-path generation, and a caller that
 * already holds a row can ask for the generation alone: an index probe and a
 * number instead of a three-table join and half a kilobyte of bytea
 * (data-key-material-reader.ts keeps rows on that basis on PostgreSQL).
 */
import type { DataKeyMaterial } from "./dek-version.repository.js";
import { DATA_KEY_MATERIAL_COLUMNS } from "./dek-version.repository.js";
/** Runs the batched statement: as a named prepared statement on PostgreSQL, through kysely on PGlite. */
export type BatchStatementRunner = (name: string, text: string, values: readonly unknown[]) => Promise<unknown[]>;

/** Reads per statement; more waiting callers go out in further statements. */
export const MATERIAL_BATCH_MAX_READS = 256;

/** What one read found: the row (when asked for and present) and its tenant's hot-path generation, in one snapshot. */
export interface MaterialReadResult {
  readonly row: DataKeyMaterial | undefined;
  /** hot_path_generations (migration 20251129150000); 0 for a tenant never written since it was added. */
  readonly generation: number;
}

/** `withRow: false` reads only the generation: enough to prove a row kept from an earlier read is still current. */
export type MaterialRead = (tenantId: string, keyId: string, dekVersion: number | "primary", withRow: boolean) => Promise<MaterialReadResult>;

interface PendingRead {
  readonly tenantId: string;
  readonly keyId: string;
  readonly dekVersion: number | null;
  readonly withRow: boolean;
  resolve(result: MaterialReadResult): void;
  reject(error: unknown): void;
}

const STATEMENT_NAME = "matih_kms_data_key_material_batch_v2";

// A null version asks for the key's primary DEK version. Exactly one result row per read: the
// generation always, the material only when asked for and found (key_uid is never null in a found row).
const STATEMENT_TEXT = `
select q.ord as "readIndex", coalesce(g.generation, 0) as "generation", r.*
from unnest($1::text[], $2::text[], $3::integer[], $4::boolean[]) with ordinality as q(tenant_id, key_id, version, with_row, ord)
left join hot_path_generations as g on g.tenant_id = q.tenant_id
left join lateral (
  select ${DATA_KEY_MATERIAL_COLUMNS.map(quoteColumn).join(", ")}
  from keys as k
  join dek_versions as d on d.tenant_id = k.tenant_id and d.key_id = k.key_id
    and d.version = coalesce(q.version, k.primary_dek_version)
  join kek_versions as kv on kv.tenant_id = d.tenant_id and kv.key_id = d.key_id and kv.version = d.kek_version
  where q.with_row and k.tenant_id = q.tenant_id and k.key_id = q.key_id
) as r on true`;

/** "k.key_uid as keyUid" → k.key_uid as "keyUid" (PostgreSQL folds unquoted aliases to lower case). */
function quoteColumn(column: string): string {
  const [expression, alias] = column.split(" as ");
  return `${expression} as "${alias}"`;
}

export function createBatchedMaterialRead(runPrepared: BatchStatementRunner): MaterialRead {
  let waiting: PendingRead[] = [];
  let scheduled = false;

  const flush = (): void => {
    scheduled = false;
    const all = waiting;
    waiting = [];
    for (let start = 0; start < all.length; start += MATERIAL_BATCH_MAX_READS) {
      void readBatch(runPrepared, all.slice(start, start + MATERIAL_BATCH_MAX_READS));
    }
  };

  return (tenantId, keyId, dekVersion, withRow) =>
    new Promise((resolve, reject) => {
      waiting.push({ tenantId, keyId, dekVersion: dekVersion === "primary" ? null : dekVersion, withRow, resolve, reject });
      if (!scheduled) {
        scheduled = true;
        // After the I/O callbacks of this turn: every call that reached its read by then shares the statement.
        setImmediate(flush);
      }
    });
}

type ResultRow = Partial<DataKeyMaterial> & { readIndex: number | string; generation: number | string };

async function readBatch(runPrepared: BatchStatementRunner, reads: readonly PendingRead[]): Promise<void> {
  let rows: unknown[];
  try {
    rows = await runPrepared(STATEMENT_NAME, STATEMENT_TEXT, [
      reads.map((read) => read.tenantId),
      reads.map((read) => read.keyId),
      reads.map((read) => read.dekVersion),
      reads.map((read) => read.withRow),
    ]);
  } catch (error) {
    if (reads.length === 1) {
      reads[0]?.reject(error);
      return;
    }
    // One call's bad input must not fail the calls it shared a statement with: each retries alone.
    await Promise.all(reads.map((read) => readBatch(runPrepared, [read])));
    return;
  }
  const found: Array<MaterialReadResult | undefined> = new Array(reads.length);
  for (const row of rows as ResultRow[]) {
    const { readIndex, generation, ...material } = row;
    found[Number(readIndex) - 1] = {
      row: material.keyUid === null || material.keyUid === undefined ? undefined : (material as DataKeyMaterial),
      generation: Number(generation),
    };
  }
  reads.forEach((read, index) => {
    const result = found[index];
    if (result === undefined) read.reject(new Error(`the batched material read returned no row for read ${index + 1}`));
    else read.resolve(result);
  });
}

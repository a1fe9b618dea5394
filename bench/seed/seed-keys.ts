/**
 * The bulk-seeding child: adds many keys straight through the storage layer,
 * 5,000 rows per INSERT (the rows as one JSON parameter), because CreateKey over the API (one
 * transaction of several statements per key, serialised on PGlite's single
 * session) is far too slow for 100,000 keys.
 *
 * The rows are clones of a template key that was created through the API
 * (CreateKey), so every column the current schema has gets the value
 * CreateKey gives it, whatever later migrations add. Only what must differ per
 * key is replaced, made exactly as CreateKey makes it
 * (server/src/service/create-key.ts): a fresh key_uid; a fresh AES-256 KEK
 * wrapped by the local master key under its wrap context (tenant, key, KEK
 * version 1); a fresh DEK wrapped by that KEK under its context (tenant, key,
 * DEK version 1). Key events are not cloned: the hot path never reads them.
 *
 * For every key it stores, it writes the reference GenerateDataKey would
 * return and the plaintext DEK, so the Decrypt phases check every answer; a
 * wrongly wrapped row would fail to unwrap and show up as an error.
 *
 * Run it while no server holds the database: PGlite is a single session.
 *
 *   tsx bench/seed/seed-keys.ts --data-dir <dir> [--database-url <url>]
 *       --template <tenant>/<key> --tenants 100 --from 1000 --count 99000 --out <file.json>
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { sql, type Kysely } from "kysely";
import { encodeDekReference } from "../../server/src/crypto/dek-reference.js";
import { generateAes256Key, randomBytes } from "../../server/src/crypto/random.js";
import { openLocalRootProvider } from "../../server/src/providers/local/local-root-provider.js";
import { dekWrapContext, wrapDek } from "../../server/src/service/kek-material.js";
import { openDatabase } from "../../server/src/storage/open-database.js";
import { argValue } from "../lib/args.js";
import type { WorkItem } from "../lib/messages.js";
import { keyIdFor, tenantIdFor } from "./key-names.js";

const BATCH = 5_000;
type Row = Record<string, unknown>;

const dataDir = argValue("data-dir");
const databaseUrl = argValue("database-url");
const template = argValue("template");
const tenants = Number(argValue("tenants") ?? "100");
const from = Number(argValue("from") ?? "0");
const count = Number(argValue("count") ?? "1000");
const out = argValue("out");
if (dataDir === undefined || out === undefined || template === undefined || !Number.isInteger(count) || count <= 0) {
  throw new Error("usage: seed-keys.ts --data-dir <dir> [--database-url <url>] --template <tenant>/<key> --tenants <n> --from <i> --count <n> --out <file>");
}
const [templateTenant, templateKey] = template.split("/") as [string, string];

const started = performance.now();
const opened =
  databaseUrl === undefined ? await openDatabase({ dataDir: join(dataDir, "pglite") }) : await openDatabase({ databaseUrl });
const provider = await openLocalRootProvider(dataDir);
try {
  // The storage layer's Kysely, used untyped: the rows are whatever the schema holds today.
  const db = opened.db as unknown as Kysely<any>;
  const one = async (table: string, extra: Row = {}): Promise<Row> => {
    let query = db.selectFrom(table).selectAll().where("tenant_id", "=", templateTenant);
    if (table !== "tenants") query = query.where("key_id", "=", templateKey);
    for (const [column, value] of Object.entries(extra)) query = query.where(column, "=", value);
    const row = (await query.executeTakeFirst()) as Row | undefined;
    if (row === undefined) throw new Error(`template ${template}: no row in ${table}`);
    return row;
  };
  const templateTenantRow = await one("tenants");
  const templateKeyRow = await one("keys");
  const templateKek = await one("kek_versions", { version: 1 });
  const templateDek = await one("dek_versions", { version: 1 });
  if (templateKeyRow["kek_algorithm"] !== "AES_256") throw new Error("the template key must be AES-256");
  if (templateKek["root_key_id"] !== provider.currentKeyId) {
    throw new Error(`the template's KEK is wrapped under ${String(templateKek["root_key_id"])}, this provider wraps under ${provider.currentKeyId}`);
  }
  // Usage state is not part of a new key.
  if ("last_decrypt_time" in templateDek) templateDek["last_decrypt_time"] = null;

  const tenantRows = Array.from({ length: tenants }, (_, i) => ({ ...templateTenantRow, tenant_id: tenantIdFor(i, tenants) }));
  await db
    .insertInto("tenants")
    .values(tenantRows)
    .onConflict((conflict) => conflict.column("tenant_id").doNothing())
    .execute();

  const work: WorkItem[] = [];
  for (let batchStart = from; batchStart < from + count; batchStart += BATCH) {
    const keys: Row[] = [];
    const keks: Row[] = [];
    const deks: Row[] = [];
    for (let index = batchStart; index < Math.min(from + count, batchStart + BATCH); index++) {
      const tenantId = tenantIdFor(index, tenants);
      const keyId = keyIdFor(index);
      const keyUid = randomBytes(16);
      const kek = generateAes256Key();
      const dek = generateAes256Key();
      const wrappedKek = await provider.wrap(kek, { tenantId, keyId, kekVersion: 1 });
      const wrappedDek = wrapDek({ algorithm: "AES_256", key: kek }, dek, dekWrapContext(tenantId, keyId, 1));
      keys.push({ ...templateKeyRow, tenant_id: tenantId, key_id: keyId, key_uid: keyUid });
      keks.push({ ...templateKek, tenant_id: tenantId, key_id: keyId, wrapped_material: wrappedKek });
      deks.push({ ...templateDek, tenant_id: tenantId, key_id: keyId, wrapped_material: wrappedDek });
      work.push({
        tenantId,
        keyId,
        reference: encodeDekReference({ tenantId, keyId, keyUid, dekVersion: 1 }, dek).toString("base64"),
        plaintext: dek.toString("base64"),
      });
      kek.fill(0);
    }
    // One parameter per table and batch: the rows as JSON, expanded by the
    // database itself against the table's own row type (any columns).
    await db.transaction().execute(async (tx) => {
      for (const [table, rows] of [["keys", keys], ["kek_versions", keks], ["dek_versions", deks]] as const) {
        await sql`insert into ${sql.table(table)} select * from json_populate_recordset(null::${sql.table(table)}, ${toJson(rows)}::json)`.execute(tx);
      }
    });
  }
  await writeFile(out, JSON.stringify(work));
  process.send?.({ type: "seeded", count: work.length, ms: performance.now() - started });
} finally {
  await provider.close();
  await opened.close();
  // Let the IPC channel go, so the process ends once its work is done.
  if (process.connected) process.disconnect();
}

/** Rows as PostgreSQL's JSON input reads them: bytea as \\x-hex text, timestamps as ISO strings. */
function toJson(rows: readonly Row[]): string {
  return JSON.stringify(rows, function replacer(this: Record<string, unknown>, key: string, value: unknown) {
    const original = this[key];
    if (Buffer.isBuffer(original) || original instanceof Uint8Array) return `\\x${Buffer.from(original).toString("hex")}`;
    if (original instanceof Date) return original.toISOString();
    return value;
  });
}

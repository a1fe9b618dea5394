/**
 * The re-encryption helper's ports over the customers table with kysely:
 * read by ascending id (keyset pagination), write back with compare-and-set
 * (a row the application changed meanwhile is left alone), count ciphertexts
 * per DEK version in SQL (the envelope keeps its DEK version, u32 BE, at a
 * fixed offset: bytes 3-6 in SQL's 1-based terms), and keep the checkpoint
 * in a table.
 */
import { sql, type Kysely } from "kysely";
import type { CheckpointStore, ReencryptionCheckpoint } from "../../src/reencrypt/checkpoint.js";
import type { ReencryptionSource, ReencryptionWriter } from "../../src/reencrypt/reencrypt.js";
import { DEK_VERSION_OFFSET } from "../../src/envelope/envelope-format.js";
import type { ExampleDatabase } from "./customer.table.js";

export function customerEmailSource(db: Kysely<ExampleDatabase>, schema: string): ReencryptionSource<number> {
  const table = db.withSchema(schema);
  return {
    async readBatch(after, limit) {
      const rows = await table
        .selectFrom("customers")
        .select(["id", "email_enc"])
        .$if(after !== undefined, (q) => q.where("id", ">", after as number))
        .orderBy("id")
        .limit(limit)
        .execute();
      return rows.map((row) => ({ id: row.id, ciphertext: row.email_enc }));
    },
    async countByDekVersion() {
      const version = sql<string>`('x' || encode(substring(email_enc from ${DEK_VERSION_OFFSET + 1} for 4), 'hex'))::bit(32)::bigint`;
      const rows = await table
        .selectFrom("customers")
        .select([version.as("dek_version"), (eb) => eb.fn.countAll<string>().as("n")])
        .groupBy(sql`1`)
        .execute();
      return new Map(rows.map((row) => [Number(row.dek_version), Number(row.n)]));
    },
  };
}

export function customerEmailWriter(db: Kysely<ExampleDatabase>, schema: string): ReencryptionWriter<number> {
  return {
    async write(updates) {
      // One statement per batch; a row is written only if it still holds what was read.
      const rows = sql.join(updates.map((u) => sql`(${u.id}::int, ${u.ciphertext}::bytea, ${Buffer.from(u.previous)}::bytea)`));
      const result = await sql`
        update ${sql.table(`${schema}.customers`)} as c
           set email_enc = v.next
          from (values ${rows}) as v(id, next, previous)
         where c.id = v.id and c.email_enc = v.previous`.execute(db);
      return Number(result.numAffectedRows ?? 0n);
    },
  };
}

export function tableCheckpointStore(db: Kysely<ExampleDatabase>, schema: string, datasetId: string): CheckpointStore<number> {
  const table = db.withSchema(schema);
  return {
    async load() {
      const row = await table.selectFrom("reencryption_checkpoints").select("checkpoint").where("dataset_id", "=", datasetId).executeTakeFirst();
      return row === undefined ? undefined : (JSON.parse(row.checkpoint) as ReencryptionCheckpoint<number>);
    },
    async save(checkpoint) {
      await table
        .insertInto("reencryption_checkpoints")
        .values({ dataset_id: datasetId, checkpoint: JSON.stringify(checkpoint) })
        .onConflict((oc) => oc.column("dataset_id").doUpdateSet({ checkpoint: JSON.stringify(checkpoint), updated_at: sql`now()` }))
        .execute();
    },
    async clear() {
      await table.deleteFrom("reencryption_checkpoints").where("dataset_id", "=", datasetId).execute();
    },
  };
}

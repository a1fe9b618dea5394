import { type Kysely, sql } from "kysely";

/*
 * Background jobs, second step: a per-job batch counter, so the transaction
 * that applies a batch numbers it from the job row it already updates (the
 * row's lock orders concurrent batches; job_batches' primary key then proves
 * no number, hence no batch, was used twice); at most one CURRENT master key;
 * an index for the master-key re-wrap's scan of KEK versions; and the KEK
 * re-wrap's index, which adds the DEK version to the one on (tenant, key, KEK
 * version) so a batch starts where the last one ended instead of stepping
 * over the index entries its predecessors left behind.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("jobs")
    .addColumn("batches", "integer", (col) => col.notNull().defaultTo(0))
    .execute();
  await sql`create unique index root_keys_one_current_idx on root_keys (state) where state = 'CURRENT'`.execute(db);
  await sql`create index kek_versions_root_key_idx on kek_versions (root_key_id) where wrapped_material is not null`.execute(db);
  await sql`create index dek_versions_kek_version_version_idx on dek_versions (tenant_id, key_id, kek_version, version)`.execute(db);
  await sql`drop index dek_versions_kek_version_idx`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`create index dek_versions_kek_version_idx on dek_versions (tenant_id, key_id, kek_version)`.execute(db);
  await sql`drop index dek_versions_kek_version_version_idx`.execute(db);
  await sql`drop index kek_versions_root_key_idx`.execute(db);
  await sql`drop index root_keys_one_current_idx`.execute(db);
  await db.schema.alterTable("jobs").dropColumn("batches").execute();
}

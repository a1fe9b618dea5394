import { type Kysely, sql } from "kysely";

/*
 * The key lifecycle: per-key lifecycle policy, scheduled rotation, revocation
 * with a waiting period and destruction, per-version decrypt tracking and
 * revocation, the re-encryption inventory, key events, background jobs and
 * master-key versions. Frozen once released, like every migration.
 */
const id = sql`text collate "C"`;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("keys")
    .addColumn("dek_grace_period_seconds", "integer", (col) => col.notNull().defaultTo(604_800))
    .addColumn("decrypt_quiet_window_seconds", "integer", (col) => col.notNull().defaultTo(604_800))
    .addColumn("revocation_waiting_period_seconds", "integer", (col) => col.notNull().defaultTo(2_592_000))
    .addColumn("scheduled_destroy_time", "timestamptz")
    .addColumn("destroy_time", "timestamptz")
    // When the next rotation (DEK or KEK) is due; null unless ENABLED. Kept
    // beside the versions so the scheduler finds due keys through an index.
    .addColumn("next_rotation_time", "timestamptz")
    .addColumn("rotation_failure_time", "timestamptz")
    .addColumn("rotation_failure_message", "text")
    .addColumn("rotation_failure_attempts", "integer", (col) => col.notNull().defaultTo(0))
    .addColumn("customer_provider", "text")
    .addColumn("customer_key_uri", "text")
    .addColumn("customer_key_last_success_time", "timestamptz")
    .addColumn("customer_key_last_error_time", "timestamptz")
    .addColumn("customer_key_last_error_class", "text")
    .addColumn("customer_key_last_error", "text")
    .execute();
  await sql`alter table keys add constraint keys_lifecycle_periods_check check (
    dek_grace_period_seconds > 0 and decrypt_quiet_window_seconds > 0 and revocation_waiting_period_seconds > 0)`.execute(db);
  await sql`alter table keys add constraint keys_destroyed_has_destroy_time_check check (state <> 'DESTROYED' or destroy_time is not null)`.execute(db);
  await sql`alter table keys add constraint keys_customer_key_check check (
    (protection = 'CUSTOMER_MANAGED') = (customer_provider is not null and customer_key_uri is not null))`.execute(db);
  await sql`create index keys_next_rotation_idx on keys (next_rotation_time) where state = 'ENABLED'`.execute(db);
  await sql`create index keys_scheduled_destroy_idx on keys (scheduled_destroy_time) where state = 'REVOKED'`.execute(db);
  await sql`update keys k set next_rotation_time = least(
      d.create_time + make_interval(secs => k.dek_rotation_period_seconds),
      e.create_time + make_interval(secs => k.kek_rotation_period_seconds))
    from dek_versions d, kek_versions e
    where k.state = 'ENABLED'
      and d.tenant_id = k.tenant_id and d.key_id = k.key_id and d.version = k.primary_dek_version
      and e.tenant_id = k.tenant_id and e.key_id = k.key_id and e.version = k.primary_kek_version`.execute(db);

  await db.schema
    .alterTable("kek_versions")
    .addColumn("retire_time", "timestamptz")
    .addColumn("rewrapped_dek_count", "bigint", (col) => col.notNull().defaultTo(0))
    .addColumn("total_dek_count", "bigint", (col) => col.notNull().defaultTo(0))
    .execute();

  await db.schema
    .alterTable("dek_versions")
    .addColumn("last_decrypt_time", "timestamptz")
    .addColumn("purge_time", "timestamptz")
    .addColumn("revoke_time", "timestamptz")
    .execute();
  await sql`alter table dek_versions drop constraint dek_versions_state_check`.execute(db);
  await sql`alter table dek_versions add constraint dek_versions_state_check
    check (state in ('PRIMARY', 'DECRYPT_ONLY', 'PENDING_PURGE', 'PURGED', 'REVOKED'))`.execute(db);
  await sql`alter table dek_versions add constraint dek_versions_revoked_has_revoke_time_check
    check (state <> 'REVOKED' or revoke_time is not null)`.execute(db);
  // The purge scan looks only at superseded versions that still hold material.
  await sql`create index dek_versions_purge_scan_idx on dek_versions (tenant_id, key_id)
    where state in ('DECRYPT_ONLY', 'PENDING_PURGE', 'REVOKED')`.execute(db);

  await db.schema
    .createTable("datasets")
    .addColumn("tenant_id", id, (col) => col.notNull())
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("dataset_id", id, (col) => col.notNull())
    .addColumn("store_kind", "text", (col) => col.notNull())
    .addColumn("description", "text", (col) => col.notNull().defaultTo(""))
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("last_report_time", "timestamptz")
    .addPrimaryKeyConstraint("datasets_pkey", ["tenant_id", "key_id", "dataset_id"])
    .addForeignKeyConstraint("datasets_key_fkey", ["tenant_id", "key_id"], "keys", ["tenant_id", "key_id"])
    .addCheckConstraint("datasets_store_kind_check", sql`store_kind in ('POSTGRES', 'REDIS', 'KAFKA', 'S3', 'ELASTICSEARCH', 'OTHER')`)
    .execute();

  // The last report of each dataset: ciphertexts per DEK version (zero rows are not kept).
  await db.schema
    .createTable("dataset_counts")
    .addColumn("tenant_id", id, (col) => col.notNull())
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("dataset_id", id, (col) => col.notNull())
    .addColumn("dek_version", "integer", (col) => col.notNull())
    .addColumn("ciphertexts", "bigint", (col) => col.notNull())
    .addPrimaryKeyConstraint("dataset_counts_pkey", ["tenant_id", "key_id", "dataset_id", "dek_version"])
    .addForeignKeyConstraint("dataset_counts_dataset_fkey", ["tenant_id", "key_id", "dataset_id"], "datasets", [
      "tenant_id",
      "key_id",
      "dataset_id",
    ])
    .addCheckConstraint("dataset_counts_positive_check", sql`ciphertexts > 0`)
    .execute();

  // Key events, numbered in commit order: every writer first takes the one
  // row of event_sequence (held until commit), so a subscriber reading
  // "event_id > cursor" can never miss an event committed late with a lower id.
  await db.schema
    .createTable("event_sequence")
    .addColumn("singleton", "boolean", (col) => col.primaryKey().defaultTo(true))
    .addColumn("last_event_id", "bigint", (col) => col.notNull())
    .addCheckConstraint("event_sequence_singleton_check", sql`singleton`)
    .execute();
  await sql`insert into event_sequence (singleton, last_event_id) values (true, 0)`.execute(db);
  await db.schema
    .createTable("key_events")
    .addColumn("event_id", "bigint", (col) => col.primaryKey())
    .addColumn("tenant_id", id, (col) => col.notNull())
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("type", "text", (col) => col.notNull())
    .addColumn("dek_version", "integer")
    .addColumn("kek_version", "integer")
    .addColumn("event_time", "timestamptz", (col) => col.notNull())
    .execute();
  await db.schema.createIndex("key_events_tenant_idx").on("key_events").columns(["tenant_id", "event_id"]).execute();

  // Background work, claimed through the database so replicas cooperate.
  await db.schema
    .createTable("jobs")
    .addColumn("job_id", "bigserial", (col) => col.primaryKey())
    .addColumn("kind", "text", (col) => col.notNull())
    .addColumn("tenant_id", id)
    .addColumn("key_id", id)
    .addColumn("kek_version", "integer")
    .addColumn("root_key_id", "text")
    .addColumn("state", "text", (col) => col.notNull())
    .addColumn("total", "bigint", (col) => col.notNull().defaultTo(0))
    .addColumn("done", "bigint", (col) => col.notNull().defaultTo(0))
    .addColumn("lease_owner", "text")
    .addColumn("lease_until", "timestamptz")
    .addColumn("attempts", "integer", (col) => col.notNull().defaultTo(0))
    .addColumn("last_error", "text")
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("update_time", "timestamptz", (col) => col.notNull())
    .addColumn("finish_time", "timestamptz")
    .addCheckConstraint("jobs_state_check", sql`state in ('PENDING', 'DONE', 'FAILED')`)
    .execute();
  await sql`create index jobs_pending_idx on jobs (job_id) where state = 'PENDING'`.execute(db);

  // One row per applied batch, written in the batch's own transaction: proof
  // that no batch is applied twice, and an audit trail of who applied it.
  await db.schema
    .createTable("job_batches")
    .addColumn("job_id", "bigint", (col) => col.notNull().references("jobs.job_id"))
    .addColumn("batch_no", "integer", (col) => col.notNull())
    .addColumn("rows", "integer", (col) => col.notNull())
    .addColumn("worker", "text", (col) => col.notNull())
    .addColumn("apply_time", "timestamptz", (col) => col.notNull())
    .addPrimaryKeyConstraint("job_batches_pkey", ["job_id", "batch_no"])
    .execute();

  // Master key versions: which one is current, and which are being retired.
  await db.schema
    .createTable("root_keys")
    .addColumn("root_key_id", "text", (col) => col.primaryKey())
    .addColumn("provider", "text", (col) => col.notNull())
    .addColumn("state", "text", (col) => col.notNull())
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("retire_time", "timestamptz")
    .addCheckConstraint("root_keys_state_check", sql`state in ('CURRENT', 'RETIRING', 'RETIRED')`)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["root_keys", "job_batches", "jobs", "key_events", "event_sequence", "dataset_counts", "datasets"]) {
    await db.schema.dropTable(table).execute();
  }
  await sql`drop index dek_versions_purge_scan_idx`.execute(db);
  await sql`alter table dek_versions drop constraint dek_versions_revoked_has_revoke_time_check`.execute(db);
  await sql`alter table dek_versions drop constraint dek_versions_state_check`.execute(db);
  await sql`alter table dek_versions add constraint dek_versions_state_check
    check (state in ('PRIMARY', 'DECRYPT_ONLY', 'PENDING_PURGE', 'PURGED'))`.execute(db);
  await db.schema.alterTable("dek_versions").dropColumn("last_decrypt_time").dropColumn("purge_time").dropColumn("revoke_time").execute();
  await db.schema.alterTable("kek_versions").dropColumn("retire_time").dropColumn("rewrapped_dek_count").dropColumn("total_dek_count").execute();
  await sql`drop index keys_next_rotation_idx`.execute(db);
  await sql`drop index keys_scheduled_destroy_idx`.execute(db);
  for (const constraint of ["keys_lifecycle_periods_check", "keys_destroyed_has_destroy_time_check", "keys_customer_key_check"]) {
    await sql`alter table keys drop constraint ${sql.raw(constraint)}`.execute(db);
  }
  const [first, ...rest] = [
    "dek_grace_period_seconds",
    "decrypt_quiet_window_seconds",
    "revocation_waiting_period_seconds",
    "scheduled_destroy_time",
    "destroy_time",
    "next_rotation_time",
    "rotation_failure_time",
    "rotation_failure_message",
    "rotation_failure_attempts",
    "customer_provider",
    "customer_key_uri",
    "customer_key_last_success_time",
    "customer_key_last_error_time",
    "customer_key_last_error_class",
    "customer_key_last_error",
  ];
  let builder = db.schema.alterTable("keys").dropColumn(first!);
  for (const column of rest) builder = builder.dropColumn(column);
  await builder.execute();
}

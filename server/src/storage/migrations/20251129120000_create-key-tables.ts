import { type Kysely, sql } from "kysely";

/*
 * Tenants, their keys, and each key's KEK and DEK versions.
 *
 * A migration is frozen once released: it spells out its own literals rather
 * than importing the constants of database.ts, which move with the code.
 */

/**
 * Tenant and key ids compare byte by byte whatever the database's locale, so
 * keyset pagination (`key_id > $after order by key_id`) means the same on
 * every server and on PGlite.
 */
const id = sql`text collate "C"`;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("tenants")
    .addColumn("tenant_id", id, (col) => col.primaryKey())
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .execute();

  await db.schema
    .createTable("keys")
    .addColumn("tenant_id", id, (col) => col.notNull().references("tenants.tenant_id"))
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("key_uid", "bytea", (col) => col.notNull())
    .addColumn("description", "text", (col) => col.notNull().defaultTo(""))
    .addColumn("kek_algorithm", "text", (col) => col.notNull())
    .addColumn("protection", "text", (col) => col.notNull())
    .addColumn("state", "text", (col) => col.notNull())
    .addColumn("dek_rotation_period_seconds", "integer", (col) => col.notNull())
    .addColumn("kek_rotation_period_seconds", "integer", (col) => col.notNull())
    .addColumn("primary_dek_version", "integer", (col) => col.notNull())
    .addColumn("primary_kek_version", "integer", (col) => col.notNull())
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("update_time", "timestamptz", (col) => col.notNull())
    .addColumn("revoke_time", "timestamptz")
    .addPrimaryKeyConstraint("keys_pkey", ["tenant_id", "key_id"])
    .addUniqueConstraint("keys_key_uid_key", ["key_uid"])
    .addCheckConstraint("keys_key_uid_length_check", sql`octet_length(key_uid) = 16`)
    .addCheckConstraint("keys_kek_algorithm_check", sql`kek_algorithm in ('AES_256', 'RSA_4096')`)
    .addCheckConstraint("keys_protection_check", sql`protection in ('PLATFORM_MANAGED', 'CUSTOMER_MANAGED')`)
    .addCheckConstraint("keys_state_check", sql`state in ('ENABLED', 'REVOKED', 'DESTROYED')`)
    .addCheckConstraint(
      "keys_rotation_periods_check",
      sql`dek_rotation_period_seconds > 0 and kek_rotation_period_seconds > 0`,
    )
    .addCheckConstraint("keys_primary_versions_check", sql`primary_dek_version >= 1 and primary_kek_version >= 1`)
    .addCheckConstraint("keys_revoked_has_revoke_time_check", sql`state <> 'REVOKED' or revoke_time is not null`)
    .execute();

  // Listing a tenant's keys filtered by state, in key_id order (keyset
  // pagination); the primary key serves the unfiltered listing.
  await db.schema.createIndex("keys_tenant_state_key_idx").on("keys").columns(["tenant_id", "state", "key_id"]).execute();

  await db.schema
    .createTable("kek_versions")
    .addColumn("tenant_id", id, (col) => col.notNull())
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("version", "integer", (col) => col.notNull())
    .addColumn("state", "text", (col) => col.notNull())
    .addColumn("wrapped_material", "bytea")
    .addColumn("public_key", "bytea")
    .addColumn("root_provider", "text", (col) => col.notNull())
    .addColumn("root_key_id", "text", (col) => col.notNull())
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("destroy_time", "timestamptz")
    .addPrimaryKeyConstraint("kek_versions_pkey", ["tenant_id", "key_id", "version"])
    .addForeignKeyConstraint("kek_versions_key_fkey", ["tenant_id", "key_id"], "keys", ["tenant_id", "key_id"])
    .addCheckConstraint("kek_versions_version_check", sql`version >= 1`)
    .addCheckConstraint("kek_versions_state_check", sql`state in ('PRIMARY', 'RETIRING', 'DESTROYED')`)
    // Crypto-shredding: a destroyed version keeps no material.
    .addCheckConstraint(
      "kek_versions_destroyed_has_no_material_check",
      sql`state <> 'DESTROYED' or (wrapped_material is null and destroy_time is not null)`,
    )
    .execute();

  // At most one primary KEK version per key, checked at commit: a rotation may
  // insert the new primary before it retires the old one.
  await sql`
    alter table kek_versions add constraint kek_versions_one_primary
      exclude using btree (tenant_id with =, key_id with =) where (state = 'PRIMARY')
      deferrable initially deferred`.execute(db);

  await db.schema
    .createTable("dek_versions")
    .addColumn("tenant_id", id, (col) => col.notNull())
    .addColumn("key_id", id, (col) => col.notNull())
    .addColumn("version", "integer", (col) => col.notNull())
    .addColumn("state", "text", (col) => col.notNull())
    .addColumn("kek_version", "integer", (col) => col.notNull())
    .addColumn("wrapped_material", "bytea")
    .addColumn("create_time", "timestamptz", (col) => col.notNull())
    .addColumn("rotate_time", "timestamptz")
    .addPrimaryKeyConstraint("dek_versions_pkey", ["tenant_id", "key_id", "version"])
    .addForeignKeyConstraint("dek_versions_key_fkey", ["tenant_id", "key_id"], "keys", ["tenant_id", "key_id"])
    // The KEK version that wraps the DEK exists (destroyed KEK versions keep their row).
    .addForeignKeyConstraint(
      "dek_versions_kek_version_fkey",
      ["tenant_id", "key_id", "kek_version"],
      "kek_versions",
      ["tenant_id", "key_id", "version"],
    )
    .addCheckConstraint("dek_versions_version_check", sql`version >= 1`)
    .addCheckConstraint("dek_versions_state_check", sql`state in ('PRIMARY', 'DECRYPT_ONLY', 'PENDING_PURGE', 'PURGED')`)
    .addCheckConstraint("dek_versions_purged_has_no_material_check", sql`state <> 'PURGED' or wrapped_material is null`)
    .execute();

  // At most one primary DEK version per key, checked at commit.
  await sql`
    alter table dek_versions add constraint dek_versions_one_primary
      exclude using btree (tenant_id with =, key_id with =) where (state = 'PRIMARY')
      deferrable initially deferred`.execute(db);

  // Re-wrap after KEK rotation finds the DEK versions still under an old KEK version.
  await db.schema
    .createIndex("dek_versions_kek_version_idx")
    .on("dek_versions")
    .columns(["tenant_id", "key_id", "kek_version"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("dek_versions").execute();
  await db.schema.dropTable("kek_versions").execute();
  await db.schema.dropTable("keys").execute();
  await db.schema.dropTable("tenants").execute();
}

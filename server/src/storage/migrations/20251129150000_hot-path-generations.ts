import { type Kysely, sql } from "kysely";

/*
 * Per-tenant hot-path generations: a counter per tenant that moves, in the
 * same transaction, whenever anything the hot path reads of that tenant
 * (keys, dek_versions, kek_versions) is inserted, updated or deleted — by this
 * service, another replica or an operator's SQL. A replica may keep a row it
 * read together with its tenant's generation, and serve it again for a call
 * that arrived later once it has read the generation (after the call arrived)
 * and found it unchanged: no commit can have touched the row in between
 * (storage/data-key-material-reader.ts).
 *
 * Why the detour through hot_path_pending: bumping the counter inside each
 * statement would hold the tenant's counter row lock from that statement to
 * commit, and two transactions that also wait on each other's key rows (a
 * rotation re-wrapping DEKs next to a re-wrap batch) would deadlock. So each
 * statement only notes its tenants in hot_path_pending, keyed by its own
 * transaction so no two transactions ever wait on each other there; a
 * deferred trigger, at commit, bumps every noted tenant in tenant order and
 * removes the notes. At commit a transaction takes no lock but counter rows,
 * always in the same order: no cycle.
 */
const id = sql`text collate "C"`;
const HOT_PATH_TABLES = ["keys", "dek_versions", "kek_versions"] as const;
// The functions find their tables in the schema they were made in, whatever the writing session's search_path.
const PINNED_SEARCH_PATH = "set search_path from current";

/**
 * The commit-time bump and the truncate bump, as this migration makes them.
 * Exported for migration 20251129190000, whose down() puts them back.
 */
export async function createBumpFunctions(db: Kysely<any>): Promise<void> {
  await sql
    .raw(
      `create or replace function hot_path_bump_noted() returns trigger language plpgsql ${PINNED_SEARCH_PATH} as $$
begin
  -- The first note of a transaction to fire bumps all of its tenants, in order; the rest find nothing.
  insert into hot_path_generations (tenant_id, generation)
    select tenant_id, 1 from hot_path_pending where transaction_id = new.transaction_id order by tenant_id
    on conflict (tenant_id) do update set generation = hot_path_generations.generation + 1;
  delete from hot_path_pending where transaction_id = new.transaction_id;
  return null;
end $$`,
    )
    .execute(db);
  await sql
    .raw(
      `create or replace function hot_path_bump_all() returns trigger language plpgsql ${PINNED_SEARCH_PATH} as $$
begin
  update hot_path_generations set generation = generation + 1;
  return null;
end $$`,
    )
    .execute(db);
}

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table hot_path_generations (
    tenant_id ${id} primary key,
    generation bigint not null
  )`.execute(db);
  await sql`create table hot_path_pending (
    transaction_id bigint not null,
    tenant_id ${id} not null,
    primary key (transaction_id, tenant_id)
  )`.execute(db);

  for (const [name, rows] of [
    ["hot_path_note_new_rows", "new_rows"],
    ["hot_path_note_old_rows", "old_rows"],
    ["hot_path_note_changed_rows", "(select tenant_id from old_rows union select tenant_id from new_rows) as changed"],
  ] as const) {
    await sql
      .raw(
        `create function ${name}() returns trigger language plpgsql ${PINNED_SEARCH_PATH} as $$
begin
  insert into hot_path_pending (transaction_id, tenant_id)
    select distinct pg_current_xact_id()::text::bigint, tenant_id from ${rows}
    on conflict do nothing;
  return null;
end $$`,
      )
      .execute(db);
  }
  await createBumpFunctions(db);

  await sql
    .raw(
      `create constraint trigger hot_path_bump_at_commit after insert on hot_path_pending
  deferrable initially deferred for each row execute function hot_path_bump_noted()`,
    )
    .execute(db);
  for (const table of HOT_PATH_TABLES) {
    // A trigger with transition tables serves one event, hence three per table.
    await sql
      .raw(
        `create trigger ${table}_hot_path_insert after insert on ${table}
  referencing new table as new_rows for each statement execute function hot_path_note_new_rows()`,
      )
      .execute(db);
    await sql
      .raw(
        `create trigger ${table}_hot_path_update after update on ${table}
  referencing old table as old_rows new table as new_rows for each statement execute function hot_path_note_changed_rows()`,
      )
      .execute(db);
    await sql
      .raw(
        `create trigger ${table}_hot_path_delete after delete on ${table}
  referencing old table as old_rows for each statement execute function hot_path_note_old_rows()`,
      )
      .execute(db);
    await sql
      .raw(`create trigger ${table}_hot_path_truncate after truncate on ${table} for each statement execute function hot_path_bump_all()`)
      .execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of HOT_PATH_TABLES) {
    for (const event of ["insert", "update", "delete", "truncate"]) {
      await sql.raw(`drop trigger ${table}_hot_path_${event} on ${table}`).execute(db);
    }
  }
  await sql`drop table hot_path_pending`.execute(db);
  await sql`drop table hot_path_generations`.execute(db);
  for (const fn of ["hot_path_note_new_rows", "hot_path_note_old_rows", "hot_path_note_changed_rows", "hot_path_bump_noted", "hot_path_bump_all"]) {
    await sql.raw(`drop function ${fn}()`).execute(db);
  }
}

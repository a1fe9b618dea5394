import { type Kysely, sql } from "kysely";
import { createBumpFunctions } from "./20251129150000_hot-path-generations.js";

/*
 * Hot-path leases (docs/decisions/0008-hot-path-leases.md): replicas that
 * serve kept rows without asking the database, and writers that wait until
 * every such replica has dropped what their commit made stale.
 *
 * - At commit, the generation bump (migration 20251129150000) now also
 *   notifies: `g <generation> <tenant>` per tenant bumped, `all` for a
 *   truncate. The channel is per schema, so two deployments (or test runs)
 *   sharing a database never hear each other.
 * - hot_path_replicas: one row per listening replica. `acked_through` is the
 *   highest sync ping it has acknowledged; every notification committed before
 *   that ping was applied first (notifications arrive in commit order).
 *   `lease_expires_at` moves only with an acknowledgement, and only while the
 *   lease is still running: a replica whose lease ran out must register
 *   anew, with nothing kept.
 * - hot_path_sync_seq numbers the pings: `hot_path_ping()` records the ping,
 *   a random nonce and when it was taken in hot_path_pings, then notifies
 *   `sync <n> <nonce>`. A replica acknowledges only a ping it finds recorded
 *   with that nonce, and its lease counts from the recorded time. Any role
 *   may NOTIFY: without the nonce, which no one learns before the real
 *   notification is delivered (in commit order, after the writes it vouches
 *   for), a forged `sync` acknowledges and renews nothing. An old ping renews
 *   little.
 * - `call hot_path_await_replicas()` is the writer's wait, for this service
 *   after each commit that touched key rows and for an operator after SQL of
 *   their own: it pings, then returns once every replica with a running lease
 *   has acknowledged the ping or lost its lease. It commits inside (the ping
 *   must be delivered, row locks released), so it runs outside a transaction
 *   block, and names its tables with their schema because a procedure with a
 *   SET clause may not commit.
 */
const PINNED_SEARCH_PATH = "set search_path from current";
const id = sql`text collate "C"`;
/** Far beyond any lease: every replica that does not acknowledge has lost its lease long before. */
const AWAIT_TIMEOUT_SECONDS = 60;
const LOCK_TIMEOUT_SECONDS = 5;
const PRUNE_EVERY = 1_000;
const PINGS_KEPT = "10 minutes";

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table hot_path_replicas (
    replica_id ${id} primary key,
    lease_expires_at timestamptz not null,
    acked_through bigint not null,
    register_time timestamptz not null,
    -- The backend of its listening connection, for an operator's pg_stat_activity.
    listener_pid integer not null
  )`.execute(db);
  await sql`create sequence hot_path_sync_seq`.execute(db);
  await sql`create table hot_path_pings (
    n bigint primary key,
    nonce uuid not null,
    taken_at timestamptz not null
  )`.execute(db);
  await sql
    .raw(
      `create function hot_path_channel() returns text language sql stable ${PINNED_SEARCH_PATH} as $$
  select 'matih_kms_hot_path_' || left(md5(current_schema()), 16)
$$`,
    )
    .execute(db);
  await sql
    .raw(
      `create function hot_path_ping() returns bigint language plpgsql ${PINNED_SEARCH_PATH} as $$
declare
  ping bigint := nextval('hot_path_sync_seq');
  nonce uuid := gen_random_uuid();
begin
  insert into hot_path_pings (n, nonce, taken_at) values (ping, nonce, clock_timestamp());
  -- Now and then, forget pings no replica can still be owing (an acknowledgement that finds none re-registers).
  if ping % ${PRUNE_EVERY} = 0 then
    delete from hot_path_pings where taken_at < clock_timestamp() - interval '${PINGS_KEPT}';
  end if;
  perform pg_notify(hot_path_channel(), 'sync ' || ping || ' ' || nonce);
  return ping;
end $$`,
    )
    .execute(db);
  const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const schema = `"${(rows[0]?.schema ?? "public").replaceAll('"', '""')}"`;
  // The table lock: a renewal in flight while this looks would otherwise commit unseen, and its
  // replica trust its rows again without having applied this writer's notifications. SHARE waits for
  // renewals in flight and holds new ones back until the count is taken; it takes no transaction id.
  // The ping needs no durability (notifications do not survive a restart), so its commit does not wait for the WAL.
  await sql
    .raw(
      `create procedure hot_path_await_replicas() language plpgsql as $$
declare
  ping bigint;
  waiting bigint;
  deadline timestamptz := clock_timestamp() + interval '${AWAIT_TIMEOUT_SECONDS} seconds';
begin
  perform set_config('synchronous_commit', 'off', true);
  ping := ${schema}.hot_path_ping();
  commit;
  loop
    -- Bounded: an idle transaction holding the table must not stall every writer.
    perform set_config('lock_timeout', '${LOCK_TIMEOUT_SECONDS}s', true);
    lock table ${schema}.hot_path_replicas in share mode;
    select count(*) into waiting from ${schema}.hot_path_replicas
      where acked_through < ping and lease_expires_at > clock_timestamp();
    commit;
    exit when waiting = 0;
    if clock_timestamp() > deadline then
      raise exception 'hot_path_await_replicas: % replicas with a running lease did not acknowledge sync ping % within ${AWAIT_TIMEOUT_SECONDS} s', waiting, ping;
    end if;
    perform pg_sleep(0.001); -- pg_sleep waits whole milliseconds
  end loop;
end $$`,
    )
    .execute(db);
  await sql
    .raw(
      `create or replace function hot_path_bump_noted() returns trigger language plpgsql ${PINNED_SEARCH_PATH} as $$
declare
  bumped record;
begin
  -- The first note of a transaction to fire bumps all of its tenants, in order; the rest find nothing.
  for bumped in
    insert into hot_path_generations (tenant_id, generation)
      select tenant_id, 1 from hot_path_pending where transaction_id = new.transaction_id order by tenant_id
      on conflict (tenant_id) do update set generation = hot_path_generations.generation + 1
      returning tenant_id, generation
  loop
    perform pg_notify(hot_path_channel(), 'g ' || bumped.generation || ' ' || bumped.tenant_id);
  end loop;
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
  perform pg_notify(hot_path_channel(), 'all');
  return null;
end $$`,
    )
    .execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  // The bumps as they were, without notifications.
  await createBumpFunctions(db);
  await sql`drop procedure hot_path_await_replicas()`.execute(db);
  await sql`drop function hot_path_ping()`.execute(db);
  await sql`drop function hot_path_channel()`.execute(db);
  await sql`drop table hot_path_pings`.execute(db);
  await sql`drop sequence hot_path_sync_seq`.execute(db);
  await sql`drop table hot_path_replicas`.execute(db);
}

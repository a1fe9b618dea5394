/**
 * Hot-path leases (hot-path-lease.ts, replica-synced-dialect.ts, migration
 * 20251129190000): a replica trusts what it keeps only while it holds a lease,
 * and a commit that wrote key rows returns only once every replica with a
 * running lease acknowledged it. PostgreSQL only: PGlite is one process, with
 * no replicas to wait for (its hot path is proven by write generations).
 *
 * A "silent replica" below is a registry row nobody acknowledges for: the
 * writer must wait for it until it acknowledges or its lease runs out.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engines, postgresTestUrl } from "../../../test/support/databases.js";
import { ConfigError, loadConfig } from "../config.js";
import type { Executor } from "./database.js";
import pg from "pg";
import { hotPathLeaseOf, startHotPathLease } from "./hot-path-lease.js";
import { recordLastDecrypts } from "./lifecycle.repository.js";
import { openDatabase, type OpenedDatabase } from "./open-database.js";

const postgres = engines.find((engine) => engine.name === "postgres");
const LEASE_MS = 1_000;

describe("KMS_HOT_PATH_LEASE_MS", () => {
  it("defaults to 3 s, 0 turns leases off, and a lease too short to renew is refused naming the variable", () => {
    expect(loadConfig({}).hotPathLeaseMs).toBe(3_000);
    expect(loadConfig({ KMS_HOT_PATH_LEASE_MS: "0" }).hotPathLeaseMs).toBe(0);
    expect(loadConfig({ KMS_HOT_PATH_LEASE_MS: "10000" }).hotPathLeaseMs).toBe(10_000);
    for (const bad of ["100", "60001", "1.5", "soon"]) {
      expect(() => loadConfig({ KMS_HOT_PATH_LEASE_MS: bad }), bad).toThrow(ConfigError);
      expect(() => loadConfig({ KMS_HOT_PATH_LEASE_MS: bad }), bad).toThrow(/KMS_HOT_PATH_LEASE_MS/);
    }
  });
});

describe.skipIf(postgres === undefined)("hot-path leases on PostgreSQL", () => {
  let opened: OpenedDatabase;
  let db: Executor;
  beforeAll(async () => {
    opened = await postgres!.open();
    db = opened.db;
    await opened.startHotPathLease!({ leaseMs: LEASE_MS });
  });
  afterAll(async () => {
    await opened?.close();
  });

  const lease = () => hotPathLeaseOf(db)!;

  /** Runs `body` with a registry row nobody acknowledges for, removed afterwards whatever happens. */
  async function withSilentReplica(name: string, body: () => Promise<void>): Promise<void> {
    await sql`insert into hot_path_replicas (replica_id, lease_expires_at, acked_through, register_time, listener_pid)
      values (${name}, clock_timestamp() + interval '10 minutes', 0, clock_timestamp(), 0)`.execute(db);
    try {
      await body();
    } finally {
      await sql`delete from hot_path_replicas where replica_id = ${name}`.execute(db);
    }
  }

  /** Resolves once this process's own lease acknowledged every ping sent so far: the writer is now waiting on the silent one only. */
  async function ownLeaseCaughtUp(): Promise<void> {
    for (;;) {
      const { rows } = await sql<{ caught_up: boolean }>`
        select acked_through >= (select last_value from hot_path_sync_seq) as caught_up
        from hot_path_replicas where replica_id = ${lease().replicaId()}`.execute(db);
      if (rows[0]?.caught_up === true) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
    let settled = false;
    const observed = promise.finally(() => {
      settled = true;
    });
    return { promise: observed, settled: () => settled };
  }

  const aKeyWrite = (description: string) =>
    db.updateTable("keys").set({ description }).where("tenant_id", "=", "nobody").execute();

  it("registers with a running lease, and trusts it", async () => {
    expect(lease().trusted()).toBe(true);
    const { rows } = await sql<{ live: boolean }>`
      select lease_expires_at > clock_timestamp() as live from hot_path_replicas where replica_id = ${lease().replicaId()}`.execute(db);
    expect(rows).toEqual([{ live: true }]);
  });

  it("a key write returns only after a replica that had not acknowledged it does", async () => {
    await withSilentReplica("silent-acks", async () => {
      const write = tracked(aKeyWrite("a"));
      await ownLeaseCaughtUp();
      expect(write.settled()).toBe(false);
      await sql`update hot_path_replicas set acked_through = 9223372036854775807 where replica_id = 'silent-acks'`.execute(db);
      await write.promise;
    });
  });

  it("a key write stops waiting for a silent replica once its lease ran out", async () => {
    await withSilentReplica("silent-expires", async () => {
      const write = tracked(db.transaction().execute((tx) => tx.updateTable("dek_versions").set({ state: "PRIMARY" }).where("tenant_id", "=", "nobody").execute()));
      await ownLeaseCaughtUp();
      expect(write.settled()).toBe(false);
      await sql`update hot_path_replicas set lease_expires_at = clock_timestamp() - interval '1 second' where replica_id = 'silent-expires'`.execute(db);
      await write.promise;
    });
  });

  it("a rolled-back transaction, a write to other tables and the Decrypt bookkeeping do not wait", async () => {
    await withSilentReplica("silent-ignored", async () => {
      await expect(
        db.transaction().execute(async (tx) => {
          await tx.updateTable("keys").set({ description: "b" }).where("tenant_id", "=", "nobody").execute();
          throw new Error("rolled back on purpose");
        }),
      ).rejects.toThrow("rolled back on purpose");
      await db.deleteFrom("jobs").where("tenant_id", "=", "nobody").execute();
      await recordLastDecrypts(db, [{ tenantId: "nobody", keyId: "k", version: 1, time: new Date() }]);
    });
  });

  it("a commit that changed a tenant's key rows has raised that tenant's floor here before it returns", async () => {
    const tenantId = "lease-floor";
    await db.insertInto("tenants").values({ tenant_id: tenantId, create_time: new Date() }).execute();
    const { rows } = await sql<{ generation: string }>`select generation from hot_path_generations where tenant_id = ${tenantId}`.execute(db);
    const before = Number(rows[0]?.generation ?? 0);
    await sql`update keys set description = 'x' where tenant_id = ${tenantId}`.execute(db);
    // No key rows of that tenant: the statement noted nothing, so nothing moved.
    expect(lease().floor(tenantId)).toBe(before);
    await db
      .insertInto("keys")
      .values({
        tenant_id: tenantId,
        key_id: "k",
        key_uid: Buffer.alloc(16, 7),
        kek_algorithm: "AES_256",
        protection: "PLATFORM_MANAGED",
        state: "ENABLED",
        dek_rotation_period_seconds: 86_400,
        kek_rotation_period_seconds: 86_400,
        primary_dek_version: 1,
        primary_kek_version: 1,
        create_time: new Date(),
        update_time: new Date(),
      })
      .execute();
    const after = await sql<{ generation: string }>`select generation from hot_path_generations where tenant_id = ${tenantId}`.execute(db);
    expect(Number(after.rows[0]?.generation)).toBeGreaterThan(before);
    expect(lease().floor(tenantId)).toBe(Number(after.rows[0]?.generation));
  });

  it("a write whose wait for replicas fails is not failed: it committed, so the writer waits out the lease instead", async () => {
    await sql`alter procedure hot_path_await_replicas() rename to hot_path_await_replicas_saved`.execute(db);
    await sql`create procedure hot_path_await_replicas() language plpgsql as $$ begin raise exception 'replicas unreachable'; end $$`.execute(db);
    try {
      await db.transaction().execute((tx) => tx.updateTable("keys").set({ description: "after-failed-wait" }).where("tenant_id", "=", "lease-floor").execute());
      const { rows } = await sql<{ description: string }>`select description from keys where tenant_id = 'lease-floor'`.execute(db);
      expect(rows).toEqual([{ description: "after-failed-wait" }]);
    } finally {
      await sql`drop procedure hot_path_await_replicas()`.execute(db);
      await sql`alter procedure hot_path_await_replicas_saved() rename to hot_path_await_replicas`.execute(db);
    }
  });

  it("a ping's acknowledgement renews the lease from when the ping was taken: an old ping renews nothing, a forged one acknowledges nothing", async () => {
    const { rows: schema } = await sql<{ name: string }>`select current_schema() as name`.execute(db);
    const slow = await openDatabase({ databaseUrl: postgresTestUrl, schema: schema[0]!.name, poolSize: 1 });
    try {
      // A long lease: its own renewals come only every ~20 s, so every change below is an acknowledgement's.
      await slow.startHotPathLease!({ leaseMs: 60_000 });
      const id = hotPathLeaseOf(slow.db)!.replicaId();
      const leaseOf = async () =>
        (await sql<{ expires: Date; acked: string }>`select lease_expires_at as expires, acked_through as acked from hot_path_replicas where replica_id = ${id}`.execute(db))
          .rows[0]!;
      const acknowledged = async (ping: number) => {
        while (Number((await leaseOf()).acked) < ping) await new Promise((resolve) => setTimeout(resolve, 5));
      };
      const before = await leaseOf();
      // A ping recorded two minutes ago (a listener that lags that far hears only such pings).
      const { rows: old } = await sql<{ n: string }>`
        with recorded as (
          insert into hot_path_pings (n, nonce, taken_at)
          values (nextval('hot_path_sync_seq'), gen_random_uuid(), clock_timestamp() - interval '2 minutes')
          returning n, nonce)
        select n, pg_notify(hot_path_channel(), 'sync ' || n || ' ' || nonce) from recorded`.execute(db);
      await acknowledged(Number(old[0]!.n));
      expect((await leaseOf()).expires).toEqual(before.expires);
      const { rows: fresh } = await sql<{ n: string }>`select hot_path_ping() as n`.execute(db);
      await acknowledged(Number(fresh[0]!.n));
      expect((await leaseOf()).expires.getTime()).toBeGreaterThan(before.expires.getTime());

      // Any role may NOTIFY: a forged ping, not recorded with its nonce, acknowledges and renews nothing.
      const renewed = await leaseOf();
      await sql`select pg_notify(hot_path_channel(), 'sync 900000000000000 ' || gen_random_uuid())`.execute(db);
      const { rows: next } = await sql<{ n: string }>`select hot_path_ping() as n`.execute(db);
      await acknowledged(Number(next[0]!.n));
      const after = await leaseOf();
      expect(Number(after.acked)).toBe(Number(next[0]!.n));
      expect(after.expires.getTime()).toBeGreaterThanOrEqual(renewed.expires.getTime());
    } finally {
      await slow.close();
    }
  });

  it("a lease that ran out is never renewed: the replica registers anew, in a new epoch, and its old row is gone", async () => {
    const oldId = lease().replicaId();
    const oldEpoch = lease().epoch();
    await sql`update hot_path_replicas set lease_expires_at = clock_timestamp() - interval '1 second' where replica_id = ${oldId}`.execute(db);
    // A ping: the replica's acknowledgement finds its lease over.
    await sql`call hot_path_await_replicas()`.execute(db);
    await until(() => lease().replicaId() !== "" && lease().replicaId() !== oldId && lease().trusted());
    expect(lease().epoch()).toBeGreaterThan(oldEpoch);
    const { rows } = await sql<{ replica_id: string }>`select replica_id from hot_path_replicas where replica_id = ${oldId}`.execute(db);
    expect(rows).toEqual([]);
  });

  it("losing the listening connection ends trust and drops everything kept; the lease comes back by itself", async () => {
    const oldId = lease().replicaId();
    const oldEpoch = lease().epoch();
    await sql`select pg_terminate_backend(listener_pid) from hot_path_replicas where replica_id = ${oldId}`.execute(db);
    await until(() => lease().epoch() > oldEpoch);
    await until(() => lease().trusted() && lease().replicaId() !== oldId);
    // The old registration was removed on re-registering: writers do not wait out its lease.
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from hot_path_replicas where replica_id = ${oldId}`.execute(db);
    expect(rows).toEqual([{ n: 0 }]);
  });

  it("close() leaves the registry, so writers stop waiting for it at once", async () => {
    const { rows: schema } = await sql<{ name: string }>`select current_schema() as name`.execute(db);
    const other = await openDatabase({ databaseUrl: postgresTestUrl, schema: schema[0]!.name, poolSize: 1 });
    await other.startHotPathLease!({ leaseMs: 60_000 });
    const id = hotPathLeaseOf(other.db)!.replicaId();
    expect(id).not.toBe("");
    await other.close();
    expect(hotPathLeaseOf(other.db)).toBeUndefined();
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from hot_path_replicas where replica_id = ${id}`.execute(db);
    expect(rows).toEqual([{ n: 0 }]);
  });
});

describe.skipIf(postgres === undefined)("a hot-path lease's connections", () => {
  it("stopping while it reconnects, or failing to start, leaves no connection open and no registration behind", async () => {
    const opened = await postgres!.open();
    try {
      const { rows } = await sql<{ name: string }>`select current_schema() as name`.execute(opened.db);
      const made: pg.Client[] = [];
      let ended = 0;
      const newClient = () => {
        const client = new pg.Client({ connectionString: postgresTestUrl, options: `-c search_path=${rows[0]!.name}` });
        client.on("end", () => (ended += 1));
        made.push(client);
        return client;
      };
      const lease = await startHotPathLease({ newClient, leaseMs: LEASE_MS });
      await sql`select pg_terminate_backend(listener_pid) from hot_path_replicas`.execute(opened.db);
      // The reconnect begins: stop in the middle of it.
      await until(() => made.length === 2);
      await lease.stop();
      const madeByStop = made.length;
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Nothing reconnects after stop(), and every connection it made is closed.
      expect(made.length).toBe(madeByStop);
      expect(ended).toBe(made.length);
      const registry = await sql<{ n: number }>`select count(*)::int as n from hot_path_replicas`.execute(opened.db);
      expect(registry.rows).toEqual([{ n: 0 }]);

      // A schema without the migration: the start fails, and nothing is retried behind the caller's back.
      const empty = await postgres!.open({ migrate: false });
      try {
        const { rows: bare } = await sql<{ name: string }>`select current_schema() as name`.execute(empty.db);
        const attempts: pg.Client[] = [];
        await expect(
          startHotPathLease({
            leaseMs: LEASE_MS,
            newClient: () => {
              const client = new pg.Client({ connectionString: postgresTestUrl, options: `-c search_path=${bare[0]!.name}` });
              attempts.push(client);
              return client;
            },
          }),
        ).rejects.toThrow(/hot_path_channel/);
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(attempts.length).toBe(1);
      } finally {
        await empty.close();
      }
    } finally {
      await opened.close();
    }
  });
});

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}

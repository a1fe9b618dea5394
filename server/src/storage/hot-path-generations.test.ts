/**
 * The per-tenant hot-path generation (migration 20251129150000): it moves at
 * the commit of any transaction that wrote a tenant's keys, KEK or DEK
 * versions — once per transaction, only for the tenants written, never for a
 * rollback — and two transactions writing the same tenants in opposite orders
 * both commit (the bumps happen at commit, in tenant order).
 */
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engines, postgresTestUrl } from "../../../test/support/databases.js";
import type { Executor } from "./database.js";
import { insertDekVersion } from "./dek-version.repository.js";
import type { OpenedDatabase } from "./open-database.js";
import { dekVersionRow, seedKey } from "./testing/fixtures.js";
import { withTransaction } from "./with-transaction.js";

async function generationOf(db: Executor, tenantId: string): Promise<number> {
  const { rows } = await sql<{ generation: string }>`select generation from hot_path_generations where tenant_id = ${tenantId}`.execute(db);
  return rows.length === 0 ? 0 : Number(rows[0]!.generation);
}

async function pendingNotes(db: Executor): Promise<number> {
  const { rows } = await sql<{ count: string }>`select count(*) as count from hot_path_pending`.execute(db);
  return Number(rows[0]!.count);
}

describe.each(engines)("hot-path generations on $name", (engine) => {
  let opened: OpenedDatabase;
  beforeAll(async () => {
    opened = await engine.open();
  });
  afterAll(async () => {
    await opened?.close();
  });
  const db = () => opened.db;

  it("move once per committed transaction, for each tenant it wrote, and leave no notes behind", async () => {
    await seedKey(db(), "gen-a", "key-1");
    await seedKey(db(), "gen-b", "key-1");
    const a = await generationOf(db(), "gen-a");
    const b = await generationOf(db(), "gen-b");
    expect(a).toBeGreaterThan(0);

    await withTransaction(db(), async (trx) => {
      await sql`update keys set description = 'one' where tenant_id = 'gen-a'`.execute(trx);
      await sql`update kek_versions set state = state where tenant_id = 'gen-a'`.execute(trx);
      await insertDekVersion(trx, dekVersionRow("gen-a", "key-1", 2, { state: "DECRYPT_ONLY" }));
      await sql`delete from dek_versions where tenant_id = 'gen-a' and version = 2`.execute(trx);
    });

    expect(await generationOf(db(), "gen-a")).toBe(a + 1);
    expect(await generationOf(db(), "gen-b")).toBe(b);
    expect(await pendingNotes(db())).toBe(0);
  });

  it("move for an update that changes only a Decrypt's recorded time, since the hot path reads it too", async () => {
    const before = await generationOf(db(), "gen-b");
    await sql`update dek_versions set last_decrypt_time = now() where tenant_id = 'gen-b'`.execute(db());
    expect(await generationOf(db(), "gen-b")).toBe(before + 1);
  });

  it("do not move when the transaction rolls back", async () => {
    const before = await generationOf(db(), "gen-a");
    await expect(
      withTransaction(db(), async (trx) => {
        await sql`update keys set state = 'REVOKED', revoke_time = now() where tenant_id = 'gen-a'`.execute(trx);
        throw new Error("roll back");
      }),
    ).rejects.toThrow("roll back");
    expect(await generationOf(db(), "gen-a")).toBe(before);
    expect(await pendingNotes(db())).toBe(0);
  });

  it("do not move for a statement that matched no row", async () => {
    const before = await generationOf(db(), "gen-a");
    await sql`update keys set description = 'none' where tenant_id = 'gen-a' and key_id = 'no-such-key'`.execute(db());
    expect(await generationOf(db(), "gen-a")).toBe(before);
  });

  it("move for every tenant when a hot-path table is truncated", async () => {
    const a = await generationOf(db(), "gen-a");
    const b = await generationOf(db(), "gen-b");
    await sql`truncate dek_versions`.execute(db());
    expect(await generationOf(db(), "gen-a")).toBe(a + 1);
    expect(await generationOf(db(), "gen-b")).toBe(b + 1);
  });
});

// Sessions of their own: PGlite has one session, so these cases exist on PostgreSQL only.
describe.skipIf(!engines.some((engine) => engine.name === "postgres"))("hot-path generations across PostgreSQL sessions", () => {
  let opened: OpenedDatabase;
  let schema: string;
  const sessions: pg.Client[] = [];
  beforeAll(async () => {
    opened = await engines.find((engine) => engine.name === "postgres")!.open();
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(opened.db);
    schema = rows[0]!.schema;
    await seedKey(opened.db, "cross-a", "key-1");
    await seedKey(opened.db, "cross-b", "key-1");
  });
  afterAll(async () => {
    await Promise.all(sessions.map((session) => session.end()));
    await opened?.close();
  });

  async function session(searchPath: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: postgresTestUrl });
    sessions.push(client);
    await client.connect();
    await client.query(`set search_path to ${searchPath}`);
    // A lock wait that should not happen fails the case instead of hanging it.
    await client.query("set statement_timeout = 5000");
    return client;
  }

  it("are not visible to another session before the writer commits, and are after", async () => {
    const writer = await session(`"${schema}"`);
    const before = await generationOf(opened.db, "cross-a");
    await writer.query("begin");
    await writer.query("update keys set state = 'REVOKED', revoke_time = now() where tenant_id = 'cross-a'");
    expect(await generationOf(opened.db, "cross-a")).toBe(before);
    await writer.query("commit");
    expect(await generationOf(opened.db, "cross-a")).toBe(before + 1);
  });

  it("let two transactions that write the same two tenants in opposite orders both commit", async () => {
    const first = await session(`"${schema}"`);
    const second = await session(`"${schema}"`);
    const a = await generationOf(opened.db, "cross-a");
    const b = await generationOf(opened.db, "cross-b");
    await first.query("begin");
    await second.query("begin");
    await first.query("update keys set description = 'first' where tenant_id = 'cross-a'");
    await second.query("update kek_versions set state = state where tenant_id = 'cross-b'");
    await first.query("update dek_versions set state = state where tenant_id = 'cross-b'");
    await second.query("update dek_versions set state = state where tenant_id = 'cross-a'");
    // Bumping inside each statement would have each hold one tenant's counter and wait for the other's: a deadlock.
    await Promise.all([first.query("commit"), second.query("commit")]);
    expect(await generationOf(opened.db, "cross-a")).toBe(a + 2);
    expect(await generationOf(opened.db, "cross-b")).toBe(b + 2);
  });

  it("move for a write from a session whose search_path does not name the schema (an operator's psql)", async () => {
    const operator = await session("public");
    const before = await generationOf(opened.db, "cross-b");
    await operator.query(`update "${schema}".keys set state = 'REVOKED', revoke_time = now() where tenant_id = 'cross-b'`);
    expect(await generationOf(opened.db, "cross-b")).toBe(before + 1);
  });
});

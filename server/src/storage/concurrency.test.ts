/**
 * Several requests share one database at once. On PostgreSQL each
 * transaction has its own session; PGlite has a single session, so the
 * dialect must run transactions (and statements outside them) one at a time.
 * A dialect that let them interleave fails these tests: a rollback undoes
 * other callers' writes, and SKIP LOCKED does not skip the session's own locks.
 */
import { AbortedTransactionError, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engines } from "../../../test/support/databases.js";
import { insertKey } from "./key.repository.js";
import type { OpenedDatabase } from "./open-database.js";
import { findTenant, insertTenantIfAbsent, tenantExists } from "./tenant.repository.js";
import { material, seedKey, T0 } from "./testing/fixtures.js";
import { keyRow } from "./testing/fixtures.js";
import { withTransaction } from "./with-transaction.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** A pseudo-random but repeatable pause of 0-3 ms, so callers interleave differently. */
const jitter = (n: number) => sleep((n * 7) % 4);

describe.each(engines)("concurrent access on $name", (engine) => {
  let opened: OpenedDatabase;
  beforeAll(async () => {
    opened = await engine.open();
  });
  afterAll(async () => {
    await opened?.close();
  });
  const db = () => opened.db;

  it("leaves exactly the committed rows after many concurrent transactions, some rolled back, amid plain statements", async () => {
    const transactions = Array.from({ length: 30 }, (_, i) =>
      withTransaction(db(), async (trx) => {
        await insertTenantIfAbsent(trx, `tx-${i}-a`, T0);
        await jitter(i);
        await insertTenantIfAbsent(trx, `tx-${i}-b`, T0);
        await jitter(i + 1);
        // Each transaction sees its own first row, whatever else runs.
        expect(await tenantExists(trx, `tx-${i}-a`)).toBe(true);
        if (i % 3 === 0) throw new Error(`roll back ${i}`);
      }),
    );
    const statements = Array.from({ length: 30 }, async (_, j) => {
      await jitter(j + 2);
      await insertTenantIfAbsent(db(), `solo-${j}`, T0);
    });
    const outcomes = await Promise.allSettled([...transactions, ...statements]);

    expect(outcomes.filter((outcome) => outcome.status === "rejected")).toHaveLength(10);
    const expected = [
      ...Array.from({ length: 30 }, (_, i) => i)
        .filter((i) => i % 3 !== 0)
        .flatMap((i) => [`tx-${i}-a`, `tx-${i}-b`]),
      ...Array.from({ length: 30 }, (_, j) => `solo-${j}`),
    ].sort();
    const { rows } = await sql<{ tenant_id: string }>`
      select tenant_id from tenants where tenant_id like 'tx-%' or tenant_id like 'solo-%' order by tenant_id`.execute(db());
    expect(rows.map((row) => row.tenant_id)).toEqual(expected);
  });

  it("never lets two workers claim the same row with FOR UPDATE SKIP LOCKED", async () => {
    const keyIds = Array.from({ length: 24 }, (_, i) => `job-${String(i).padStart(2, "0")}`);
    for (const keyId of keyIds) await seedKey(db(), "claims", keyId, { description: "unclaimed" });

    async function worker(name: string, seed: number): Promise<string[]> {
      const claimed: string[] = [];
      for (let round = 0; ; round++) {
        const keyId = await withTransaction(db(), async (trx) => {
          const row = await trx
            .selectFrom("keys")
            .select("key_id")
            .where("tenant_id", "=", "claims")
            .where("description", "=", "unclaimed")
            .orderBy("key_id")
            .limit(1)
            .forUpdate()
            .skipLocked()
            .executeTakeFirst();
          if (row === undefined) return undefined;
          await jitter(seed + round);
          await trx
            .updateTable("keys")
            .set({ description: `claimed by ${name}` })
            .where("tenant_id", "=", "claims")
            .where("key_id", "=", row.key_id)
            .execute();
          return row.key_id;
        });
        if (keyId === undefined) return claimed;
        claimed.push(keyId);
      }
    }

    const names = ["w0", "w1", "w2", "w3"];
    const claims = await Promise.all(names.map((name, i) => worker(name, i)));

    const all = claims.flat();
    expect(new Set(all).size).toBe(all.length);
    expect([...all].sort()).toEqual(keyIds);
    // How the rows spread over the workers depends on scheduling, so it is not asserted.
    const { rows } = await sql<{ key_id: string; description: string }>`
      select key_id, description from keys where tenant_id = 'claims'`.execute(db());
    for (const row of rows) {
      const owner = names[claims.findIndex((claimed) => claimed.includes(row.key_id))];
      expect(row.description).toBe(`claimed by ${owner}`);
    }
  });

  it("reports a transaction whose statement failed as aborted at commit, committing nothing", async () => {
    const error = await withTransaction(db(), async (trx) => {
      await insertTenantIfAbsent(trx, "aborted", T0);
      await sql`select 1 / 0`.execute(trx).catch(() => undefined);
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedTransactionError);
    expect(await tenantExists(db(), "aborted")).toBe(false);
    // The next caller gets a healthy session.
    expect(await insertTenantIfAbsent(db(), "after-aborted", T0)).toBe(true);
  });

  it("does not put a failed statement's parameter values on its error", async () => {
    await seedKey(db(), "leak", "k");
    const secretish = material(32, 4242);
    const error = await insertKey(db(), keyRow("leak", "k2", { key_uid: secretish, kek_algorithm: "DES" as never })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    const own = Object.entries(error as object);
    const rendered = JSON.stringify(own, (_, value) => (Buffer.isBuffer(value) ? value.toString("hex") : value));
    expect(rendered).not.toContain(secretish.toString("hex"));
    expect(Object.keys(error as object)).not.toContain("params");
  });

  it.runIf(engine.name === "pglite")(
    "PGlite: rolls back a transaction left open by a connection() holder before the next caller runs",
    async () => {
      await db()
        .connection()
        .execute(async (connection) => {
          await sql`begin`.execute(connection);
          await insertTenantIfAbsent(connection, "left-open", T0);
        });
      expect(await findTenant(db(), "left-open")).toBeUndefined();
      await withTransaction(db(), (trx) => insertTenantIfAbsent(trx, "after-left-open", T0));
      expect(await tenantExists(db(), "after-left-open")).toBe(true);
    },
  );

  it.runIf(engine.name === "pglite")("PGlite: runs a statement outside a transaction only after the open transaction ends", async () => {
    const events: string[] = [];
    let inside!: () => void;
    const begun = new Promise<void>((resolve) => (inside = resolve));
    const transaction = withTransaction(db(), async (trx) => {
      inside();
      await sleep(100);
      await insertTenantIfAbsent(trx, "serial-tx", T0);
      events.push("transaction ends");
    });
    await begun;
    const outside = tenantExists(db(), "serial-tx").then((seen) => events.push(`statement sees committed row: ${seen}`));
    await Promise.all([transaction, outside]);
    expect(events).toEqual(["transaction ends", "statement sees committed row: true"]);
  });
});

import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineActivityOf, type EngineActivity } from "./engine-activity.js";
import { openDatabase, type OpenedDatabase } from "./open-database.js";

/** The write generation on a real PGlite: it must move on every statement that changed data. */
describe("the PGlite write generation", () => {
  let opened: OpenedDatabase;
  let activity: EngineActivity;
  beforeAll(async () => {
    opened = await openDatabase({});
    activity = engineActivityOf(opened.db)!;
    await sql`create table probe (id int primary key, note text)`.execute(opened.db);
    await sql`insert into probe values (1, 'one')`.execute(opened.db);
  });
  afterAll(async () => {
    await opened?.close();
  });

  const moved = async (statement: () => Promise<unknown>): Promise<boolean> => {
    const before = activity.writeGeneration;
    await statement();
    return activity.writeGeneration !== before;
  };

  it("belongs to the root handle only: a derived handle and a transaction have none", async () => {
    expect(activity).toBeDefined();
    expect(engineActivityOf(opened.db.withSchema("public"))).toBeUndefined();
    await opened.db.transaction().execute(async (tx) => expect(engineActivityOf(tx)).toBeUndefined());
  });

  it("stays for a SELECT, and counts it as a read", async () => {
    const reads = activity.reads;
    expect(await moved(() => sql`select * from probe`.execute(opened.db))).toBe(false);
    expect(activity.reads).toBe(reads + 1);
  });

  it("stays for an UPDATE or DELETE that matched no row (the workers' idle polls)", async () => {
    expect(await moved(() => sql`update probe set note = 'x' where id = 99`.execute(opened.db))).toBe(false);
    expect(await moved(() => sql`delete from probe where id = 99`.execute(opened.db))).toBe(false);
  });

  it("moves for an INSERT, UPDATE or DELETE that changed a row", async () => {
    expect(await moved(() => sql`insert into probe values (2, 'two')`.execute(opened.db))).toBe(true);
    expect(await moved(() => sql`update probe set note = 'deux' where id = 2`.execute(opened.db))).toBe(true);
    expect(await moved(() => sql`delete from probe where id = 2`.execute(opened.db))).toBe(true);
  });

  it("moves for a SELECT whose CTE modified data, and for an UPDATE under a WITH whatever its own count", async () => {
    await sql`insert into probe values (3, 'three')`.execute(opened.db);
    expect(await moved(() => sql`with gone as (delete from probe where id = 3 returning id) select id from gone`.execute(opened.db))).toBe(true);
    expect(await moved(() => sql`with n as (select 1) update probe set note = 'x' where id = 99`.execute(opened.db))).toBe(true);
  });

  it("moves for a statement that failed, and for DDL", async () => {
    expect(await moved(() => sql`insert into probe values (1, 'duplicate')`.execute(opened.db).catch(() => undefined))).toBe(true);
    expect(await moved(() => sql`create index probe_note on probe (note)`.execute(opened.db))).toBe(true);
  });

  it("moves for a transaction that wrote, and stays for one that only read", async () => {
    expect(await moved(() => opened.db.transaction().execute((tx) => sql`update probe set note = 'uno' where id = 1`.execute(tx)))).toBe(true);
    expect(await moved(() => opened.db.transaction().execute((tx) => sql`select * from probe`.execute(tx)))).toBe(false);
  });
});

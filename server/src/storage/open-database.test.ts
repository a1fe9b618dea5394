import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { migrateToLatest } from "./migrations/migrate-to-latest.js";
import { openDatabase } from "./open-database.js";
import { findTenant, insertTenantIfAbsent } from "./tenant.repository.js";
import { T0 } from "./testing/fixtures.js";

describe("openDatabase", () => {
  it("refuses PostgreSQL-only options when no databaseUrl is given", async () => {
    await expect(openDatabase({ schema: "s" })).rejects.toThrow(/PostgreSQL only/);
    await expect(openDatabase({ poolSize: 3 })).rejects.toThrow(/PostgreSQL only/);
    await expect(openDatabase({ ssl: { rejectUnauthorized: true } })).rejects.toThrow(/PostgreSQL only/);
  });

  it("refuses both a databaseUrl and a dataDir", async () => {
    await expect(openDatabase({ databaseUrl: "postgres://db/kms", dataDir: "/tmp/x" })).rejects.toThrow(/not both/);
  });

  it("refuses a schema name that is not a plain identifier", async () => {
    await expect(openDatabase({ databaseUrl: "postgres://db/kms", schema: "a b; drop" })).rejects.toThrow(/identifier/);
  });

  describe("PGlite with a data directory", () => {
    const dir = mkdtempSync(join(tmpdir(), "kms-pglite-"));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it("keeps what was committed when the database is closed and opened again", async () => {
      const first = await openDatabase({ dataDir: dir });
      expect(first.engine).toBe("pglite");
      await migrateToLatest(first.db);
      await insertTenantIfAbsent(first.db, "durable", T0);
      await first.close();

      const second = await openDatabase({ dataDir: dir });
      try {
        expect(await migrateToLatest(second.db)).toEqual([]);
        expect(await findTenant(second.db, "durable")).toEqual({ tenant_id: "durable", create_time: T0 });
      } finally {
        await second.close();
      }
    });

    it("refuses queries once closed", async () => {
      const opened = await openDatabase({ dataDir: dir });
      await opened.close();
      await expect(findTenant(opened.db, "durable")).rejects.toThrow(/closed/);
    });
  });
});

import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engines } from "../../../test/support/databases.js";
import {
  findDekVersion,
  insertDekVersion,
  listDekVersions,
  listDekVersionsForKeys,
  loadDataKeyMaterial,
  updateDekVersion,
  updateDekVersionsWrapped,
} from "./dek-version.repository.js";
import {
  findKekVersion,
  insertKekVersion,
  listKekVersions,
  listKekVersionsForKeys,
  updateKekVersion,
} from "./kek-version.repository.js";
import { findKey, insertKey, listKeys, updateKey } from "./key.repository.js";
import type { OpenedDatabase } from "./open-database.js";
import { findTenant, insertTenantIfAbsent, tenantExists } from "./tenant.repository.js";
import {
  at,
  dekVersionRow,
  kekVersionRow,
  keyRow,
  material,
  seedKey,
  sqlState,
  T0,
} from "./testing/fixtures.js";
import { withTransaction } from "./with-transaction.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(engines)("repositories on $name", (engine) => {
  let opened: OpenedDatabase;
  beforeAll(async () => {
    opened = await engine.open();
  });
  afterAll(async () => {
    await opened?.close();
  });
  const db = () => opened.db;

  describe("types", () => {
    it("read bytea as Buffer, timestamptz as Date and int8 as number (bigint beyond 2^53) like the other engine", async () => {
      const { rows } = await sql<{ b: unknown; t: unknown; small: unknown; big: unknown; n: unknown }>`
        select ${material(5, 1)}::bytea as b, ${T0}::timestamptz as t,
               42::int8 as small, 9007199254740993::int8 as big, null::bytea as n`.execute(db());
      const row = rows[0]!;
      expect(Buffer.isBuffer(row.b)).toBe(true);
      expect(row.b).toEqual(material(5, 1));
      expect(row.t).toBeInstanceOf(Date);
      expect((row.t as Date).toISOString()).toBe(T0.toISOString());
      expect(row.small).toBe(42);
      expect(row.big).toBe(9007199254740993n);
      expect(row.n).toBeNull();
    });
  });

  describe("tenants", () => {
    it("insertTenantIfAbsent inserts once and then leaves the tenant as it was", async () => {
      expect(await tenantExists(db(), "tenant-a")).toBe(false);
      expect(await insertTenantIfAbsent(db(), "tenant-a", T0)).toBe(true);
      expect(await insertTenantIfAbsent(db(), "tenant-a", at(60))).toBe(false);
      expect(await tenantExists(db(), "tenant-a")).toBe(true);
      expect(await findTenant(db(), "tenant-a")).toEqual({ tenant_id: "tenant-a", create_time: T0 });
    });
  });

  describe("keys", () => {
    it("round-trip every column: bytea, dates with milliseconds, nulls, defaults", async () => {
      const row = keyRow("rt", "key-1", { kek_algorithm: "RSA_4096", protection: "CUSTOMER_MANAGED", update_time: at(1.5) });
      await insertTenantIfAbsent(db(), "rt", T0);
      expect(await insertKey(db(), row)).toBe("inserted");
      const read = await findKey(db(), "rt", "key-1");
      expect(read).toEqual({ ...row, key_uid: Buffer.from(row.key_uid) });
      expect(Buffer.isBuffer(read!.key_uid)).toBe(true);
      expect(read!.revoke_time).toBeNull();
      expect(read!.update_time.getTime()).toBe(T0.getTime() + 1500);

      const { description: _omitted, ...withoutDescription } = keyRow("rt", "key-2");
      await insertKey(db(), withoutDescription);
      expect((await findKey(db(), "rt", "key-2"))!.description).toBe("");
    });

    it("updateKey applies a patch and returns the new row; undefined for an unknown key", async () => {
      await seedKey(db(), "upd", "k");
      const updated = await updateKey(db(), "upd", "k", { state: "REVOKED", revoke_time: at(10), update_time: at(10) });
      expect(updated).toMatchObject({ state: "REVOKED", revoke_time: at(10), update_time: at(10), description: "key k" });
      expect(await findKey(db(), "upd", "k")).toEqual(updated);
      expect(await updateKey(db(), "upd", "nope", { description: "x" })).toBeUndefined();
      expect(await findKey(db(), "upd", "nope")).toBeUndefined();
    });

    it("insertKey reports a duplicate key_id as already-exists and leaves the transaction usable", async () => {
      await withTransaction(db(), async (trx) => {
        await insertTenantIfAbsent(trx, "dup", T0);
        expect(await insertKey(trx, keyRow("dup", "k1"))).toBe("inserted");
        expect(await insertKey(trx, keyRow("dup", "k1", { description: "second" }))).toBe("already-exists");
        // Still usable: these would fail with 25P02 in an aborted transaction.
        await insertKekVersion(trx, kekVersionRow("dup", "k1", 1));
        expect(await insertKey(trx, keyRow("dup", "k2"))).toBe("inserted");
      });
      expect((await findKey(db(), "dup", "k1"))!.description).toBe("key k1");
      expect(await findKey(db(), "dup", "k2")).toBeDefined();
      expect(await listKekVersions(db(), "dup", "k1")).toHaveLength(1);
      // The same key_id under another tenant is a different key.
      await insertTenantIfAbsent(db(), "dup-other", T0);
      expect(await insertKey(db(), keyRow("dup-other", "k1"))).toBe("inserted");
    });

    it("insertKey does not hide a key_uid collision: it fails with 23505", async () => {
      const uid = randomBytes(16);
      await seedKey(db(), "uid", "a", { key_uid: uid });
      const error = await insertKey(db(), keyRow("uid", "b", { key_uid: uid })).catch((e: unknown) => e);
      expect(sqlState(error)).toBe("23505");
    });
  });

  describe("listKeys", () => {
    const ids = ["b-2", "A-1", "a-1", "c_3", "B-2", "0-zero", "z", "Z", "m-9", "m-10"];
    const revoked = new Set(["A-1", "c_3", "m-10", "z"]);
    const byteOrder = [...ids].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));

    beforeAll(async () => {
      for (const id of ids) {
        await seedKey(db(), "pages", id, revoked.has(id) ? { state: "REVOKED", revoke_time: T0 } : {});
      }
      await seedKey(db(), "pages-other", "A-0");
    });

    async function allPages(pageSize: number, state?: "ENABLED" | "REVOKED"): Promise<string[][]> {
      const pages: string[][] = [];
      let afterKeyId: string | undefined;
      for (;;) {
        const rows = await listKeys(db(), "pages", { limit: pageSize, state, afterKeyId });
        if (rows.length === 0) break;
        pages.push(rows.map((row) => row.key_id));
        afterKeyId = rows[rows.length - 1]!.key_id;
      }
      return pages;
    }

    it("orders a tenant's keys by key_id in byte order, whatever the locale", async () => {
      const rows = await listKeys(db(), "pages", { limit: 100 });
      expect(rows.map((row) => row.key_id)).toEqual(byteOrder);
    });

    it("pages through every key exactly once with afterKeyId", async () => {
      const pages = await allPages(3);
      expect(pages.map((page) => page.length)).toEqual([3, 3, 3, 1]);
      expect(pages.flat()).toEqual(byteOrder);
    });

    it("filters by state, also across pages", async () => {
      const expected = byteOrder.filter((id) => revoked.has(id));
      expect((await allPages(100, "REVOKED")).flat()).toEqual(expected);
      expect((await allPages(1, "REVOKED")).flat()).toEqual(expected);
      expect((await allPages(2, "ENABLED")).flat()).toEqual(byteOrder.filter((id) => !revoked.has(id)));
    });

    it("refuses a limit below one", async () => {
      await expect(listKeys(db(), "pages", { limit: 0 })).rejects.toThrow(RangeError);
    });
  });

  describe("KEK versions", () => {
    it("round-trip wrapped material, a public key and nulls; list in version order", async () => {
      await seedKey(db(), "kek", "k", { kek_algorithm: "RSA_4096" });
      const v3 = kekVersionRow("kek", "k", 3, { state: "RETIRING", public_key: material(550, 3), create_time: at(3) });
      const v2 = kekVersionRow("kek", "k", 2, { state: "RETIRING", wrapped_material: null, create_time: at(2) });
      await insertKekVersion(db(), v3);
      await insertKekVersion(db(), v2);
      expect(await findKekVersion(db(), "kek", "k", 3)).toEqual({
        ...v3,
        wrapped_material: Buffer.from(v3.wrapped_material!),
        public_key: Buffer.from(v3.public_key!),
      });
      expect((await findKekVersion(db(), "kek", "k", 2))!.wrapped_material).toBeNull();
      expect((await listKekVersions(db(), "kek", "k")).map((row) => row.version)).toEqual([1, 2, 3]);
      expect(await findKekVersion(db(), "kek", "k", 9)).toBeUndefined();
    });

    it("updateKekVersion destroys a version: state, erased material, destroy time", async () => {
      await seedKey(db(), "kek-destroy", "k");
      const destroyed = await updateKekVersion(db(), "kek-destroy", "k", 1, {
        state: "DESTROYED",
        wrapped_material: null,
        destroy_time: at(5),
      });
      expect(destroyed).toMatchObject({ state: "DESTROYED", wrapped_material: null, destroy_time: at(5) });
      expect(await updateKekVersion(db(), "kek-destroy", "k", 2, { state: "RETIRING" })).toBeUndefined();
    });

    it("listKekVersionsForKeys returns the versions of exactly the keys asked for, in one query", async () => {
      for (const id of ["x", "y", "z"]) await seedKey(db(), "kek-many", id);
      await insertKekVersion(db(), kekVersionRow("kek-many", "y", 2, { state: "RETIRING" }));
      await seedKey(db(), "kek-many-other", "x");
      const rows = await listKekVersionsForKeys(db(), "kek-many", ["y", "x", "missing"]);
      expect(rows.map((row) => [row.tenant_id, row.key_id, row.version])).toEqual([
        ["kek-many", "x", 1],
        ["kek-many", "y", 1],
        ["kek-many", "y", 2],
      ]);
      expect(await listKekVersionsForKeys(db(), "kek-many", [])).toEqual([]);
    });
  });

  describe("DEK versions", () => {
    it("round-trip, list in version order, update one version", async () => {
      await seedKey(db(), "dek", "k");
      await updateDekVersion(db(), "dek", "k", 1, { state: "DECRYPT_ONLY", rotate_time: at(30) });
      const v2 = dekVersionRow("dek", "k", 2, { create_time: at(30) });
      await insertDekVersion(db(), v2);
      expect(await findDekVersion(db(), "dek", "k", 2)).toEqual({ ...v2, wrapped_material: Buffer.from(v2.wrapped_material!) });
      const list = await listDekVersions(db(), "dek", "k");
      expect(list.map((row) => [row.version, row.state, row.rotate_time])).toEqual([
        [1, "DECRYPT_ONLY", at(30)],
        [2, "PRIMARY", null],
      ]);
      expect(await findDekVersion(db(), "dek", "k", 3)).toBeUndefined();
    });

    it("updateDekVersionsWrapped re-wraps several versions in one statement and never revives a purged one", async () => {
      await seedKey(db(), "rewrap", "k");
      await insertKekVersion(db(), kekVersionRow("rewrap", "k", 2, { state: "RETIRING" }));
      await updateDekVersion(db(), "rewrap", "k", 1, { state: "DECRYPT_ONLY" });
      await insertDekVersion(db(), dekVersionRow("rewrap", "k", 2, { state: "PURGED", wrapped_material: null }));
      await insertDekVersion(db(), dekVersionRow("rewrap", "k", 3));
      const changed = await updateDekVersionsWrapped(db(), "rewrap", "k", [
        { version: 1, kekVersion: 2, wrappedMaterial: material(60, 901) },
        { version: 2, kekVersion: 2, wrappedMaterial: material(60, 902) },
        { version: 3, kekVersion: 2, wrappedMaterial: material(60, 903) },
      ]);
      expect(changed).toBe(2);
      const rows = await listDekVersions(db(), "rewrap", "k");
      expect(rows.map((row) => [row.version, row.kek_version, row.wrapped_material])).toEqual([
        [1, 2, material(60, 901)],
        [2, 1, null],
        [3, 2, material(60, 903)],
      ]);
      expect(await updateDekVersionsWrapped(db(), "rewrap", "k", [])).toBe(0);
    });

    it("listDekVersionsForKeys returns the versions of exactly the keys asked for", async () => {
      for (const id of ["p", "q"]) await seedKey(db(), "dek-many", id);
      await updateDekVersion(db(), "dek-many", "q", 1, { state: "DECRYPT_ONLY" });
      await insertDekVersion(db(), dekVersionRow("dek-many", "q", 2));
      const rows = await listDekVersionsForKeys(db(), "dek-many", ["q", "p"]);
      expect(rows.map((row) => [row.key_id, row.version])).toEqual([
        ["p", 1],
        ["q", 1],
        ["q", 2],
      ]);
      expect(await listDekVersionsForKeys(db(), "dek-many", [])).toEqual([]);
    });
  });

  describe("loadDataKeyMaterial", () => {
    beforeAll(async () => {
      // Key "hot": KEK v1 destroyed after a KEK rotation, v2 primary (RSA, with public key);
      // DEK v1 re-wrapped under KEK v2, DEK v2 primary under KEK v2, DEK v3 purged.
      const key = await seedKey(db(), "hot", "k", { kek_algorithm: "RSA_4096", primary_dek_version: 2, primary_kek_version: 2 });
      await updateKekVersion(db(), "hot", "k", 1, { state: "DESTROYED", wrapped_material: null, destroy_time: at(1) });
      await insertKekVersion(db(), kekVersionRow("hot", "k", 2, { public_key: material(550, 2), root_key_id: "local-2" }));
      await updateDekVersion(db(), "hot", "k", 1, { state: "DECRYPT_ONLY", kek_version: 2, wrapped_material: material(60, 71) });
      await insertDekVersion(db(), dekVersionRow("hot", "k", 2, { kek_version: 2 }));
      await insertDekVersion(db(), dekVersionRow("hot", "k", 3, { state: "PURGED", kek_version: 1, wrapped_material: null }));
      expect(key.key_uid).toHaveLength(16);
    });

    it("loads the primary DEK version with its KEK in one query", async () => {
      const key = (await findKey(db(), "hot", "k"))!;
      expect(await loadDataKeyMaterial(db(), "hot", "k", "primary")).toEqual({
        keyUid: key.key_uid,
        keyState: "ENABLED",
        kekAlgorithm: "RSA_4096",
        dekVersion: 2,
        dekState: "PRIMARY",
        wrappedDek: material(60, 102),
        lastDecryptTime: null,
        kekVersion: 2,
        kekState: "PRIMARY",
        wrappedKek: material(40, 2),
        kekPublicKey: material(550, 2),
        rootProvider: "local",
        rootKeyId: "local-2",
      });
    });

    it("loads an explicit DEK version with the KEK version that wraps it", async () => {
      expect(await loadDataKeyMaterial(db(), "hot", "k", 1)).toMatchObject({
        dekVersion: 1,
        dekState: "DECRYPT_ONLY",
        wrappedDek: material(60, 71),
        kekVersion: 2,
      });
    });

    it("returns null material for a purged DEK version and a destroyed KEK version", async () => {
      expect(await loadDataKeyMaterial(db(), "hot", "k", 3)).toMatchObject({
        dekVersion: 3,
        dekState: "PURGED",
        wrappedDek: null,
        kekVersion: 1,
        kekState: "DESTROYED",
        wrappedKek: null,
        kekPublicKey: null,
      });
    });

    it("returns undefined for an unknown DEK version, key or tenant", async () => {
      expect(await loadDataKeyMaterial(db(), "hot", "k", 4)).toBeUndefined();
      expect(await loadDataKeyMaterial(db(), "hot", "nope", "primary")).toBeUndefined();
      expect(await loadDataKeyMaterial(db(), "nope", "k", 1)).toBeUndefined();
    });
  });

  describe("findKey forUpdate", () => {
    it("holds the row: a second locker waits until the first commits, then sees its change", async () => {
      await seedKey(db(), "lock", "k");
      let firstHasLock!: () => void;
      const locked = new Promise<void>((resolve) => (firstHasLock = resolve));
      const events: string[] = [];

      const first = withTransaction(db(), async (trx) => {
        await findKey(trx, "lock", "k", { forUpdate: true });
        firstHasLock();
        await sleep(150);
        await updateKey(trx, "lock", "k", { description: "by first" });
        events.push("first commits");
      });
      await locked;
      const second = withTransaction(db(), async (trx) => {
        const row = await findKey(trx, "lock", "k", { forUpdate: true });
        events.push(`second reads "${row!.description}"`);
      });
      await Promise.all([first, second]);
      expect(events).toEqual(["first commits", 'second reads "by first"']);
    });

    it("without forUpdate a reader does not wait (PostgreSQL) or still runs after the writer (PGlite)", async () => {
      await seedKey(db(), "nolock", "k");
      let firstHasLock!: () => void;
      const locked = new Promise<void>((resolve) => (firstHasLock = resolve));
      const first = withTransaction(db(), async (trx) => {
        await findKey(trx, "nolock", "k", { forUpdate: true });
        firstHasLock();
        await sleep(150);
        await updateKey(trx, "nolock", "k", { description: "by first" });
      });
      await locked;
      const plain = await findKey(db(), "nolock", "k");
      await first;
      // PostgreSQL reads the committed row at once; PGlite's single session
      // serializes the read behind the whole transaction.
      expect(plain!.description).toBe(engine.name === "postgres" ? "key k" : "by first");
    });
  });

  describe("withTransaction", () => {
    it("commits on success and rolls back on throw", async () => {
      await withTransaction(db(), (trx) => insertTenantIfAbsent(trx, "wt-commit", T0));
      await expect(
        withTransaction(db(), async (trx) => {
          await insertTenantIfAbsent(trx, "wt-rollback", T0);
          throw new Error("abandon");
        }),
      ).rejects.toThrow("abandon");
      expect(await tenantExists(db(), "wt-commit")).toBe(true);
      expect(await tenantExists(db(), "wt-rollback")).toBe(false);
    });

    it("joins an enclosing transaction instead of opening another", async () => {
      await expect(
        withTransaction(db(), async (outer) => {
          await withTransaction(outer, (inner) => insertTenantIfAbsent(inner, "wt-joined", T0));
          expect(await tenantExists(outer, "wt-joined")).toBe(true);
          throw new Error("roll back the outer one");
        }),
      ).rejects.toThrow("roll back");
      expect(await tenantExists(db(), "wt-joined")).toBe(false);
    });
  });

  describe("schema constraints", () => {
    it("refuse a state outside the allowed values (CHECK, 23514)", async () => {
      await insertTenantIfAbsent(db(), "chk", T0);
      const error = await insertKey(db(), keyRow("chk", "k", { state: "LOST" as never })).catch((e: unknown) => e);
      expect(sqlState(error)).toBe("23514");
      await seedKey(db(), "chk", "k2");
      const badDek = await updateDekVersion(db(), "chk", "k2", 1, { state: "GONE" as never }).catch((e: unknown) => e);
      expect(sqlState(badDek)).toBe("23514");
    });

    it("refuse a destroyed KEK version that keeps material", async () => {
      await seedKey(db(), "shred", "k");
      const error = await updateKekVersion(db(), "shred", "k", 1, { state: "DESTROYED", destroy_time: at(1) }).catch(
        (e: unknown) => e,
      );
      expect(sqlState(error)).toBe("23514");
    });

    it("refuse a DEK version under a KEK version that does not exist (23503)", async () => {
      await seedKey(db(), "fk", "k");
      const error = await insertDekVersion(db(), dekVersionRow("fk", "k", 2, { state: "DECRYPT_ONLY", kek_version: 7 })).catch(
        (e: unknown) => e,
      );
      expect(sqlState(error)).toBe("23503");
    });

    it("allow two primary versions inside a transaction but not at its commit", async () => {
      await seedKey(db(), "primary", "k");
      // A rotation may insert the new primary before retiring the old one.
      await withTransaction(db(), async (trx) => {
        await insertKekVersion(trx, kekVersionRow("primary", "k", 2));
        await updateKekVersion(trx, "primary", "k", 1, { state: "RETIRING" });
        await insertDekVersion(trx, dekVersionRow("primary", "k", 2, { kek_version: 2 }));
        await updateDekVersion(trx, "primary", "k", 1, { state: "DECRYPT_ONLY" });
      });
      const error = await withTransaction(db(), async (trx) => {
        await insertDekVersion(trx, dekVersionRow("primary", "k", 3, { kek_version: 2 }));
      }).catch((e: unknown) => e);
      expect(sqlState(error)).toBe("23P01");
      expect(await findDekVersion(db(), "primary", "k", 3)).toBeUndefined();
    });
  });
});

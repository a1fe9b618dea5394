/**
 * The hot path keeps its read (server/src/storage/data-key-material-reader.ts):
 * on PGlite while nothing is written; on PostgreSQL while the tenant's
 * hot-path generation has not moved — read by every call through a prepared
 * statement, or, with a hot-path lease, learnt from the notification every
 * commit sends (the writer answers only once each leased replica applied it).
 * What must hold on both engines: every write through the service is seen by
 * the very next call — on PostgreSQL also on another replica; a write by hand
 * once the operator's `call hot_path_await_replicas()` returned (or at once,
 * without leases).
 */
import { Code } from "@connectrpc/connect";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readDataKeyMaterial } from "../server/src/storage/data-key-material-reader.js";
import { loadDataKeyMaterial } from "../server/src/storage/dek-version.repository.js";
import { engineActivityOf } from "../server/src/storage/engine-activity.js";
import { hotPathLeaseOf } from "../server/src/storage/hot-path-lease.js";
import { preparedStatementRunnerOf, registerPreparedStatementRunner } from "../server/src/storage/prepared-statements.js";
import { KekAlgorithm } from "../gen/matih/kms/v1/resources_pb.js";
import { decryptDataKey, serveDecrypt } from "../server/src/service/decrypt-data-key.js";
import { generateDataKey, serveGenerateDataKey } from "../server/src/service/generate-data-key.js";
import type { KmsContext } from "../server/src/service/kms-context.js";
import { openDatabase, type OpenedDatabase } from "../server/src/storage/open-database.js";
import { engines, postgresTestUrl } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";

/** PostgreSQL twice: with every call checking the tenant's generation, and with a hot-path lease. */
const variants = engines.flatMap((engine) =>
  engine.name === "postgres"
    ? [
        { name: "postgres", engine, leased: false },
        { name: "postgres with a hot-path lease", engine, leased: true },
      ]
    : [{ name: engine.name, engine, leased: false }],
);
const LEASE_MS = 2_000;

describe.each(variants)("the hot path's material read on $name", ({ engine, leased }) => {
  let kms: TestKms;
  beforeAll(async () => {
    kms = await createTestKms(engine);
    if (leased) await kms.database.startHotPathLease!({ leaseMs: LEASE_MS });
  });
  afterAll(async () => {
    await kms?.close();
  });

  const activity = () => engineActivityOf(kms.context.db);

  it("is proven current by the engine's write generation on PGlite, by the tenant's generation on PostgreSQL", () => {
    if (engine.name === "pglite") expect(activity()).toBeDefined();
    else expect(activity()).toBeUndefined();
    if (engine.name === "postgres") expect(preparedStatementRunnerOf(kms.context.db)).toBeDefined();
    expect(hotPathLeaseOf(kms.context.db)?.trusted() ?? false).toBe(leased);
  });

  it("serves a repeated read from the row it kept, and a Decrypt's recorded use makes the next read fetch it again", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "warm-keep";
    await keys.createKey({ tenantId, keyId: "k" });
    const db = kms.context.db;
    const first = await readDataKeyMaterial(db, tenantId, "k", 1);
    expect(await readDataKeyMaterial(db, tenantId, "k", 1)).toBe(first);
    const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    // The first Decrypt of the version is recorded before it answers: a write to the tenant's rows.
    await dataKeys.decrypt({ tenantId, keyId: "k", reference });
    // That write does not wait for replicas (it makes nothing less usable): wait for its notification here.
    if (leased) await sql`call hot_path_await_replicas()`.execute(db);
    const after = await readDataKeyMaterial(db, tenantId, "k", 1);
    expect(after).not.toBe(first);
    expect(after?.lastDecryptTime).toEqual(kms.clock.now());
    expect(await readDataKeyMaterial(db, tenantId, "k", 1)).toBe(after);
  });

  it("hands out copies of the DEK kept with its cached KEK: wiping an answer never changes the next, for AES and RSA KEKs", async () => {
    const { keys } = kms.clients();
    const tenantId = "kept-dek";
    await keys.createKey({ tenantId, keyId: "aes" });
    await keys.createKey({ tenantId, keyId: "rsa", kekAlgorithm: KekAlgorithm.RSA_4096 });
    for (const keyId of ["aes", "rsa"]) {
      const first = await generateDataKey(kms.context, { tenantId, keyId });
      const expected = Buffer.from(first.plaintext);
      first.plaintext.fill(0);
      const row = (await readDataKeyMaterial(kms.context.db, tenantId, keyId, "primary"))!;
      const kept = kms.context.kekCache.dataKey({ tenantId, keyId, keyUid: row.keyUid, kekVersion: row.kekVersion }, 1, row.wrappedDek!);
      expect(kept, keyId).toEqual(expected);
      const second = await generateDataKey(kms.context, { tenantId, keyId });
      expect(second.plaintext, keyId).toEqual(expected);
      expect(second.plaintext).not.toBe(kept);
      second.plaintext.fill(0);
      const decrypted = await decryptDataKey(kms.context, { tenantId, keyId, reference: first.reference });
      expect(decrypted.plaintext, keyId).toEqual(expected);
      decrypted.plaintext.fill(0);
      expect((await decryptDataKey(kms.context, { tenantId, keyId, reference: first.reference })).plaintext, keyId).toEqual(expected);
      // A revocation wipes what was kept, and the next call is refused before anything kept is consulted.
      await keys.revokeKey({ tenantId, keyId });
      expect(kept!.every((byte) => byte === 0), keyId).toBe(true);
      await expect(generateDataKey(kms.context, { tenantId, keyId })).rejects.toMatchObject({ reason: "KEY_REVOKED" });
    }
  });

  it("a revocation is refused on the very next call, however warm the hot path is", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "warm-revoke";
    await keys.createKey({ tenantId, keyId: "k" });
    const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    for (let i = 0; i < 5; i++) {
      await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
    }
    await keys.revokeKey({ tenantId, keyId: "k" });
    await expectRefusal(dataKeys.generateDataKey({ tenantId, keyId: "k" }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
    await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
  });

  it("answers a warm call from memory without a promise where no statement is needed, and a write sends the next call to the database", async () => {
    const { keys } = kms.clients();
    const tenantId = "from-memory";
    await keys.createKey({ tenantId, keyId: "k" });
    const warm = await generateDataKey(kms.context, { tenantId, keyId: "k" });
    // The version's first Decrypt is recorded before it answers (a write, so the row is read again after it).
    await decryptDataKey(kms.context, { tenantId, keyId: "k", reference: warm.reference });
    if (leased) await sql`call hot_path_await_replicas()`.execute(kms.context.db);
    await decryptDataKey(kms.context, { tenantId, keyId: "k", reference: warm.reference });
    await generateDataKey(kms.context, { tenantId, keyId: "k" });
    // PostgreSQL without a lease checks the tenant's generation on every call: always a promise.
    const fromMemory = engine.name === "pglite" || leased;
    const generated = serveGenerateDataKey(kms.context, { tenantId, keyId: "k" });
    const decrypted = serveDecrypt(kms.context, { tenantId, keyId: "k", reference: warm.reference });
    expect(generated instanceof Promise).toBe(!fromMemory);
    expect(decrypted instanceof Promise).toBe(!fromMemory);
    expect((await generated).plaintext).toEqual(warm.plaintext);
    expect((await generated).reference).toEqual(warm.reference);
    expect((await decrypted).plaintext).toEqual(warm.plaintext);

    await keys.rotateKey({ tenantId, keyId: "k" });
    const afterRotation = serveGenerateDataKey(kms.context, { tenantId, keyId: "k" });
    expect(afterRotation).toBeInstanceOf(Promise);
    expect((await afterRotation).dekVersion).toBe(2);
    expect(serveGenerateDataKey(kms.context, { tenantId, keyId: "k" }) instanceof Promise).toBe(!fromMemory);

    await keys.revokeKey({ tenantId, keyId: "k" });
    const afterRevocation = serveDecrypt(kms.context, { tenantId, keyId: "k", reference: warm.reference });
    expect(afterRevocation).toBeInstanceOf(Promise);
    await expect(afterRevocation).rejects.toMatchObject({ reason: "KEY_REVOKED" });
  });

  it("refuses bad input at once on the hot path, and as a rejected promise to promise callers", async () => {
    expect(() => serveGenerateDataKey(kms.context, { tenantId: "bad id", keyId: "k" })).toThrow(expect.objectContaining({ reason: "INVALID_FIELD" }));
    expect(() => serveDecrypt(kms.context, { tenantId: "t", keyId: "k", reference: new Uint8Array() })).toThrow(
      expect.objectContaining({ reason: "INVALID_FIELD", field: "reference" }),
    );
    await expect(generateDataKey(kms.context, { tenantId: "bad id", keyId: "k" })).rejects.toMatchObject({ reason: "INVALID_FIELD", field: "tenant_id" });
    await expect(decryptDataKey(kms.context, { tenantId: "t", keyId: "k", reference: new Uint8Array() })).rejects.toMatchObject({
      reason: "INVALID_FIELD",
      field: "reference",
    });
  });

  it("a rotation moves GenerateDataKey to the new primary on the very next call", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "warm-rotate";
    await keys.createKey({ tenantId, keyId: "k" });
    expect((await dataKeys.generateDataKey({ tenantId, keyId: "k" })).dekVersion).toBe(1);
    expect((await dataKeys.generateDataKey({ tenantId, keyId: "k" })).dekVersion).toBe(1);
    await keys.rotateKey({ tenantId, keyId: "k" });
    expect((await dataKeys.generateDataKey({ tenantId, keyId: "k" })).dekVersion).toBe(2);
  });

  it("concurrent reads of many keys and versions, present and missing, each get exactly their own row", async () => {
    const { keys } = kms.clients();
    const tenantId = "many-reads";
    for (const keyId of ["a", "b", "c"]) await keys.createKey({ tenantId, keyId });
    await keys.rotateKey({ tenantId, keyId: "b" });
    await keys.revokeKey({ tenantId, keyId: "c" });
    const asks: Array<[string, string, number | "primary"]> = [];
    for (let round = 0; round < 20; round++) {
      for (const keyId of ["a", "b", "c", "missing"]) asks.push([tenantId, keyId, "primary"], [tenantId, keyId, 1], [tenantId, keyId, 2]);
      asks.push(["other-tenant", "a", "primary"]);
    }
    const db = kms.context.db;
    const expected = await Promise.all(asks.map(([t, k, v]) => loadDataKeyMaterial(db, t, k, v)));
    const got = await Promise.all(asks.map(([t, k, v]) => readDataKeyMaterial(db, t, k, v)));
    expect(got).toEqual(expected);
    // Per round: a primary and 1, b primary, 1 and 2, c (revoked: still read) primary and 1.
    expect(got.filter((row) => row !== undefined).length).toBe(20 * 7);
  });

  it("a version beyond any stored one is simply not found, and the reads sharing its statement are served", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "huge-version";
    await keys.createKey({ tenantId, keyId: "k" });
    const db = kms.context.db;
    const [huge, valid, uint32Max, primary] = await Promise.all([
      readDataKeyMaterial(db, tenantId, "k", 2 ** 31),
      readDataKeyMaterial(db, tenantId, "k", 1),
      readDataKeyMaterial(db, tenantId, "k", 0xffff_ffff),
      readDataKeyMaterial(db, tenantId, "k", "primary"),
    ]);
    expect(huge).toBeUndefined();
    expect(uint32Max).toBeUndefined();
    expect(valid).toMatchObject({ dekVersion: 1 });
    expect(primary).toMatchObject({ dekVersion: 1 });
    // Over the API: a reference naming such a version is DEK_VERSION_NOT_FOUND (its tag is never reached).
    const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    const forged = Buffer.from(reference);
    forged.writeUInt32BE(0xffff_ffff, 1 + 16);
    await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference: forged }), { code: Code.NotFound, reason: "DEK_VERSION_NOT_FOUND" });
  });

  it("a remembered reference never lets a tampered one through: every byte flipped is refused, the original still served", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "warm-tamper";
    await keys.createKey({ tenantId, keyId: "k" });
    const first = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    const second = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    expect(Buffer.from(second.reference)).toEqual(Buffer.from(first.reference));
    await dataKeys.decrypt({ tenantId, keyId: "k", reference: first.reference });
    const tagStart = first.reference.byteLength - 16;
    for (let at = tagStart; at < first.reference.byteLength; at++) {
      const tampered = Buffer.from(first.reference);
      tampered[at]! ^= 0x01;
      await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference: tampered }), {
        code: Code.InvalidArgument,
        reason: "REFERENCE_TAMPERED",
      });
    }
    const again = await dataKeys.decrypt({ tenantId, keyId: "k", reference: first.reference });
    expect(Buffer.from(again.plaintext)).toEqual(Buffer.from(first.plaintext));
  });

  it("on PGlite a repeated read runs no statement, and any write makes the next read run one", async (ctx) => {
    const counters = activity();
    if (counters === undefined) return ctx.skip();
    const { keys } = kms.clients();
    const tenantId = "warm-count";
    await keys.createKey({ tenantId, keyId: "k" });
    const first = await readDataKeyMaterial(kms.context.db, tenantId, "k", "primary");
    const reads = counters.reads;
    const again = await readDataKeyMaterial(kms.context.db, tenantId, "k", "primary");
    expect(counters.reads).toBe(reads);
    expect(again).toEqual(first);

    // A write to another tenant's key: the cache cannot tell what a write touched, so it drops everything.
    await keys.createKey({ tenantId: "warm-count-other", keyId: "k" });
    const readsBefore = counters.reads;
    await readDataKeyMaterial(kms.context.db, tenantId, "k", "primary");
    expect(counters.reads).toBe(readsBefore + 1);
  });

  it("on PostgreSQL a write to another tenant leaves this tenant's kept rows in place", async (ctx) => {
    if (engine.name !== "postgres") return ctx.skip();
    const { keys } = kms.clients();
    const tenantId = "warm-tenant-scope";
    await keys.createKey({ tenantId, keyId: "k" });
    const db = kms.context.db;
    const first = await readDataKeyMaterial(db, tenantId, "k", "primary");
    await keys.createKey({ tenantId: "warm-tenant-scope-other", keyId: "k" });
    await keys.rotateKey({ tenantId: "warm-tenant-scope-other", keyId: "k" });
    expect(await readDataKeyMaterial(db, tenantId, "k", "primary")).toBe(first);
  });

  it("reads exactly what the kysely query reads, for the primary version, a numbered one and a missing one", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "same-rows";
    await keys.createKey({ tenantId, keyId: "k" });
    await keys.rotateKey({ tenantId, keyId: "k", rotateKek: true });
    const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    await dataKeys.decrypt({ tenantId, keyId: "k", reference });
    const db = kms.context.db;
    // The Decrypt's recorded use does not wait for replicas: wait for its notification here.
    if (leased) await sql`call hot_path_await_replicas()`.execute(db);
    if (engine.name === "postgres") expect(preparedStatementRunnerOf(db)).toBeDefined();
    for (const version of ["primary", 1, 2, 3] as const) {
      const expected = await loadDataKeyMaterial(db, tenantId, "k", version);
      expect(await readDataKeyMaterial(db, tenantId, "k", version), String(version)).toEqual(expected);
      expect(await readDataKeyMaterial(db, tenantId, "k", version), String(version)).toEqual(expected);
    }
    expect(await loadDataKeyMaterial(db, tenantId, "k", 2)).toMatchObject({ dekVersion: 2, kekVersion: 2, lastDecryptTime: expect.any(Date) });
    expect(await readDataKeyMaterial(db, tenantId, "k", 3)).toBeUndefined();
    expect(await readDataKeyMaterial(db, "nobody", "k", "primary")).toBeUndefined();
  });

  it("every read asked for after a revocation commits sees it, even with a read in flight across the commit", async () => {
    const { keys } = kms.clients();
    const tenantId = "warm-race";
    await keys.createKey({ tenantId, keyId: "k" });
    const db = kms.context.db;
    expect(await readDataKeyMaterial(db, tenantId, "k", "primary")).toMatchObject({ keyState: "ENABLED" });
    let racing: Promise<unknown> | undefined;
    await db.transaction().execute(async (tx) => {
      // Starts now, while the transaction holds the session (PGlite) or before its commit (PostgreSQL).
      racing = readDataKeyMaterial(db, tenantId, "k", "primary");
      await tx.updateTable("keys").set({ state: "REVOKED", revoke_time: new Date() }).where("tenant_id", "=", tenantId).execute();
    });
    // Asked before the write was made, it may answer either state (a call that arrived before the revocation).
    expect(["ENABLED", "REVOKED"]).toContain(((await racing) as { keyState: string }).keyState);
    for (let i = 0; i < 3; i++) expect(await readDataKeyMaterial(db, tenantId, "k", "primary")).toMatchObject({ keyState: "REVOKED" });
  });
});

// A second replica: another pool on the same PostgreSQL schema, with its own kept rows. PGlite is one process's.
const postgres = engines.find((engine) => engine.name === "postgres");
describe.skipIf(postgres === undefined).each([
  { name: "checking every call", leased: false },
  { name: "holding hot-path leases", leased: true },
])("the hot path's kept rows across PostgreSQL replicas $name", ({ leased }) => {
  let kms: TestKms;
  let replica: OpenedDatabase;
  let operator: pg.Client;
  let replicaStatements = 0;
  beforeAll(async () => {
    kms = await createTestKms(postgres!);
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(kms.context.db);
    replica = await openDatabase({ databaseUrl: postgresTestUrl, schema: rows[0]!.schema, poolSize: 2 });
    const run = preparedStatementRunnerOf(replica.db)!;
    registerPreparedStatementRunner(replica.db, (name, text, values) => {
      replicaStatements += 1;
      return run(name, text, values);
    });
    if (leased) {
      await kms.database.startHotPathLease!({ leaseMs: LEASE_MS });
      await replica.startHotPathLease!({ leaseMs: LEASE_MS });
    }
    operator = new pg.Client({ connectionString: postgresTestUrl });
    await operator.connect();
    await operator.query(`set search_path to "${rows[0]!.schema}"`);
  });
  afterAll(async () => {
    await operator?.end();
    await replica?.close();
    await kms?.close();
  });
  /** The same service on the second replica's database (sharing the root provider and KEK cache is harmless here). */
  const onReplica = (): KmsContext => ({ ...kms.context, db: replica.db });
  /** What an operator runs after changing key rows by hand, so that every replica has let go of the old rows. */
  const operatorWaitsForReplicas = async (): Promise<void> => {
    await operator.query("call hot_path_await_replicas()");
  };

  async function warmKeyOnReplica(tenantId: string): Promise<{ reference: Uint8Array; kept: object | undefined }> {
    const { keys, dataKeys } = kms.clients();
    await keys.createKey({ tenantId, keyId: "k" });
    const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    await decryptDataKey(onReplica(), { tenantId, keyId: "k", reference });
    // The Decrypt's recorded use does not wait for replicas; its notification may still be on its way.
    if (leased) await operatorWaitsForReplicas();
    await generateDataKey(onReplica(), { tenantId, keyId: "k" });
    const kept = await readDataKeyMaterial(replica.db, tenantId, "k", 1);
    expect(await readDataKeyMaterial(replica.db, tenantId, "k", 1)).toBe(kept);
    return { reference, kept };
  }

  it("a kept row costs one statement per call when checking, none with a lease", async () => {
    const { reference } = await warmKeyOnReplica("replica-count");
    const before = replicaStatements;
    for (let i = 0; i < 5; i++) {
      await decryptDataKey(onReplica(), { tenantId: "replica-count", keyId: "k", reference });
      await generateDataKey(onReplica(), { tenantId: "replica-count", keyId: "k" });
    }
    expect(replicaStatements - before).toBe(leased ? 0 : 10);
  });

  it("a revocation through one replica is refused on the very next call to the other, which had the row kept", async () => {
    const tenantId = "replica-revoke";
    const { reference } = await warmKeyOnReplica(tenantId);
    await kms.clients().keys.revokeKey({ tenantId, keyId: "k" });
    await expect(decryptDataKey(onReplica(), { tenantId, keyId: "k", reference })).rejects.toMatchObject({ reason: "KEY_REVOKED" });
    await expect(generateDataKey(onReplica(), { tenantId, keyId: "k" })).rejects.toMatchObject({ reason: "KEY_REVOKED" });
  });

  it("a rotation through one replica moves GenerateDataKey on the other on its very next call", async () => {
    const tenantId = "replica-rotate";
    await warmKeyOnReplica(tenantId);
    expect((await generateDataKey(onReplica(), { tenantId, keyId: "k" })).dekVersion).toBe(1);
    await kms.clients().keys.rotateKey({ tenantId, keyId: "k" });
    expect((await generateDataKey(onReplica(), { tenantId, keyId: "k" })).dekVersion).toBe(2);
  });

  it("an operator's UPDATE by hand, outside any replica, is seen by the very next call once the operator waited for replicas", async () => {
    const tenantId = "replica-by-hand";
    const { reference } = await warmKeyOnReplica(tenantId);
    await operator.query("update keys set state = 'REVOKED', revoke_time = now() where tenant_id = $1", [tenantId]);
    if (leased) await operatorWaitsForReplicas();
    await expect(decryptDataKey(onReplica(), { tenantId, keyId: "k", reference })).rejects.toMatchObject({ reason: "KEY_REVOKED" });
  });

  it("a revoked DEK version is refused by the other replica on its very next Decrypt", async () => {
    const tenantId = "replica-version";
    const { reference } = await warmKeyOnReplica(tenantId);
    await operator.query("update dek_versions set state = 'REVOKED', revoke_time = now() where tenant_id = $1 and version = 1", [tenantId]);
    if (leased) await operatorWaitsForReplicas();
    await expect(decryptDataKey(onReplica(), { tenantId, keyId: "k", reference })).rejects.toMatchObject({ reason: expect.stringMatching(/REVOKED/) });
  });
});

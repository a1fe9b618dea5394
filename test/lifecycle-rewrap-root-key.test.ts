/**
 * Master-key rotation, on PostgreSQL and on PGlite: AdminService (privileged
 * identities only) reports the master key and rotates it; the local provider
 * gains a version; a ROOT_REWRAP job re-wraps every KEK version in batches;
 * the periodic task rotates a year-old master key on its own.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../server/src/api/logger.js";
import { runPeriodicTasksOnce } from "../server/src/jobs/background-workers.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { periodicTasks } from "../server/src/jobs/periodic-tasks.js";
import { openLocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { createKey } from "../server/src/service/create-key.js";
import type { KmsContext } from "../server/src/service/kms-context.js";
import { syncRootKey } from "../server/src/service/root-key-registry.js";
import { rotateRootKey } from "../server/src/service/root-key-rotation.js";
import { material, seedKey } from "../server/src/storage/testing/fixtures.js";
import { engines } from "./support/databases.js";
import { seedDekVersions, type SeededDek } from "./support/dek-seeding.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { ADMIN_CALLER, createTestKms, SERVICE_CALLER, tenantCaller, type TestKms } from "./support/kms-harness.js";

const TENANT = "root";
const BYOK_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/test";
const DAY_MS = 86_400_000;

describe.each(engines)("master-key rotation on $name", (engine) => {
  let kms: TestKms;
  /** Every DEK made so far, by key: each must decrypt after every step. */
  const deks = new Map<string, SeededDek[]>();

  beforeAll(async () => {
    // No KEK cache: every Decrypt unwraps its KEK from the row, under whichever master key wraps it now.
    kms = await createTestKms(engine, { kekCache: { maxEntries: 0, maxAgeMs: 0 } });
    for (const keyId of ["a", "b", "c", "d", "e"]) {
      await kms.clients().keys.createKey({ tenantId: TENANT, keyId });
      deks.set(keyId, await seedDekVersions(kms.database.db, kms.context.rootProvider, { tenantId: TENANT, keyId }, 3, kms.clock.now()));
    }
    // A customer-managed (BYOK) key: its KEK is wrapped by the tenant's own key, never by the master key.
    await seedKey(kms.database.db, TENANT, "byok", { protection: "CUSTOMER_MANAGED" });
    await kms.database.db.updateTable("kek_versions").set({ root_provider: "AWS_KMS", root_key_id: BYOK_KEY_ARN }).where("key_id", "=", "byok").execute();
  });
  afterAll(async () => {
    await kms?.close();
  });

  const db = () => kms.database.db;
  const admin = () => kms.clients(ADMIN_CALLER).admin;
  const drain = (batchSize = 2) =>
    drainJobs(kms.context, { workerId: "root-worker", batchSize, leaseMs: 30_000, concurrency: 1 }, { logger: silentLogger });
  const rootKeys = () => db().selectFrom("root_keys").select(["root_key_id", "state"]).orderBy("create_time").orderBy("root_key_id").execute();
  const kekRootIds = async () =>
    new Set(
      (await db().selectFrom("kek_versions").select("root_key_id").where("wrapped_material", "is not", null).where("key_id", "<>", "byok").execute()).map((r) => r.root_key_id),
    );

  async function expectEveryDekDecrypts(): Promise<void> {
    const { dataKeys } = kms.clients();
    for (const [keyId, seeded] of deks) {
      for (const dek of seeded) {
        const answer = await dataKeys.decrypt({ tenantId: TENANT, keyId, reference: dek.reference });
        expect(Buffer.from(answer.plaintext).equals(dek.plaintext), `${keyId} v${dek.version}`).toBe(true);
      }
    }
  }

  it("GetRootKeyStatus and RotateRootKey answer ADMIN_REQUIRED to tenants and to service identities not listed as privileged", async () => {
    for (const caller of [tenantCaller(TENANT), SERVICE_CALLER]) {
      await expectRefusal(kms.clients(caller).admin.getRootKeyStatus({}), { code: Code.PermissionDenied, reason: "ADMIN_REQUIRED" });
      await expectRefusal(kms.clients(caller).admin.rotateRootKey({}), { code: Code.PermissionDenied, reason: "ADMIN_REQUIRED" });
    }
    expect(await rootKeys()).toHaveLength(0); // nothing was even registered on a refused call
  });

  it("GetRootKeyStatus reports the local provider, the master key every KEK is wrapped under, its age and next rotation a year on, and nothing pending", async () => {
    const { status } = await admin().getRootKeyStatus({});
    expect(status).toMatchObject({ provider: "local", currentKeyId: kms.context.rootProvider.currentKeyId, keksPendingRewrap: 0n, keksTotal: 5n });
    expect(status?.currentKeyCreateTime?.seconds).toBe(BigInt(kms.clock.now().getTime() / 1000));
    expect(status?.nextRotationTime?.seconds).toBe(BigInt((kms.clock.now().getTime() + 365 * DAY_MS) / 1000));
    expect(await rootKeys()).toEqual([{ root_key_id: kms.context.rootProvider.currentKeyId, state: "CURRENT" }]);
  });

  it("RotateRootKey makes a new version current at once (new KEKs are wrapped under it) and the old one RETIRING; the ROOT_REWRAP job re-wraps every KEK in batches, then the old one is RETIRED; every DEK decrypts throughout", async () => {
    const before = kms.context.rootProvider.currentKeyId;
    const { status } = await admin().rotateRootKey({});
    const after = status!.currentKeyId;
    expect(after).not.toBe(before);
    expect(kms.context.rootProvider.currentKeyId).toBe(after);
    expect(status).toMatchObject({ keksPendingRewrap: 5n, keksTotal: 5n });
    expect(await rootKeys()).toEqual(
      expect.arrayContaining([
        { root_key_id: before, state: "RETIRING" },
        { root_key_id: after, state: "CURRENT" },
      ]),
    );
    const [job] = await db().selectFrom("jobs").selectAll().where("kind", "=", "ROOT_REWRAP").execute();
    expect(job).toMatchObject({ state: "PENDING", root_key_id: after, total: 5, done: 0 });

    // A key made now is wrapped under the new master key from the start.
    await kms.clients().keys.createKey({ tenantId: TENANT, keyId: "f" });
    deks.set("f", await seedDekVersions(db(), kms.context.rootProvider, { tenantId: TENANT, keyId: "f" }, 2, kms.clock.now()));
    const f = await db().selectFrom("kek_versions").select("root_key_id").where("key_id", "=", "f").executeTakeFirstOrThrow();
    expect(f.root_key_id).toBe(after);
    await expectEveryDekDecrypts();

    await drain(2);
    const batches = await db().selectFrom("job_batches").select(["batch_no", "rows"]).where("job_id", "=", job!.job_id).orderBy("batch_no").execute();
    expect(batches).toEqual([
      { batch_no: 1, rows: 2 },
      { batch_no: 2, rows: 2 },
      { batch_no: 3, rows: 1 },
    ]);
    expect(await kekRootIds()).toEqual(new Set([after]));
    expect(await rootKeys()).toEqual(
      expect.arrayContaining([
        { root_key_id: before, state: "RETIRED" },
        { root_key_id: after, state: "CURRENT" },
      ]),
    );
    const { status: done } = await admin().getRootKeyStatus({});
    expect(done).toMatchObject({ currentKeyId: after, keksPendingRewrap: 0n, keksTotal: 6n });
    // The customer-managed KEK was neither counted nor touched.
    const byok = await db().selectFrom("kek_versions").select(["root_provider", "root_key_id", "wrapped_material"]).where("key_id", "=", "byok").executeTakeFirstOrThrow();
    expect(byok).toEqual({ root_provider: "AWS_KMS", root_key_id: BYOK_KEY_ARN, wrapped_material: material(40, 1) });
    expect((await db().selectFrom("jobs").selectAll().where("job_id", "=", job!.job_id).executeTakeFirstOrThrow()).state).toBe("DONE");
    await expectEveryDekDecrypts();
  });

  it("a rotation during a re-wrap supersedes it: the new job covers every KEK, and every older master key ends RETIRED", async () => {
    const first = await rotateRootKey(kms.context);
    await drainJobs(kms.context, { workerId: "root-worker", batchSize: 2, leaseMs: 30_000, concurrency: 1 }, { logger: silentLogger, shouldStop: stopAfter(2) });
    const second = await rotateRootKey(kms.context);
    const jobs = await db().selectFrom("jobs").selectAll().where("kind", "=", "ROOT_REWRAP").orderBy("job_id").execute();
    expect(jobs.slice(-2).map((j) => [j.root_key_id, j.state])).toEqual([
      [first, "DONE"],
      [second, "PENDING"],
    ]);
    expect(jobs.at(-2)?.last_error).toContain("superseded");
    expect(jobs.at(-1)?.total).toBe(6);
    await drain(4);
    expect(await kekRootIds()).toEqual(new Set([second]));
    const states = await rootKeys();
    expect(states.filter((r) => r.state === "CURRENT")).toEqual([{ root_key_id: second, state: "CURRENT" }]);
    expect(states.filter((r) => r.state !== "CURRENT").every((r) => r.state === "RETIRED")).toBe(true);
    await expectEveryDekDecrypts();
  });

  it("the periodic task rotates the master key once it is a year old, once only, and re-wraps every KEK", async () => {
    const tasks = rootKeyTask();
    const current = kms.context.rootProvider.currentKeyId;
    await runPeriodicTasksOnce(kms.context, tasks, silentLogger);
    expect(kms.context.rootProvider.currentKeyId).toBe(current);

    kms.clock.advanceDays(365);
    await runPeriodicTasksOnce(kms.context, tasks, silentLogger);
    const rotated = kms.context.rootProvider.currentKeyId;
    expect(rotated).not.toBe(current);
    await runPeriodicTasksOnce(kms.context, tasks, silentLogger);
    expect(kms.context.rootProvider.currentKeyId).toBe(rotated);
    expect((await rootKeys()).filter((r) => r.root_key_id === current)).toEqual([{ root_key_id: current, state: "RETIRING" }]);
    await drain();
    expect(await kekRootIds()).toEqual(new Set([rotated]));
    await expectEveryDekDecrypts();
  });

  it("a server whose provider holds a newer, unrecorded version (a rotation that never committed) wraps under the version the database records as current; a KEK it wrapped under an older one is picked up again by the periodic task", async () => {
    const recorded = kms.context.rootProvider.currentKeyId;
    const restarted = await openLocalRootProvider(kms.dataDir);
    try {
      const orphan = await restarted.createKeyVersion();
      await restarted.useKeyVersion(orphan);
      const context: KmsContext = { ...kms.context, rootProvider: restarted };
      // Before it syncs, this server wraps a new key's KEK under the orphan version.
      await createKey(context, { tenantId: TENANT, keyId: "g" });
      expect((await db().selectFrom("kek_versions").select("root_key_id").where("key_id", "=", "g").executeTakeFirstOrThrow()).root_key_id).toBe(orphan);
      deks.set("g", await seedDekVersions(db(), restarted, { tenantId: TENANT, keyId: "g" }, 1, kms.clock.now()));

      expect((await syncRootKey(context)).root_key_id).toBe(recorded);
      expect(restarted.currentKeyId).toBe(recorded);
      await runPeriodicTasksOnce(context, rootKeyTask(), silentLogger);
      const resumed = await db().selectFrom("jobs").selectAll().where("kind", "=", "ROOT_REWRAP").where("state", "=", "PENDING").execute();
      expect(resumed.map((j) => [j.root_key_id, j.total])).toEqual([[recorded, 1]]);
      await drainJobs(context, { workerId: "root-worker", batchSize: 2, leaseMs: 30_000, concurrency: 1 }, { logger: silentLogger });
      expect(await kekRootIds()).toEqual(new Set([recorded]));
    } finally {
      await restarted.close();
    }
    await expectEveryDekDecrypts();
  });

  it("a provider that rotates inside its own service (no versions here) refuses RotateRootKey with INVALID_STATE_TRANSITION", async () => {
    const provider = kms.context.rootProvider;
    const cloudLike = { name: "aws-kms", currentKeyId: provider.currentKeyId, wrap: provider.wrap, unwrap: provider.unwrap, close: provider.close };
    await expect(rotateRootKey({ ...kms.context, rootProvider: cloudLike })).rejects.toMatchObject({ reason: "INVALID_STATE_TRANSITION" });
  });
});

/** The registered master-key task alone (the other periodic tasks would purge what a year of clock makes due). */
function rootKeyTask() {
  const tasks = periodicTasks({ rootKeyRotationDays: 365 }).filter((task) => task.name === "root-key-rotation");
  expect(tasks).toHaveLength(1);
  return tasks;
}

/** A shouldStop that lets `batches` batches run (two checks precede the first: claim and batch). */
function stopAfter(batches: number): () => boolean {
  let checks = 0;
  return () => ++checks > batches + 1;
}

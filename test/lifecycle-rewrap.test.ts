/**
 * KEK rotation in the background, on PostgreSQL and on PGlite: RotateKey with
 * rotateKek retires the old KEK version and enqueues a KEK_REWRAP job in the
 * same transaction; the job engine (server/src/jobs) re-wraps the DEK rows in
 * batches of one transaction each, with leases, progress, failures and
 * back-off, and finally destroys the old version.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KekAlgorithm, KekVersionState } from "../gen/matih/kms/v1/resources_pb.js";
import { silentLogger } from "../server/src/api/logger.js";
import { startBackgroundWorkers } from "../server/src/jobs/background-workers.js";
import type { JobSettings } from "../server/src/jobs/job-handler.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { BACKOFF_BASE_MS, claimJob, LeaseLostError, type JobRow } from "../server/src/jobs/job-store.js";
import { kekRewrapJob } from "../server/src/jobs/kek-rewrap.js";
import type { PeriodicTask } from "../server/src/jobs/periodic-tasks.js";
import { engines } from "./support/databases.js";
import { seedDekVersions, type SeededDek } from "./support/dek-seeding.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
import { waitUntil } from "./support/e2e-process.js";

const TENANT = "rewrap";

function settings(overrides: Partial<JobSettings> = {}): JobSettings {
  return { workerId: "worker-a", batchSize: 10, leaseMs: 30_000, concurrency: 1, ...overrides };
}

describe.each(engines)("KEK re-wrap in the background on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    // No KEK cache: every call unwraps the KEK from the row it just read, the harshest case for a re-wrap.
    kms = await createTestKms(engine, { kekCache: { maxEntries: 0, maxAgeMs: 0 } });
  });
  afterAll(async () => {
    await kms?.close();
  });

  const db = () => kms.database.db;
  const drain = (overrides: Partial<JobSettings> = {}) => drainJobs(kms.context, settings(overrides), { logger: silentLogger });

  async function keyWithDeks(keyId: string, count: number, kekAlgorithm = KekAlgorithm.AES_256): Promise<SeededDek[]> {
    await kms.clients().keys.createKey({ tenantId: TENANT, keyId, kekAlgorithm });
    return seedDekVersions(db(), kms.context.rootProvider, { tenantId: TENANT, keyId }, count, kms.clock.now());
  }

  const jobsOf = (keyId: string) =>
    db().selectFrom("jobs").selectAll().where("tenant_id", "=", TENANT).where("key_id", "=", keyId).orderBy("job_id").execute();
  const batchesOf = (jobId: number | string) =>
    db().selectFrom("job_batches").selectAll().where("job_id", "=", Number(jobId)).orderBy("batch_no").execute();
  const dekKekVersions = async (keyId: string) =>
    (await db().selectFrom("dek_versions").select(["version", "kek_version"]).where("tenant_id", "=", TENANT).where("key_id", "=", keyId).orderBy("version").execute()).map(
      (row) => row.kek_version,
    );

  /** Claims the key's job as worker-a and applies `count` batches of it. */
  async function runBatches(keyId: string, count: number): Promise<void> {
    const job = await claimJob(db(), { workerId: "worker-a", now: kms.clock.now(), leaseMs: 30_000, excluding: [] });
    expect(job?.key_id).toBe(keyId);
    const session = await kekRewrapJob.open(kms.context, job!, settings());
    try {
      for (let i = 0; i < count; i++) expect(await session.runBatch()).toBe("applied");
    } finally {
      session.close();
    }
  }

  async function expectAllDecrypt(keyId: string, seeded: readonly SeededDek[]): Promise<void> {
    const { dataKeys } = kms.clients();
    for (const dek of seeded) {
      const answer = await dataKeys.decrypt({ tenantId: TENANT, keyId, reference: dek.reference });
      expect(Buffer.from(answer.plaintext).equals(dek.plaintext), `DEK version ${dek.version}`).toBe(true);
    }
  }

  it("RotateKey with rotateKek makes the new KEK version primary and the old one RETIRING with its DEK count, and enqueues the re-wrap with the KEK_ROTATED event, in one transaction", async () => {
    const seeded = await keyWithDeks("enqueue", 24);
    const { key } = await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "enqueue", rotateKek: true });
    expect(key?.primaryKekVersion).toBe(2);
    expect(key?.kekVersions.map((v) => [v.version, v.state, Number(v.totalDekCount), Number(v.rewrappedDekCount)])).toEqual([
      [1, KekVersionState.RETIRING, 25, 0], // DEK version 1 and the 24 seeded
      [2, KekVersionState.PRIMARY, 0, 0],
    ]);
    // Nothing is re-wrapped yet: only the DEK version made by this rotation is under KEK version 2.
    expect(await dekKekVersions("enqueue")).toEqual([...Array(25).fill(1), 2]);
    const [job] = await jobsOf("enqueue");
    expect(job).toMatchObject({ kind: "KEK_REWRAP", kek_version: 1, state: "PENDING", total: 25, done: 0, lease_owner: null });
    const events = await db().selectFrom("key_events").select(["type", "kek_version"]).where("tenant_id", "=", TENANT).where("key_id", "=", "enqueue").orderBy("event_id").execute();
    expect(events.map((e) => e.type)).toContain("KEK_ROTATED");
    // Every version decrypts while nothing has been re-wrapped.
    await expectAllDecrypt("enqueue", seeded);
    await drain();
  });

  it("re-wraps in batches of the configured size, one transaction each: progress shows in GetKey and the encryption status; at the end the old version is DESTROYED, its material erased, KEK_VERSION_DESTROYED emitted, and every reference decrypts", async () => {
    const seeded = await keyWithDeks("batches", 34);
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "batches", rotateKek: true });
    const [job] = await jobsOf("batches");
    const wrappedBefore = await db().selectFrom("dek_versions").select(["version", "wrapped_material"]).where("key_id", "=", "batches").where("kek_version", "=", 1).execute();
    expect(wrappedBefore).toHaveLength(35);

    // One batch: ten rows.
    await runBatches("batches", 1);
    const { key } = await kms.clients().keys.getKey({ tenantId: TENANT, keyId: "batches" });
    expect(key?.kekVersions.map((v) => [v.version, v.state, Number(v.rewrappedDekCount), Number(v.totalDekCount)])).toEqual([
      [1, KekVersionState.RETIRING, 10, 35],
      [2, KekVersionState.PRIMARY, 0, 0],
    ]);
    const status = await kms.clients().keys.getEncryptionStatus({ tenantId: TENANT });
    const kekProgress = status.keys.find((k) => k.keyId === "batches")?.kekVersions.find((v) => v.version === 1);
    expect([Number(kekProgress?.rewrappedDekCount), Number(kekProgress?.totalDekCount)]).toEqual([10, 35]);
    expect((await dekKekVersions("batches")).filter((v) => v === 2)).toHaveLength(11);
    await expectAllDecrypt("batches", seeded); // half-way: under either version

    await drain();
    const after = (await kms.clients().keys.getKey({ tenantId: TENANT, keyId: "batches" })).key;
    expect(after?.kekVersions.map((v) => [v.version, v.state, Number(v.rewrappedDekCount), Number(v.totalDekCount)])).toEqual([
      [1, KekVersionState.DESTROYED, 35, 35],
      [2, KekVersionState.PRIMARY, 0, 0],
    ]);
    expect(after?.kekVersions[0]?.destroyTime).toBeDefined();
    expect(await dekKekVersions("batches")).toEqual(Array(36).fill(2));
    const oldKek = await db().selectFrom("kek_versions").select(["wrapped_material", "destroy_time"]).where("key_id", "=", "batches").where("version", "=", 1).executeTakeFirstOrThrow();
    expect(oldKek.wrapped_material).toBeNull();
    const wrappedAfter = await db().selectFrom("dek_versions").select(["version", "wrapped_material"]).where("key_id", "=", "batches").orderBy("version").execute();
    for (const before of wrappedBefore) {
      const now = wrappedAfter.find((row) => row.version === before.version)!;
      expect(now.wrapped_material!.equals(before.wrapped_material!), `DEK version ${before.version} was re-wrapped`).toBe(false);
    }
    const finished = (await jobsOf("batches"))[0]!;
    expect(finished).toMatchObject({ state: "DONE", done: 35, total: 35, batches: 4, lease_owner: null });
    expect(finished.finish_time).toBeInstanceOf(Date);
    // Batches 1..4 of 10, 10, 10, 5 rows: each applied once, together exactly the DEKs to re-wrap.
    expect((await batchesOf(job!.job_id)).map((b) => [b.batch_no, b.rows, b.worker])).toEqual([
      [1, 10, "worker-a"],
      [2, 10, "worker-a"],
      [3, 10, "worker-a"],
      [4, 5, "worker-a"],
    ]);
    const events = await db().selectFrom("key_events").select(["type", "kek_version"]).where("key_id", "=", "batches").orderBy("event_id").execute();
    expect(events.at(-1)).toEqual({ type: "KEK_VERSION_DESTROYED", kek_version: 1 });
    await expectAllDecrypt("batches", seeded);
    expect((await kms.clients().dataKeys.generateDataKey({ tenantId: TENANT, keyId: "batches" })).dekVersion).toBe(seeded.at(-1)!.version + 1);
  });

  it("a second KEK rotation during a re-wrap retires that version too: both jobs finish, both old versions are DESTROYED and every DEK ends under the newest primary", async () => {
    const seeded = await keyWithDeks("twice", 30);
    const { keys } = kms.clients();
    await keys.rotateKey({ tenantId: TENANT, keyId: "twice", rotateKek: true });
    await runBatches("twice", 2);
    await keys.rotateKey({ tenantId: TENANT, keyId: "twice", rotateKek: true });
    const { key: mid } = await keys.getKey({ tenantId: TENANT, keyId: "twice" });
    expect(mid?.kekVersions.map((v) => [v.version, v.state])).toEqual([
      [1, KekVersionState.RETIRING],
      [2, KekVersionState.RETIRING],
      [3, KekVersionState.PRIMARY],
    ]);
    await drain();
    const { key } = await keys.getKey({ tenantId: TENANT, keyId: "twice" });
    expect(key?.kekVersions.map((v) => [v.version, v.state])).toEqual([
      [1, KekVersionState.DESTROYED],
      [2, KekVersionState.DESTROYED],
      [3, KekVersionState.PRIMARY],
    ]);
    expect(new Set(await dekKekVersions("twice"))).toEqual(new Set([3]));
    expect((await jobsOf("twice")).map((j) => [j.kek_version, j.state])).toEqual([
      [1, "DONE"],
      [2, "DONE"],
    ]);
    await expectAllDecrypt("twice", seeded);
  });

  it("several lanes share one job without applying any row twice: the batches' rows add up to exactly the DEKs re-wrapped", async () => {
    const seeded = await keyWithDeks("lanes", 90);
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "lanes", rotateKek: true });
    await drain({ concurrency: 3, batchSize: 7 });
    const [job] = await jobsOf("lanes");
    const batches = await batchesOf(job!.job_id);
    expect(job).toMatchObject({ state: "DONE", total: 91, done: 91, batches: batches.length });
    expect(batches.reduce((sum, b) => sum + b.rows, 0)).toBe(91);
    expect(batches.map((b) => b.batch_no)).toEqual(batches.map((_, i) => i + 1));
    expect(new Set(await dekKekVersions("lanes"))).toEqual(new Set([2]));
    await expectAllDecrypt("lanes", seeded);
  });

  it("a job whose lease expired is taken over by another worker; the worker that lost it cannot commit its batch", async () => {
    await keyWithDeks("lease", 12);
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "lease", rotateKek: true });
    const a = settings({ workerId: "worker-a", leaseMs: 5_000 });
    const b = settings({ workerId: "worker-b", leaseMs: 5_000 });
    const claimedByA = (await claimJob(db(), { workerId: "worker-a", now: kms.clock.now(), leaseMs: 5_000, excluding: [] })) as JobRow;
    expect(claimedByA).toMatchObject({ key_id: "lease", lease_owner: "worker-a" });
    // While A's lease runs, B gets nothing.
    expect(await claimJob(db(), { workerId: "worker-b", now: kms.clock.now(), leaseMs: 5_000, excluding: [] })).toBeUndefined();

    kms.clock.set(new Date(kms.clock.now().getTime() + 6_000));
    const claimedByB = await claimJob(db(), { workerId: "worker-b", now: kms.clock.now(), leaseMs: 5_000, excluding: [] });
    expect(claimedByB).toMatchObject({ job_id: claimedByA.job_id, lease_owner: "worker-b", attempts: 1 });
    expect(claimedByB?.last_error).toContain("worker-a");

    // A, unaware, tries a batch: its lease check fails and the whole batch rolls back.
    const sessionA = await kekRewrapJob.open(kms.context, claimedByA, a);
    await expect(sessionA.runBatch()).rejects.toBeInstanceOf(LeaseLostError);
    sessionA.close();
    expect(await dekKekVersions("lease")).toEqual([...Array(13).fill(1), 2]);
    expect(await batchesOf(claimedByA.job_id)).toEqual([]);

    const sessionB = await kekRewrapJob.open(kms.context, claimedByB!, b);
    expect(await sessionB.runBatch()).toBe("applied");
    expect(await sessionB.runBatch()).toBe("applied");
    expect(await sessionB.runBatch()).toBe("finished");
    sessionB.close();
    expect((await batchesOf(claimedByA.job_id)).map((x) => [x.batch_no, x.rows, x.worker])).toEqual([
      [1, 10, "worker-b"],
      [2, 3, "worker-b"],
    ]);
    expect((await jobsOf("lease"))[0]).toMatchObject({ state: "DONE", done: 13 });
  });

  it("a failing job is recorded (attempts, last_error), backs off, and never holds up the other jobs; once the cause is gone it completes", async () => {
    const bad = await keyWithDeks("bad", 5);
    const good = await keyWithDeks("good", 5);
    const corrupt = bad[2]!.version;
    const original = await db().selectFrom("dek_versions").select("wrapped_material").where("key_id", "=", "bad").where("version", "=", corrupt).executeTakeFirstOrThrow();
    await db().updateTable("dek_versions").set({ wrapped_material: Buffer.alloc(60, 7) }).where("key_id", "=", "bad").where("version", "=", corrupt).execute();
    const { keys } = kms.clients();
    await keys.rotateKey({ tenantId: TENANT, keyId: "bad", rotateKek: true });
    await keys.rotateKey({ tenantId: TENANT, keyId: "good", rotateKek: true });

    const first = await drain();
    expect(first.failures).toBe(1);
    expect((await jobsOf("good"))[0]?.state).toBe("DONE");
    await expectAllDecrypt("good", good);
    const failed = (await jobsOf("bad"))[0]!;
    expect(failed).toMatchObject({ state: "PENDING", attempts: 1, done: 0, lease_owner: null });
    expect(failed.last_error).toContain(`DEK version ${corrupt} of key ${TENANT}/bad failed to unwrap under KEK version 1`);
    expect(failed.lease_until!.getTime() - kms.clock.now().getTime()).toBe(BACKOFF_BASE_MS);

    // Backing off: a pass now does not touch it.
    expect(await drain()).toEqual({ batches: 0, finished: 0, failures: 0 });
    kms.clock.set(new Date(kms.clock.now().getTime() + BACKOFF_BASE_MS));
    expect((await drain()).failures).toBe(1);
    const twice = (await jobsOf("bad"))[0]!;
    expect(twice.attempts).toBe(2);
    expect(twice.lease_until!.getTime() - kms.clock.now().getTime()).toBe(2 * BACKOFF_BASE_MS);

    await db().updateTable("dek_versions").set({ wrapped_material: original.wrapped_material! }).where("key_id", "=", "bad").where("version", "=", corrupt).execute();
    kms.clock.set(new Date(kms.clock.now().getTime() + 2 * BACKOFF_BASE_MS));
    expect((await drain()).finished).toBe(1);
    expect((await jobsOf("bad"))[0]).toMatchObject({ state: "DONE", attempts: 2, done: 6 });
    await expectAllDecrypt("bad", bad);
  });

  it("a purged DEK version (no material left) under the old KEK is neither counted nor waited for", async () => {
    const seeded = await keyWithDeks("purged", 6);
    const purged = seeded[1]!.version;
    await db()
      .updateTable("dek_versions")
      .set({ state: "PURGED", wrapped_material: null, purge_time: kms.clock.now() })
      .where("key_id", "=", "purged")
      .where("version", "=", purged)
      .execute();
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "purged", rotateKek: true });
    expect((await jobsOf("purged"))[0]?.total).toBe(6);
    await drain();
    const { key } = await kms.clients().keys.getKey({ tenantId: TENANT, keyId: "purged" });
    expect(key?.kekVersions[0]?.state).toBe(KekVersionState.DESTROYED);
    await expectAllDecrypt("purged", seeded.filter((d) => d.version !== purged));
  });

  it("works the same for an RSA-4096 KEK (batches of at most 64: OAEP unwrapping is slow)", async () => {
    const seeded = await keyWithDeks("rsa", 70, KekAlgorithm.RSA_4096);
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "rsa", rotateKek: true });
    await drain({ batchSize: 1_000 });
    const [job] = await jobsOf("rsa");
    expect((await batchesOf(job!.job_id)).map((b) => b.rows)).toEqual([64, 7]);
    const { key } = await kms.clients().keys.getKey({ tenantId: TENANT, keyId: "rsa" });
    expect(key?.kekVersions.map((v) => v.state)).toEqual([KekVersionState.DESTROYED, KekVersionState.PRIMARY]);
    await expectAllDecrypt("rsa", seeded);
  });

  it("startBackgroundWorkers runs the jobs and the periodic tasks on its own; a failing task does not stop the others; stop() lets the batch in flight finish and gives up the leases", async () => {
    const seeded = await keyWithDeks("loop", 40);
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "loop", rotateKek: true });
    let counted = 0;
    const tasks: PeriodicTask[] = [
      { name: "always-fails", run: async () => Promise.reject(new Error("boom")) },
      { name: "counts", run: async (_context, now) => void (now instanceof Date && counted++) },
    ];
    const warnings: string[] = [];
    const workers = startBackgroundWorkers(kms.context, {
      intervalMs: 10,
      jobs: { batchSize: 5, leaseMs: 30_000, concurrency: 2 },
      tasks,
      logger: { ...silentLogger, warn: (message, fields) => void warnings.push(`${message} ${String(fields?.["task"])}`) },
      workerId: "loop-worker",
    });
    try {
      await waitUntil("the re-wrap to finish", 30_000, async () => ((await jobsOf("loop"))[0]?.state === "DONE" ? true : undefined), 20);
      await waitUntil("the counting task to run three times", 10_000, async () => (counted >= 3 ? true : undefined), 10);
    } finally {
      await workers.stop();
    }
    expect(warnings.filter((w) => w.includes("always-fails")).length).toBeGreaterThanOrEqual(3);
    expect(new Set((await batchesOf((await jobsOf("loop"))[0]!.job_id)).map((b) => b.worker))).toEqual(new Set(["loop-worker"]));
    await expectAllDecrypt("loop", seeded);

    // Stopped in the middle of a job: the batch in flight completes, and the lease is given up at once.
    await seedDekVersions(db(), kms.context.rootProvider, { tenantId: TENANT, keyId: "loop" }, 300, kms.clock.now());
    await kms.clients().keys.rotateKey({ tenantId: TENANT, keyId: "loop", rotateKek: true });
    const stopping = startBackgroundWorkers(kms.context, {
      intervalMs: 60_000,
      jobs: { batchSize: 1, leaseMs: 30_000, concurrency: 1 },
      tasks: [],
      logger: silentLogger,
      workerId: "stopping-worker",
    });
    const running = (await jobsOf("loop")).at(-1)!;
    await waitUntil("a first batch", 10_000, async () => ((await batchesOf(running.job_id)).length > 0 ? true : undefined), 2);
    await stopping.stop();
    const stopped = (await jobsOf("loop")).at(-1)!;
    expect(stopped).toMatchObject({ state: "PENDING", lease_owner: null, lease_until: null });
    expect(stopped.done).toBeLessThan(stopped.total);
    expect(stopped.done).toBe((await batchesOf(running.job_id)).reduce((sum, b) => sum + b.rows, 0));
    expect(stopped.batches).toBe(stopped.done);
    await drain();
  });
});

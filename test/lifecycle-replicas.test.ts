/**
 * Replicas: THREE real server processes (`tsx server/src/main.ts`), each with
 * its own port and data directory but the same master key, on one fresh
 * PostgreSQL database, share a large KEK re-wrap through the database. One is
 * killed with SIGKILL in the middle of it. Afterwards every job is complete,
 * no batch was applied twice, the dead replica's job was taken over once its
 * lease ran out, and every DEK still decrypts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KekVersionState } from "../gen/matih/kms/v1/resources_pb.js";
import { MASTER_KEY_FILE, openLocalRootProvider, type LocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { openDatabase, type OpenedDatabase } from "../server/src/storage/open-database.js";
import { seedDekVersions, type SeededDek } from "./support/dek-seeding.js";
import { waitUntil } from "./support/e2e-process.js";
import {
  createDataDir,
  createTestDatabase,
  forEachLimited,
  killHard,
  removeDir,
  START_TIMEOUT_MS,
  startKmsProcess,
  stopGracefully,
  type KmsProcess,
} from "./support/kms-processes.js";

const skip = process.env["KMS_TEST_SKIP_POSTGRES"] === "1";
const TENANT = "replicas";
const KEYS = 4;
const DEKS_PER_KEY = 1_000;

describe.skipIf(skip)("three server processes on one PostgreSQL share a re-wrap; one is killed with SIGKILL in the middle", () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let opened: OpenedDatabase | undefined;
  let provider: LocalRootProvider | undefined;
  const dirs: string[] = [];
  const servers: KmsProcess[] = [];

  beforeAll(async () => {
    database = await createTestDatabase("kms_replicas");
    const keyDir = await createDataDir();
    dirs.push(keyDir);
    for (let i = 0; i < 3; i++) dirs.push(await createDataDir(`${keyDir}/${MASTER_KEY_FILE}`));
    const env = {
      DATABASE_URL: database.url,
      KMS_WORKER_INTERVAL_MS: "100",
      KMS_REWRAP_BATCH_SIZE: "10",
      KMS_JOB_LEASE_SECONDS: "3",
      KMS_WORKER_CONCURRENCY: "1",
    };
    servers.push(...(await Promise.all(dirs.slice(1).map((dir) => startKmsProcess(dir, env)))));
    opened = await openDatabase({ databaseUrl: database.url, poolSize: 4 });
    provider = await openLocalRootProvider(keyDir);
  }, START_TIMEOUT_MS * 2);

  afterAll(async () => {
    await Promise.all(servers.map((server) => stopGracefully(server)));
    await provider?.close();
    await opened?.close();
    await database?.drop();
    await Promise.all(dirs.map(removeDir));
  }, 60_000);

  it("every job completes, no batch is applied twice, the killed replica's job is taken over, and every DEK still decrypts", async () => {
    const db = opened!.db;
    const deks = new Map<string, SeededDek[]>();
    for (let k = 0; k < KEYS; k++) {
      const keyId = `key-${k}`;
      await servers[k % 3]!.clients.keys.createKey({ tenantId: TENANT, keyId });
      deks.set(keyId, await seedDekVersions(db, provider!, { tenantId: TENANT, keyId }, DEKS_PER_KEY));
    }
    const workers = new Set(servers.map((server) => server.workerId));
    expect(workers.size).toBe(3);

    // Each rotation through another replica; the jobs are claimed by whichever replica is free.
    for (let k = 0; k < KEYS; k++) await servers[(k + 1) % 3]!.clients.keys.rotateKey({ tenantId: TENANT, keyId: `key-${k}`, rotateKek: true });
    const total = KEYS * (DEKS_PER_KEY + 1);

    // The victim: a replica holding a job's lease, with batches of it applied and more to come.
    const victim = await waitUntil("a replica in the middle of a job", 120_000, async () => {
      const applied = await db.selectFrom("job_batches").select((eb) => eb.fn.sum<number>("rows").as("rows")).executeTakeFirstOrThrow();
      if (Number(applied.rows ?? 0) < total / 8) return undefined;
      const held = await db
        .selectFrom("jobs")
        .select(["lease_owner", "done", "total"])
        .where("state", "=", "PENDING")
        .where("lease_owner", "is not", null)
        .execute();
      const busy = held.find((job) => job.done > 0 && job.done < job.total / 2);
      return servers.find((server) => server.workerId === busy?.lease_owner);
    }, 10);
    const victimJobs = await db.selectFrom("jobs").select("job_id").where("lease_owner", "=", victim.workerId).execute();
    await killHard(victim);
    const survivors = servers.filter((server) => server !== victim);

    await waitUntil("every job to complete", 240_000, async () => {
      const pending = await db.selectFrom("jobs").select("job_id").where("state", "<>", "DONE").execute();
      return pending.length === 0 ? true : undefined;
    }, 100);

    const jobs = await db.selectFrom("jobs").selectAll().orderBy("job_id").execute();
    expect(jobs).toHaveLength(KEYS);
    const batches = await db.selectFrom("job_batches").selectAll().orderBy("job_id").orderBy("batch_no").execute();
    for (const job of jobs) {
      const own = batches.filter((batch) => batch.job_id === job.job_id);
      // Each batch applied once: numbered 1..n without a gap or a repeat, rows adding up to exactly the DEKs moved.
      expect(own.map((batch) => batch.batch_no)).toEqual(own.map((_, i) => i + 1));
      expect(own.reduce((sum, batch) => sum + batch.rows, 0)).toBe(job.total);
      expect(job).toMatchObject({ kind: "KEK_REWRAP", state: "DONE", total: DEKS_PER_KEY + 1, done: DEKS_PER_KEY + 1, batches: own.length });
    }
    // The replicas cooperated, the victim's batches before its death stand, and its job was taken over after its lease ran out.
    const batchWorkers = new Set(batches.map((batch) => batch.worker));
    expect([...batchWorkers].every((worker) => workers.has(worker))).toBe(true);
    expect(batchWorkers.size).toBeGreaterThanOrEqual(2);
    expect(batchWorkers.has(victim.workerId)).toBe(true);
    for (const { job_id: jobId } of victimJobs) {
      const job = jobs.find((candidate) => candidate.job_id === jobId)!;
      expect(job.last_error).toContain(`the lease of worker ${victim.workerId} expired`);
      const after = batches.filter((batch) => batch.job_id === jobId && batch.worker !== victim.workerId);
      expect(after.length).toBeGreaterThan(0);
    }

    for (let k = 0; k < KEYS; k++) {
      const { key } = await survivors[k % 2]!.clients.keys.getKey({ tenantId: TENANT, keyId: `key-${k}` });
      expect(key?.kekVersions.map((v) => [v.version, v.state, Number(v.rewrappedDekCount), Number(v.totalDekCount)])).toEqual([
        [1, KekVersionState.DESTROYED, DEKS_PER_KEY + 1, DEKS_PER_KEY + 1],
        [2, KekVersionState.PRIMARY, 0, 0],
      ]);
      expect(new Set(key?.dekVersions.map((v) => v.kekVersion))).toEqual(new Set([2]));
    }

    const all = [...deks.entries()].flatMap(([keyId, list]) => list.map((dek) => ({ keyId, dek })));
    const failures: string[] = [];
    await forEachLimited(all, 32, async ({ keyId, dek }, i) => {
      try {
        const answer = await survivors[i % 2]!.clients.dataKeys.decrypt({ tenantId: TENANT, keyId, reference: dek.reference });
        if (!Buffer.from(answer.plaintext).equals(dek.plaintext)) failures.push(`${keyId} v${dek.version}: another key`);
      } catch (error) {
        failures.push(`${keyId} v${dek.version}: ${String(error)}`);
      }
    });
    expect(failures.slice(0, 5)).toEqual([]);
    expect(failures).toHaveLength(0);
  }, 600_000);
});

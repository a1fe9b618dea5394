/**
 * Crash safety, on PostgreSQL and on PGlite: the real server process
 * (`tsx server/src/main.ts`) is killed with SIGKILL at random points while KEK
 * rotations, DEK rotations and master-key rotations are requested and the
 * re-wraps run, then restarted, several times over. After the last restart
 * every job completes, every DEK that was ever handed out or stored still
 * decrypts, and what the jobs left is consistent: one primary KEK version
 * per key with every DEK under it, the older versions destroyed, every KEK
 * under the one current master key, and no batch applied twice.
 *
 * The last restart is `startKms` in this process (what main.ts runs), so the
 * test can watch the jobs table even of the embedded database.
 *
 * The random points come from a seeded generator; the seed is in the test's
 * name and KMS_CRASH_SEED replays one.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { DataKeyService } from "../gen/matih/kms/v1/data_key_service_pb.js";
import { silentLogger } from "../server/src/api/logger.js";
import { loadConfig } from "../server/src/config.js";
import { systemClock } from "../server/src/domain/clock.js";
import { openLocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { createKey } from "../server/src/service/create-key.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import { startKms, type RunningKms } from "../server/src/start-kms.js";
import { migrateToLatest } from "../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase } from "../server/src/storage/open-database.js";
import { seedDekVersions } from "./support/dek-seeding.js";
import { connectGrpcTransport } from "./support/e2e-clients.js";
import { waitUntil } from "./support/e2e-process.js";
import { createDataDir, createTestDatabase, forEachLimited, killHard, removeDir, startKmsProcess } from "./support/kms-processes.js";

const SEED = Number(process.env["KMS_CRASH_SEED"] ?? Math.floor(Math.random() * 2 ** 31));
const ENGINES = process.env["KMS_TEST_SKIP_POSTGRES"] === "1" ? (["pglite"] as const) : (["postgres", "pglite"] as const);
const TENANT = "crash";
const KEYS = ["k0", "k1", "k2"];
const DEKS_PER_KEY = 500;
const CRASHES = 4;

describe.each(ENGINES)(`SIGKILL at random points during rotations and re-wraps, then restart, on %s (seed ${SEED})`, (engine) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }, 60_000);

  it("every job completes and every DEK decrypts after each crash and the final restart", async () => {
    const random = mulberry32(SEED + (engine === "pglite" ? 1 : 0));
    const dataDir = await createDataDir();
    cleanups.push(() => removeDir(dataDir));
    const env: Record<string, string> = { KMS_WORKER_INTERVAL_MS: "100", KMS_REWRAP_BATCH_SIZE: "20", KMS_JOB_LEASE_SECONDS: "2" };
    if (engine === "postgres") {
      const database = await createTestDatabase("kms_crash");
      cleanups.push(() => database.drop());
      env["DATABASE_URL"] = database.url;
    }
    /** Every DEK handed out or seeded. */
    const known: { keyId: string; reference: Buffer; plaintext: Buffer }[] = [];

    // The keys and their DEK versions, seeded before the first start (an embedded database has one user at a time).
    {
      const opened = await openDatabase(engine === "postgres" ? { databaseUrl: env["DATABASE_URL"] } : { dataDir: join(dataDir, "pglite") });
      const provider = await openLocalRootProvider(dataDir);
      try {
        await migrateToLatest(opened.db);
        const context = { db: opened.db, rootProvider: provider, clock: systemClock, kekCache: createKekCache({ maxEntries: 0, maxAgeMs: 0 }) };
        for (const keyId of KEYS) {
          await createKey(context, { tenantId: TENANT, keyId });
          const seeded = await seedDekVersions(opened.db, provider, { tenantId: TENANT, keyId }, DEKS_PER_KEY);
          known.push(...seeded.map((dek) => ({ keyId, reference: dek.reference, plaintext: dek.plaintext })));
        }
      } finally {
        await provider.close();
        await opened.close();
      }
    }

    const crashPoints: number[] = [];
    for (let crash = 0; crash < CRASHES; crash++) {
      const running = await startKmsProcess(dataDir, env);
      cleanups.push(async () => running.child.killGroup());
      // Everything the callers do until the kill; failures after it are expected and ignored.
      let killed = false;
      const actions = (async () => {
        for (let call = 0; !killed; call++) {
          const keyId = pick(random, KEYS);
          const roll = call === 0 ? 0 : random(); // the first call rotates a KEK, so a re-wrap starts (unless the kill comes first)
          try {
            if (roll < 0.35) await running.clients.keys.rotateKey({ tenantId: TENANT, keyId, rotateKek: true });
            else if (roll < 0.55) await running.clients.keys.rotateKey({ tenantId: TENANT, keyId });
            else if (roll < 0.65) await running.clients.admin.rotateRootKey({});
            else {
              const generated = await running.clients.dataKeys.generateDataKey({ tenantId: TENANT, keyId });
              known.push({ keyId, reference: Buffer.from(generated.reference), plaintext: Buffer.from(generated.plaintext) });
            }
          } catch (error) {
            if (!killed) throw error;
          }
          await sleep(random() * 150);
        }
      })();
      const delay = 100 + Math.floor(random() * 1_400);
      crashPoints.push(delay);
      await sleep(delay);
      killed = true;
      await killHard(running);
      await actions;
    }

    // The last restart, in this process: the same start-up as main.ts, background workers included.
    let kms: RunningKms | undefined = await startKms(loadConfig({ ...env, KMS_DATA_DIR: dataDir, KMS_PORT: "0" }), { logger: silentLogger });
    cleanups.push(async () => kms?.stop(1_000));
    const db = kms.database.db;
    await waitUntil(`every job to complete (killed after ${crashPoints.join(", ")} ms)`, 300_000, async () => {
      const open = await db.selectFrom("jobs").select("job_id").where("state", "<>", "DONE").execute();
      return open.length === 0 ? true : undefined;
    }, 200);

    // Each key: one primary KEK version, every older one destroyed, every DEK with material under the primary.
    for (const keyId of KEYS) {
      const keks = await db.selectFrom("kek_versions").selectAll().where("tenant_id", "=", TENANT).where("key_id", "=", keyId).orderBy("version").execute();
      const primary = keks.filter((kek) => kek.state === "PRIMARY");
      expect(primary, keyId).toHaveLength(1);
      expect(keks.filter((kek) => kek.state !== "PRIMARY").every((kek) => kek.state === "DESTROYED" && kek.wrapped_material === null), keyId).toBe(true);
      const under = await db.selectFrom("dek_versions").select("kek_version").distinct().where("tenant_id", "=", TENANT).where("key_id", "=", keyId).execute();
      expect(under.map((row) => row.kek_version), keyId).toEqual([primary[0]!.version]);
    }
    // One current master key, every KEK under it, the older ones retired.
    const roots = await db.selectFrom("root_keys").selectAll().execute();
    const current = roots.filter((root) => root.state === "CURRENT");
    expect(current).toHaveLength(1);
    expect(roots.filter((root) => root.state === "RETIRING")).toEqual([]);
    const kekRoots = await db.selectFrom("kek_versions").select("root_key_id").distinct().where("wrapped_material", "is not", null).execute();
    expect(kekRoots.map((row) => row.root_key_id)).toEqual([current[0]!.root_key_id]);
    // No batch applied twice: every job's batches numbered 1..n, their rows adding up to its progress.
    const jobs = await db.selectFrom("jobs").selectAll().execute();
    const batches = await db.selectFrom("job_batches").selectAll().orderBy("job_id").orderBy("batch_no").execute();
    expect(jobs.filter((job) => job.kind === "KEK_REWRAP").length).toBeGreaterThanOrEqual(1);
    for (const job of jobs) {
      const own = batches.filter((batch) => batch.job_id === job.job_id);
      expect(own.map((batch) => batch.batch_no)).toEqual(own.map((_, i) => i + 1));
      expect(own.reduce((sum, batch) => sum + batch.rows, 0)).toBe(job.done);
      expect(job.batches).toBe(own.length);
      // A KEK re-wrap moves exactly what its version held; a superseded master-key re-wrap may stop short.
      if (job.kind === "KEK_REWRAP") expect(job.done).toBe(job.total);
      else expect(job.done).toBeLessThanOrEqual(job.total);
    }

    const tls = join(dataDir, "tls");
    const transport = connectGrpcTransport(
      { url: kms.server.url, ca: await readFile(join(tls, "ca.pem"), "utf8") },
      { cert: await readFile(join(tls, "client.pem"), "utf8"), key: await readFile(join(tls, "client-key.pem"), "utf8") },
    );
    const dataKeys = createClient(DataKeyService, transport);
    const failures: string[] = [];
    await forEachLimited(known, 16, async ({ keyId, reference, plaintext }) => {
      try {
        const answer = await dataKeys.decrypt({ tenantId: TENANT, keyId, reference });
        if (!Buffer.from(answer.plaintext).equals(plaintext)) failures.push(`${keyId}: another key`);
      } catch (error) {
        failures.push(`${keyId}: ${String(error)}`);
      }
    });
    expect(failures.slice(0, 5)).toEqual([]);
    expect(failures).toHaveLength(0);
    await kms.stop(1_000);
    kms = undefined;
  }, 900_000);
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

/** A small seeded generator, so a failing run can be replayed with its seed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

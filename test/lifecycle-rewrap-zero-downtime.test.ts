/**
 * Zero downtime, on PostgreSQL and on PGlite: while the KEK_REWRAP jobs
 * re-wrap a key of 2,000 DEK versions batch by batch (two lanes side by side
 * on PostgreSQL; the key rotated again in the middle, DEK and KEK), callers
 * keep calling GenerateDataKey and Decrypt of every live version through the
 * RPC layer. Not one call may fail or answer a wrong key.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KekVersionState } from "../gen/matih/kms/v1/resources_pb.js";
import { claimJob } from "../server/src/jobs/job-store.js";
import { kekRewrapJob } from "../server/src/jobs/kek-rewrap.js";
import { engines } from "./support/databases.js";
import { seedDekVersions } from "./support/dek-seeding.js";
import { waitUntil } from "./support/e2e-process.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";

const TENANT = "always-on";
const KEY = "busy";
const DEKS = 2_000;
/** With batches of 30 rows, about 85 batches: some 2,500 Decrypt calls while the re-wrap runs, more than the 2,001 versions. */
const DECRYPTS_PER_BATCH = 30;

describe.each(engines)("zero downtime during a re-wrap on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    // No KEK cache: every call reads the KEK material from the same row set as its DEK, even as the old KEK is destroyed.
    kms = await createTestKms(engine, { kekCache: { maxEntries: 0, maxAgeMs: 0 } });
  });
  afterAll(async () => {
    await kms?.close();
  });

  it(`GenerateDataKey and Decrypt of every live version keep answering, correctly, while ${DEKS} DEK versions are re-wrapped (with a DEK and a KEK rotation in the middle)`, async () => {
    const { keys, dataKeys } = kms.clients();
    await keys.createKey({ tenantId: TENANT, keyId: KEY });
    const first = await dataKeys.generateDataKey({ tenantId: TENANT, keyId: KEY });
    const seeded = await seedDekVersions(kms.database.db, kms.context.rootProvider, { tenantId: TENANT, keyId: KEY }, DEKS, kms.clock.now());
    const live = [
      { reference: Buffer.from(first.reference), plaintext: Buffer.from(first.plaintext), version: first.dekVersion },
      ...seeded.map((dek) => ({ reference: dek.reference, plaintext: dek.plaintext, version: dek.version })),
    ];

    const failures: string[] = [];
    const counts = { generate: 0, decrypt: 0 };
    const decryptedVersions = new Set<number>();
    const decryptedDuringRewrap = new Set<number>();
    let generatedDuringRewrap = 0;
    let rewrapRunning = true;
    let stop = false;

    // The lanes share one cursor, so every run of live.length calls asks for every version once.
    let cursor = 0;
    const decryptLoop = async (): Promise<void> => {
      while (!stop) {
        const dek = live[cursor++ % live.length]!;
        try {
          const answer = await dataKeys.decrypt({ tenantId: TENANT, keyId: KEY, reference: dek.reference });
          if (!Buffer.from(answer.plaintext).equals(dek.plaintext)) failures.push(`Decrypt of version ${dek.version} answered another key`);
          decryptedVersions.add(dek.version);
        } catch (error) {
          failures.push(`Decrypt of version ${dek.version}: ${String(error)}`);
        }
        counts.decrypt++;
        await yieldToEventLoop();
        if (rewrapRunning) decryptedDuringRewrap.add(dek.version);
      }
    };
    const generateLoop = async (): Promise<void> => {
      while (!stop) {
        try {
          const answer = await dataKeys.generateDataKey({ tenantId: TENANT, keyId: KEY });
          // A version seen for the first time (after the rotation) joins the versions being decrypted.
          if (!live.some((dek) => dek.version === answer.dekVersion)) {
            live.push({ reference: Buffer.from(answer.reference), plaintext: Buffer.from(answer.plaintext), version: answer.dekVersion });
          }
        } catch (error) {
          failures.push(`GenerateDataKey: ${String(error)}`);
        }
        counts.generate++;
        await yieldToEventLoop();
        if (rewrapRunning) generatedDuringRewrap++;
      }
    };

    const callers = Promise.all([generateLoop(), ...Array.from({ length: 4 }, decryptLoop)]);

    // The re-wrap goes batch by batch, each batch only after the callers made DECRYPTS_PER_BATCH more
    // Decrypt calls: however fast or loaded the machine, the calls and the batches interleave all along.
    let decryptsAtLastBatch = 0;
    const gate = async (): Promise<void> => {
      while (counts.decrypt - decryptsAtLastBatch < DECRYPTS_PER_BATCH) await new Promise((resolve) => setTimeout(resolve, 1));
      decryptsAtLastBatch = counts.decrypt;
    };
    const settings = { workerId: "zero-downtime", batchSize: 30, leaseMs: 600_000, concurrency: 1 };
    const finishedJobs: number[] = [];
    const rewrapLane = async (): Promise<void> => {
      for (;;) {
        const job = await claimJob(kms.database.db, { workerId: settings.workerId, now: kms.clock.now(), leaseMs: settings.leaseMs, excluding: finishedJobs });
        if (job === undefined) return;
        const session = await kekRewrapJob.open(kms.context, job, settings);
        try {
          for (;;) {
            await gate();
            if ((await session.runBatch()) !== "applied") break;
          }
        } finally {
          session.close();
          finishedJobs.push(Number(job.job_id));
        }
      }
    };
    const jobStates = () => kms.database.db.selectFrom("jobs").select(["state", "done", "total"]).where("key_id", "=", KEY).orderBy("job_id").execute();
    try {
      await keys.rotateKey({ tenantId: TENANT, keyId: KEY, rotateKek: true });
      // Two lanes on PostgreSQL: batches of one job run side by side there.
      const lanes = Promise.all(Array.from({ length: engine.name === "postgres" ? 2 : 1 }, rewrapLane));
      await waitUntil("a quarter of the re-wrap", 300_000, async () => {
        const [job] = await jobStates();
        return job !== undefined && job.done >= job.total / 4 ? true : undefined;
      }, 5);
      await keys.rotateKey({ tenantId: TENANT, keyId: KEY });
      await keys.rotateKey({ tenantId: TENANT, keyId: KEY, rotateKek: true });
      await lanes;
      expect((await jobStates()).map((job) => job.state)).toEqual(["DONE", "DONE"]);
      rewrapRunning = false;
      // One more full round of every live version after the old KEKs were destroyed.
      const after = cursor;
      await waitUntil("a full round of Decrypt after the re-wrap", 300_000, async () => (cursor - after >= live.length + 4 ? true : undefined), 5);
    } finally {
      stop = true;
      await callers;
    }

    expect(failures.slice(0, 5)).toEqual([]);
    expect(failures).toHaveLength(0);
    // The calls really overlapped the re-wrap: every version there was was decrypted while it ran; and every version since.
    expect(decryptedDuringRewrap.size).toBeGreaterThanOrEqual(DEKS + 1);
    expect(generatedDuringRewrap).toBeGreaterThan(0);
    expect(decryptedVersions.size).toBe(live.length);
    // Version 1, the seeded versions, and (as GenerateDataKey met them) those the three rotations made, down to the last.
    expect(live.length).toBeGreaterThanOrEqual(DEKS + 2);
    expect(live.some((dek) => dek.version === DEKS + 4)).toBe(true);

    const { key } = await keys.getKey({ tenantId: TENANT, keyId: KEY });
    expect(key?.kekVersions.map((v) => v.state)).toEqual([KekVersionState.DESTROYED, KekVersionState.DESTROYED, KekVersionState.PRIMARY]);
    expect(new Set(key?.dekVersions.map((v) => v.kekVersion))).toEqual(new Set([3]));
  }, 600_000);
});

/** PGlite answers through microtasks alone: a caller loop must let timers and other callers in, as sockets would. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

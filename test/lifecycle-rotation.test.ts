/**
 * Scheduled rotation and UpdateKey, on PostgreSQL and on PGlite: a year of
 * rotations driven by the manual clock, a failing key that blocks nobody,
 * replicas that never rotate a key twice, and policy changes that move the
 * schedule.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyState } from "../gen/matih/kms/v1/resources_pb.js";
import { runPeriodicTasksOnce } from "../server/src/jobs/background-workers.js";
import { periodicTasks } from "../server/src/jobs/periodic-tasks.js";
import { runDueRotations } from "../server/src/jobs/rotation-scheduler.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
import { DAY_MS, DAY_S, dekRows, dekStates, eventsOf, failingFor, kekRows, keyRow } from "./support/lifecycle.js";

const days = (n: number) => create(DurationSchema, { seconds: BigInt(n * DAY_S) });
const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });

describe.each(engines)("scheduled rotation and UpdateKey on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    kms = await createTestKms(engine);
  });
  afterAll(async () => {
    await kms?.close();
  });

  const db = () => kms.database.db;
  const rotateDue = () => runDueRotations(kms.context, kms.clock.now());

  it("drives a year of daily scheduler runs: every key rotates exactly when due, never early, and is never out of policy", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "year";
    const policies = {
      standard: { dek: 30, kek: 90 },
      weekly: { dek: 7, kek: 30 },
      slow: { dek: 365, kek: 730 },
    } as const;
    for (const [keyId, p] of Object.entries(policies)) {
      await keys.createKey({ tenantId, keyId, rotationPolicy: { dekRotationPeriod: days(p.dek), kekRotationPeriod: days(p.kek) } });
    }
    const first = await dataKeys.generateDataKey({ tenantId, keyId: "standard" });

    for (let day = 1; day <= 365; day++) {
      kms.clock.advanceDays(1);
      const run = await rotateDue();
      expect(run.failed).toEqual([]);
      // Compliance after every run: no primary version is older than its period.
      const rows = await db()
        .selectFrom("keys as k")
        .innerJoin("dek_versions as d", (j) => j.onRef("d.tenant_id", "=", "k.tenant_id").onRef("d.key_id", "=", "k.key_id").onRef("d.version", "=", "k.primary_dek_version"))
        .innerJoin("kek_versions as e", (j) => j.onRef("e.tenant_id", "=", "k.tenant_id").onRef("e.key_id", "=", "k.key_id").onRef("e.version", "=", "k.primary_kek_version"))
        .select(["k.key_id", "d.create_time as dek_time", "e.create_time as kek_time", "k.next_rotation_time"])
        .where("k.tenant_id", "=", tenantId)
        .execute();
      const now = kms.clock.now().getTime();
      for (const row of rows) {
        const p = policies[row.key_id as keyof typeof policies];
        expect(now - row.dek_time.getTime(), `${row.key_id} DEK age on day ${day}`).toBeLessThan(p.dek * DAY_MS);
        expect(now - row.kek_time.getTime(), `${row.key_id} KEK age on day ${day}`).toBeLessThan(p.kek * DAY_MS);
        expect(row.next_rotation_time!.getTime(), `${row.key_id} next rotation on day ${day}`).toBe(
          Math.min(row.dek_time.getTime() + p.dek * DAY_MS, row.kek_time.getTime() + p.kek * DAY_MS),
        );
      }
    }

    // 30/90 divide the year evenly: DEK on days 30..360 (12), KEK on days 90, 180, 270, 360 (4).
    expect((await dekRows(db(), tenantId, "standard")).length).toBe(13);
    expect((await kekRows(db(), tenantId, "standard")).length).toBe(5);
    expect((await dekRows(db(), tenantId, "slow")).length).toBe(2);
    expect((await kekRows(db(), tenantId, "slow")).length).toBe(1);
    // The weekly key: no DEK rotation early — a gap shorter than the period only where a KEK rotation made it.
    const weeklyDeks = await dekRows(db(), tenantId, "weekly");
    const weeklyKeks = new Set((await kekRows(db(), tenantId, "weekly")).map((k) => k.create_time.getTime()));
    expect(weeklyKeks.size).toBe(13); // KEK every 30 days: days 30..360
    for (let i = 1; i < weeklyDeks.length; i++) {
      const gap = weeklyDeks[i]!.create_time.getTime() - weeklyDeks[i - 1]!.create_time.getTime();
      if (weeklyKeks.has(weeklyDeks[i]!.create_time.getTime())) expect(gap).toBeLessThanOrEqual(7 * DAY_MS);
      else expect(gap).toBe(7 * DAY_MS);
    }
    expect(await eventsOf(db(), tenantId, "standard")).toEqual(expect.arrayContaining(["DEK_ROTATED:13", "KEK_ROTATED"]));
    // The reference from day 0 still decrypts after a year of rotations (its version is decrypt-only, not purged: no purge ran).
    const decrypted = await dataKeys.decrypt({ tenantId, keyId: "standard", reference: first.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(first.plaintext));
  });

  it("records a failing key's error on the key, shows it in GetKey and the status, and rotates every other due key", async () => {
    const { keys } = kms.clients();
    const tenantId = "flaky";
    // Created first, so it is the first key claimed; batches of one make every other key wait behind it.
    await keys.createKey({ tenantId, keyId: "broken" });
    for (const keyId of ["healthy-a", "healthy-b", "healthy-c"]) await keys.createKey({ tenantId, keyId });
    kms.clock.advanceDays(30);
    const failing = { ...kms.context, rootProvider: failingFor(kms.context.rootProvider, new Set(["broken"])), kekCache: createKekCache({ maxEntries: 10, maxAgeMs: 60_000 }) };

    const run = await runDueRotations(failing, kms.clock.now(), { batchSize: 1 });
    expect(run.failed.filter((f) => f.tenantId === tenantId)).toEqual([
      expect.objectContaining({ keyId: "broken", attempts: 1, message: expect.stringContaining("PROVIDER_UNAVAILABLE") }),
    ]);
    expect(run.rotated.filter((r) => r.tenantId === tenantId).map((r) => r.keyId).sort()).toEqual(["healthy-a", "healthy-b", "healthy-c"]);

    const { key } = await keys.getKey({ tenantId, keyId: "broken" });
    expect(key?.primaryDekVersion).toBe(1);
    expect(key?.lastRotationFailure).toMatchObject({ attempts: 1, message: expect.stringContaining("root key provider unreachable") });
    expect(key?.lastRotationFailure?.time?.seconds).toBe(BigInt(kms.clock.now().getTime() / 1000));
    const status = await keys.getEncryptionStatus({ tenantId });
    const broken = status.keys.find((k) => k.keyId === "broken")!;
    expect(broken.rotationOverdue).toBe(true);
    expect(broken.lastRotationFailure?.attempts).toBe(1);
    expect(status.keys.find((k) => k.keyId === "healthy-a")!.lastRotationFailure).toBeUndefined();

    // Retried after a back-off (5 minutes), not on every run; the attempts count up.
    expect((await runDueRotations(failing, kms.clock.now())).failed.filter((f) => f.tenantId === tenantId)).toEqual([]);
    kms.clock.set(new Date(kms.clock.now().getTime() + 5 * 60_000));
    expect((await runDueRotations(failing, kms.clock.now())).failed.map((f) => [f.keyId, f.attempts])).toEqual([["broken", 2]]);

    // Once the provider answers again, the next due run rotates it and clears the failure.
    kms.clock.set(new Date(kms.clock.now().getTime() + 10 * 60_000));
    const healed = await rotateDue();
    expect(healed.rotated.map((r) => r.keyId)).toContain("broken");
    const after = await keys.getKey({ tenantId, keyId: "broken" });
    expect(after.key?.primaryDekVersion).toBe(2);
    expect(after.key?.lastRotationFailure).toBeUndefined();
  });

  it("lets two replicas run the scheduler at once: each due key is rotated exactly once", async () => {
    const { keys } = kms.clients();
    const tenantId = "replicas";
    const ids = Array.from({ length: 12 }, (_, i) => `k${String(i).padStart(2, "0")}`);
    for (const keyId of ids) await keys.createKey({ tenantId, keyId });
    kms.clock.advanceDays(30);
    const replicaB = { ...kms.context, kekCache: createKekCache({ maxEntries: 100, maxAgeMs: 60_000 }) };
    const now = kms.clock.now();
    const [a, b] = await Promise.all([
      runDueRotations(kms.context, now, { batchSize: 3 }),
      runDueRotations(replicaB, now, { batchSize: 3 }),
    ]);
    const rotated = [...a.rotated, ...b.rotated].filter((r) => r.tenantId === tenantId).map((r) => r.keyId);
    expect(rotated.sort()).toEqual(ids);
    for (const keyId of ids) expect((await dekRows(db(), tenantId, keyId)).length).toBe(2);
  });

  it("never rotates a revoked key: revocation clears its next rotation time", async () => {
    const { keys } = kms.clients();
    const tenantId = "sched-revoked";
    await keys.createKey({ tenantId, keyId: "gone" });
    await keys.revokeKey({ tenantId, keyId: "gone" });
    expect((await keyRow(db(), tenantId, "gone")).next_rotation_time).toBeNull();
    kms.clock.advanceDays(31);
    const run = await rotateDue();
    expect([...run.rotated, ...run.failed].filter((r) => r.tenantId === tenantId)).toEqual([]);
    expect((await dekRows(db(), tenantId, "gone")).length).toBe(1);
  });

  describe("UpdateKey", () => {
    it("changes only the masked fields and keeps the rest", async () => {
      const { keys } = kms.clients();
      await keys.createKey({ tenantId: "upd", keyId: "a", description: "before", rotationPolicy: { dekRotationPeriod: days(10) } });
      const { key } = await keys.updateKey({
        tenantId: "upd",
        keyId: "a",
        updateMask: mask("description"),
        description: "after",
        rotationPolicy: { dekRotationPeriod: days(5) }, // not in the mask: ignored
      });
      expect(key?.description).toBe("after");
      expect(key?.rotationPolicy?.dekRotationPeriod?.seconds).toBe(BigInt(10 * DAY_S));
    });

    it("merges a whole policy (unset periods keep theirs) and resets a named leaf left unset to the default", async () => {
      const { keys } = kms.clients();
      await keys.createKey({
        tenantId: "upd",
        keyId: "b",
        rotationPolicy: { dekRotationPeriod: days(10), kekRotationPeriod: days(100) },
        lifecyclePolicy: { dekGracePeriod: days(3), decryptQuietWindow: days(4), revocationWaitingPeriod: days(60) },
      });
      const merged = await keys.updateKey({ tenantId: "upd", keyId: "b", updateMask: mask("rotation_policy", "lifecycle_policy"), rotationPolicy: { dekRotationPeriod: days(20) }, lifecyclePolicy: { revocationWaitingPeriod: days(8) } });
      expect(merged.key?.rotationPolicy?.dekRotationPeriod?.seconds).toBe(BigInt(20 * DAY_S));
      expect(merged.key?.rotationPolicy?.kekRotationPeriod?.seconds).toBe(BigInt(100 * DAY_S));
      expect(merged.key?.lifecyclePolicy?.dekGracePeriod?.seconds).toBe(BigInt(3 * DAY_S));
      expect(merged.key?.lifecyclePolicy?.revocationWaitingPeriod?.seconds).toBe(BigInt(8 * DAY_S));

      const reset = await keys.updateKey({ tenantId: "upd", keyId: "b", updateMask: mask("rotation_policy.kek_rotation_period", "lifecycle_policy.dek_grace_period") });
      expect(reset.key?.rotationPolicy?.kekRotationPeriod?.seconds).toBe(BigInt(90 * DAY_S));
      expect(reset.key?.rotationPolicy?.dekRotationPeriod?.seconds).toBe(BigInt(20 * DAY_S));
      expect(reset.key?.lifecyclePolicy?.dekGracePeriod?.seconds).toBe(BigInt(7 * DAY_S));
      expect(reset.key?.lifecyclePolicy?.decryptQuietWindow?.seconds).toBe(BigInt(4 * DAY_S));
    });

    it.each([
      ["rotation_policy.dek_rotation_period", { updateMask: mask("rotation_policy"), rotationPolicy: { dekRotationPeriod: days(0.5) } }],
      ["rotation_policy.kek_rotation_period", { updateMask: mask("rotation_policy.kek_rotation_period"), rotationPolicy: { kekRotationPeriod: days(731) } }],
      ["lifecycle_policy.revocation_waiting_period", { updateMask: mask("lifecycle_policy"), lifecyclePolicy: { revocationWaitingPeriod: days(6) } }],
      ["lifecycle_policy.revocation_waiting_period", { updateMask: mask("lifecycle_policy"), lifecyclePolicy: { revocationWaitingPeriod: days(91) } }],
      ["lifecycle_policy.decrypt_quiet_window", { updateMask: mask("lifecycle_policy.decrypt_quiet_window"), lifecyclePolicy: { decryptQuietWindow: days(91) } }],
      ["lifecycle_policy.dek_grace_period", { updateMask: mask("lifecycle_policy"), lifecyclePolicy: { dekGracePeriod: days(0) } }],
      ["description", { updateMask: mask("description", "rotation_policy"), description: "d".repeat(257), rotationPolicy: { dekRotationPeriod: days(2) } }],
      ["update_mask", { updateMask: mask() }],
      ["update_mask", { updateMask: mask("description", "state") }],
      ["update_mask", { updateMask: mask("rotationPolicy") }],
      ["customer_key", { updateMask: mask("customer_key") }],
    ])("refuses an invalid %s with INVALID_FIELD naming it, and stores nothing", async (field, request) => {
      const { keys } = kms.clients();
      const tenantId = "upd-refused";
      const keyId = `k${Math.random().toString(36).slice(2, 8)}`;
      await keys.createKey({ tenantId, keyId });
      const before = await keyRow(db(), tenantId, keyId);
      await expectRefusal(keys.updateKey({ tenantId, keyId, ...request }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field });
      expect(await keyRow(db(), tenantId, keyId)).toEqual(before);
    });

    it("answers KEY_NOT_FOUND for an unknown key", async () => {
      await expectRefusal(kms.clients().keys.updateKey({ tenantId: "upd", keyId: "nope", updateMask: mask("description") }), {
        code: Code.NotFound,
        reason: "KEY_NOT_FOUND",
        field: "key_id",
      });
    });

    it("moves next_rotation_time with the policy: a shortened period makes the very next run rotate", async () => {
      const { keys } = kms.clients();
      const tenantId = "upd-schedule";
      const created = await keys.createKey({ tenantId, keyId: "k" });
      const createMs = Number(created.key!.createTime!.seconds) * 1000;
      expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(createMs + 30 * DAY_MS);
      kms.clock.advanceDays(10);
      expect((await rotateDue()).rotated.filter((r) => r.tenantId === tenantId)).toEqual([]);

      const updated = await keys.updateKey({ tenantId, keyId: "k", updateMask: mask("rotation_policy.dek_rotation_period"), rotationPolicy: { dekRotationPeriod: days(7) } });
      expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(createMs + 7 * DAY_MS);
      expect(updated.key?.nextDekRotationTime?.seconds).toBe(BigInt((createMs + 7 * DAY_MS) / 1000));
      expect((await rotateDue()).rotated.filter((r) => r.tenantId === tenantId).map((r) => r.keyId)).toEqual(["k"]);
      const rotatedAt = kms.clock.now().getTime();
      expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(rotatedAt + 7 * DAY_MS);

      // Lengthening it pushes the next rotation out again.
      await keys.updateKey({ tenantId, keyId: "k", updateMask: mask("rotation_policy"), rotationPolicy: { dekRotationPeriod: days(60), kekRotationPeriod: days(200) } });
      expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(rotatedAt + 60 * DAY_MS);
      const { key } = await keys.getKey({ tenantId, keyId: "k" });
      expect(key?.state).toBe(KeyState.ENABLED);
    });
  });
  // Last in the file: the task list includes event pruning, which drops the older events of the tests above.
  it("runs scheduled rotation, purge and destruction from the background loop's task list, and logs a failing key", async () => {
    const { keys } = kms.clients();
    const tenantId = "loop";
    const waiting = { revocationWaitingPeriod: days(7) };
    for (const keyId of ["due", "superseded", "revoked", "broken"]) await keys.createKey({ tenantId, keyId, lifecyclePolicy: waiting });
    await keys.rotateKey({ tenantId, keyId: "superseded" });
    await keys.revokeKey({ tenantId, keyId: "revoked" });
    kms.clock.advanceDays(30);
    const warnings: { message: string; fields: Record<string, unknown> | undefined }[] = [];
    const logger = { info: () => undefined, error: () => undefined, warn: (message: string, fields?: Record<string, unknown>) => void warnings.push({ message, fields }) };
    const context = { ...kms.context, rootProvider: failingFor(kms.context.rootProvider, new Set(["broken"])) };

    await runPeriodicTasksOnce(context, periodicTasks({ rootKeyRotationDays: 0 }), logger);
    expect((await dekRows(db(), tenantId, "due")).length).toBe(2);
    expect(await dekStates(db(), tenantId, "superseded")).toEqual([[1, "PURGED"], [2, "DECRYPT_ONLY"], [3, "PRIMARY"]]);
    expect((await keyRow(db(), tenantId, "revoked")).state).toBe("DESTROYED");
    expect((await keyRow(db(), tenantId, "broken")).rotation_failure_attempts).toBe(1);
    const failure = warnings.find((w) => w.fields?.["task"] === "scheduled-rotation");
    expect((failure?.fields?.["err"] as Error | undefined)?.message).toContain("loop/broken");
  });
});

/**
 * Revocation, restore, destruction and the revocation of a single DEK
 * version, on PostgreSQL and on PGlite.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DekVersionState, KekVersionState, KeyState, StoreKind } from "../gen/matih/kms/v1/resources_pb.js";
import { runDestruction } from "../server/src/jobs/destruction.js";
import { runPurge } from "../server/src/jobs/purge.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import { revokeDekVersion } from "../server/src/service/revoke-dek-version.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
import { DAY_MS, DAY_S, dekRows, dekStates, eventsOf, failingFor, kekRows, keyRow } from "./support/lifecycle.js";

const days = (n: number) => create(DurationSchema, { seconds: BigInt(n * DAY_S) });
const toSeconds = (date: Date) => BigInt(Math.floor(date.getTime() / 1000));

describe.each(engines)("revocation, restore and destruction on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    kms = await createTestKms(engine);
  });
  afterAll(async () => {
    await kms?.close();
  });

  const db = () => kms.database.db;
  const advance = (ms: number) => kms.clock.set(new Date(kms.clock.now().getTime() + ms));

  it("restores a revoked key during its waiting period: enabled again, old references decrypt, next rotation recomputed", async () => {
    const { keys, dataKeys } = kms.clients();
    const tenantId = "restore";
    const created = await keys.createKey({ tenantId, keyId: "k", lifecyclePolicy: { revocationWaitingPeriod: days(10) } });
    const createdAt = Number(created.key!.createTime!.seconds) * 1000;
    const ref = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    const revoked = await keys.revokeKey({ tenantId, keyId: "k" });
    expect(revoked.key?.scheduledDestroyTime?.seconds).toBe(toSeconds(kms.clock.now()) + BigInt(10 * DAY_S));
    expect((await keyRow(db(), tenantId, "k")).next_rotation_time).toBeNull();

    advance(10 * DAY_MS - 1000);
    const { key } = await keys.restoreKey({ tenantId, keyId: "k" });
    expect(key).toMatchObject({ state: KeyState.ENABLED });
    expect(key?.revokeTime).toBeUndefined();
    expect(key?.scheduledDestroyTime).toBeUndefined();
    expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(createdAt + 30 * DAY_MS);
    expect(await eventsOf(db(), tenantId, "k")).toEqual(["KEY_CREATED:1", "KEY_REVOKED", "KEY_RESTORED"]);
    const decrypted = await dataKeys.decrypt({ tenantId, keyId: "k", reference: ref.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(ref.plaintext));

    // Restored keys are not destroyed when the old schedule comes round.
    advance(2 * DAY_MS);
    expect((await runDestruction(kms.context, kms.clock.now())).destroyed.filter((k) => k.tenantId === tenantId)).toEqual([]);
    await expectRefusal(keys.restoreKey({ tenantId, keyId: "k" }), { code: Code.FailedPrecondition, reason: "INVALID_STATE_TRANSITION" });
  });

  it("destroys a revoked key once its waiting period is over: all material erased, a tombstone kept, restore refused", async () => {
    const { keys, dataKeys, datasets } = kms.clients();
    const tenantId = "destroy";
    await keys.createKey({ tenantId, keyId: "k", description: "to be shredded" });
    const ref = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
    await keys.rotateKey({ tenantId, keyId: "k", rotateKek: true });
    await keys.rotateKey({ tenantId, keyId: "k" });
    await keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 2 });
    await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "ds", storeKind: StoreKind.KAFKA });
    const revokedAt = kms.clock.now();
    await keys.revokeKey({ tenantId, keyId: "k" });

    advance(30 * DAY_MS - 1000);
    expect((await runDestruction(kms.context, kms.clock.now())).destroyed.filter((k) => k.tenantId === tenantId)).toEqual([]);
    expect((await keyRow(db(), tenantId, "k")).state).toBe("REVOKED");
    advance(1000);
    // The waiting period is over: no restore, even before the destruction job has run.
    const late = await expectRefusal(keys.restoreKey({ tenantId, keyId: "k" }), { code: Code.FailedPrecondition, reason: "INVALID_STATE_TRANSITION" });
    expect(late.rawMessage).toContain("waiting period ended");

    const run = await runDestruction(kms.context, kms.clock.now());
    expect(run.destroyed.filter((k) => k.tenantId === tenantId)).toEqual([{ tenantId, keyId: "k" }]);
    const row = await keyRow(db(), tenantId, "k");
    expect(row).toMatchObject({ state: "DESTROYED", destroy_time: kms.clock.now(), next_rotation_time: null, description: "to be shredded" });
    for (const kek of await kekRows(db(), tenantId, "k")) expect(kek).toMatchObject({ state: "DESTROYED", wrapped_material: null, public_key: null });
    for (const dek of await dekRows(db(), tenantId, "k")) expect(dek).toMatchObject({ state: "PURGED", wrapped_material: null });
    expect((await dekRows(db(), tenantId, "k"))[1]!.revoke_time).not.toBeNull(); // the revocation stays on record
    expect((await eventsOf(db(), tenantId, "k")).slice(-2)).toEqual(["KEY_REVOKED", "KEY_DESTROYED"]);

    const { key } = await keys.getKey({ tenantId, keyId: "k" });
    expect(key).toMatchObject({ state: KeyState.DESTROYED, description: "to be shredded" });
    expect(key?.destroyTime?.seconds).toBe(toSeconds(kms.clock.now()));
    expect(key?.revokeTime?.seconds).toBe(toSeconds(revokedAt));
    expect(key?.kekVersions.every((v) => v.state === KekVersionState.DESTROYED)).toBe(true);
    expect(key?.dekVersions.every((v) => v.state === DekVersionState.PURGED)).toBe(true);
    expect((await datasets.listDatasets({ tenantId, keyId: "k" })).datasets.map((d) => d.datasetId)).toEqual(["ds"]);
    expect((await keys.getEncryptionStatus({ tenantId })).keys[0]?.state).toBe(KeyState.DESTROYED);

    // Every later use answers KEY_DESTROYED, saying so.
    const uses: [string, () => Promise<unknown>][] = [
      ["generateDataKey", () => dataKeys.generateDataKey({ tenantId, keyId: "k" })],
      ["decrypt", () => dataKeys.decrypt({ tenantId, keyId: "k", reference: ref.reference })],
      ["rotateKey", () => keys.rotateKey({ tenantId, keyId: "k" })],
      ["revokeKey", () => keys.revokeKey({ tenantId, keyId: "k" })],
      ["restoreKey", () => keys.restoreKey({ tenantId, keyId: "k" })],
      ["updateKey", () => keys.updateKey({ tenantId, keyId: "k", updateMask: create(FieldMaskSchema, { paths: ["description"] }) })],
      ["revokeDekVersion", () => keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 })],
      ["registerDataset", () => datasets.registerDataset({ tenantId, keyId: "k", datasetId: "new", storeKind: StoreKind.S3 })],
      ["reportInventory", () => datasets.reportInventory({ tenantId, keyId: "k", datasetId: "ds", counts: [] })],
    ];
    for (const [name, call] of uses) {
      const refused = await expectRefusal(call(), { code: Code.FailedPrecondition, reason: "KEY_DESTROYED" });
      expect(refused.rawMessage, name).toMatch(/destroyed/);
    }
    await expectRefusal(keys.createKey({ tenantId, keyId: "k" }), { code: Code.AlreadyExists, reason: "KEY_ALREADY_EXISTS", field: "key_id" });
    // Running the job again changes nothing.
    expect((await runDestruction(kms.context, kms.clock.now())).destroyed.filter((k) => k.tenantId === tenantId)).toEqual([]);
  });

  it.each([
    [7, true],
    [90, true],
    [6, false],
    [91, false],
  ])("takes a waiting period of %i days per key: allowed %s", async (waitDays, allowed) => {
    const { keys } = kms.clients();
    const tenantId = "waiting";
    const keyId = `w${waitDays}`;
    const request = { tenantId, keyId, lifecyclePolicy: { revocationWaitingPeriod: days(waitDays) } };
    if (!allowed) {
      await expectRefusal(keys.createKey(request), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "lifecycle_policy.revocation_waiting_period" });
      return;
    }
    await keys.createKey(request);
    const { key } = await keys.revokeKey({ tenantId, keyId });
    expect(key?.scheduledDestroyTime?.seconds).toBe(toSeconds(kms.clock.now()) + BigInt(waitDays * DAY_S));
  });

  describe("RevokeDekVersion", () => {
    it("stops a decrypt-only version at once and reports it, while the key keeps working with its other versions", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "dek-revoke";
      await keys.createKey({ tenantId, keyId: "k" });
      const v1 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      await dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference }); // the KEK is cached now
      await keys.rotateKey({ tenantId, keyId: "k" });
      const v2 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });

      const { key } = await keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 });
      expect(key?.dekVersions.map((v) => v.state)).toEqual([DekVersionState.REVOKED, DekVersionState.PRIMARY]);
      expect(key?.dekVersions[0]?.revokeTime?.seconds).toBe(toSeconds(kms.clock.now()));
      await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference }), {
        code: Code.FailedPrecondition,
        reason: "DEK_VERSION_REVOKED",
        field: "reference",
      });
      expect((await dataKeys.decrypt({ tenantId, keyId: "k", reference: v2.reference })).dekVersion).toBe(2);
      expect((await dataKeys.generateDataKey({ tenantId, keyId: "k" })).dekVersion).toBe(2);
      expect(await eventsOf(db(), tenantId, "k")).toEqual(["KEY_CREATED:1", "DEK_ROTATED:2", "DEK_VERSION_REVOKED:1"]);

      // Idempotent: revoking it again changes nothing and reports nothing new.
      await keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 });
      expect(await eventsOf(db(), tenantId, "k")).toHaveLength(3);
      const status = (await keys.getEncryptionStatus({ tenantId })).keys[0]!;
      expect(status.dekVersions[0]?.state).toBe(DekVersionState.REVOKED);
      expect(status.dekVersionHoldbacks).toEqual([]);
    });

    it("rotates a primary version away first, in the same transaction, then revokes it", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "dek-revoke-primary";
      await keys.createKey({ tenantId, keyId: "k" });
      const v1 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      const { key } = await keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 });
      expect(key?.primaryDekVersion).toBe(2);
      expect(key?.dekVersions.map((v) => [v.version, v.state])).toEqual([
        [1, DekVersionState.REVOKED],
        [2, DekVersionState.PRIMARY],
      ]);
      expect(await eventsOf(db(), tenantId, "k")).toEqual(["KEY_CREATED:1", "DEK_ROTATED:2", "DEK_VERSION_REVOKED:1"]);
      expect((await keyRow(db(), tenantId, "k")).next_rotation_time?.getTime()).toBe(kms.clock.now().getTime() + 30 * DAY_MS);
      const fresh = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      expect(fresh.dekVersion).toBe(2);
      expect(Buffer.from(fresh.plaintext)).not.toEqual(Buffer.from(v1.plaintext));
      expect((await dataKeys.decrypt({ tenantId, keyId: "k", reference: fresh.reference })).dekVersion).toBe(2);
      await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference }), { code: Code.FailedPrecondition, reason: "DEK_VERSION_REVOKED" });
    });

    it("changes nothing when the rotation of the primary fails: the version stays primary and usable", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "dek-revoke-atomic";
      await keys.createKey({ tenantId, keyId: "k" });
      const v1 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      const broken = { ...kms.context, rootProvider: failingFor(kms.context.rootProvider, new Set(["k"])), kekCache: createKekCache({ maxEntries: 10, maxAgeMs: 60_000 }) };
      await expect(revokeDekVersion(broken, { tenantId, keyId: "k", dekVersion: 1 })).rejects.toMatchObject({ reason: "PROVIDER_UNAVAILABLE" });
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PRIMARY"]]);
      expect(await eventsOf(db(), tenantId, "k")).toEqual(["KEY_CREATED:1"]);
      expect((await dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference })).dekVersion).toBe(1);
    });

    it("refuses an unknown version, version 0, a purged version and a revoked key, naming the field", async () => {
      const { keys } = kms.clients();
      const tenantId = "dek-revoke-refused";
      await keys.createKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      await expectRefusal(keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 7 }), { code: Code.NotFound, reason: "DEK_VERSION_NOT_FOUND", field: "dek_version" });
      await expectRefusal(keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 0 }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "dek_version" });
      advance(7 * DAY_MS);
      await runPurge(kms.context, kms.clock.now());
      expect((await dekStates(db(), tenantId, "k"))[0]).toEqual([1, "PURGED"]);
      await expectRefusal(keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 }), {
        code: Code.FailedPrecondition,
        reason: "INVALID_STATE_TRANSITION",
        field: "dek_version",
      });
      await keys.revokeKey({ tenantId, keyId: "k" });
      await expectRefusal(keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 2 }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
    });

    it("never purges a revoked version: it stays REVOKED, its material erased only with the key", async () => {
      const { keys } = kms.clients();
      const tenantId = "dek-revoke-purge";
      await keys.createKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      await keys.revokeDekVersion({ tenantId, keyId: "k", dekVersion: 1 });
      advance(30 * DAY_MS);
      await runPurge(kms.context, kms.clock.now());
      const [v1] = await dekRows(db(), tenantId, "k");
      expect(v1).toMatchObject({ state: "REVOKED", purge_time: null });
      expect(v1!.wrapped_material).not.toBeNull();
    });
  });
});

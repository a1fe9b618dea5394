/**
 * The key hierarchy through the service implementations (in process, through
 * the same RPC guard as the server), on PostgreSQL and on PGlite.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KekAlgorithm, KekVersionState, DekVersionState, KeyState } from "../gen/matih/kms/v1/resources_pb.js";
import { silentLogger } from "../server/src/api/logger.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, tenantCaller, type TestKms } from "./support/kms-harness.js";

const DAY = 86_400n;

describe.each(engines)("key lifecycle on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    kms = await createTestKms(engine);
  });
  afterAll(async () => {
    await kms?.close();
  });

  // Kept from the first GenerateDataKey: a reference to DEK version 1, used after rotations.
  let firstReference: Uint8Array = new Uint8Array();

  const countRows = async (table: "tenants" | "keys" | "kek_versions" | "dek_versions") =>
    Number((await kms.database.db.selectFrom(table).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);

  it("creates an AES-256 key with KEK version 1, DEK version 1 and the default 30/90-day policy", async () => {
    const { keys } = kms.clients();
    const { key } = await keys.createKey({ tenantId: "acme", keyId: "pii", description: "customer PII" });
    expect(key).toMatchObject({
      tenantId: "acme",
      keyId: "pii",
      description: "customer PII",
      kekAlgorithm: KekAlgorithm.AES_256,
      state: KeyState.ENABLED,
      primaryDekVersion: 1,
      primaryKekVersion: 1,
    });
    expect(key?.rotationPolicy?.dekRotationPeriod?.seconds).toBe(30n * DAY);
    expect(key?.rotationPolicy?.kekRotationPeriod?.seconds).toBe(90n * DAY);
    expect(key?.kekVersions.map((v) => [v.version, v.state])).toEqual([[1, KekVersionState.PRIMARY]]);
    expect(key?.dekVersions.map((v) => [v.version, v.state, v.kekVersion])).toEqual([[1, DekVersionState.PRIMARY, 1]]);
    expect(key?.nextDekRotationTime?.seconds).toBe(key!.createTime!.seconds + 30n * DAY);
  });

  it("hands out the primary DEK with a reference that decrypts to the same 32 bytes", async () => {
    const { dataKeys } = kms.clients();
    const generated = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    firstReference = generated.reference;
    expect(generated.plaintext.length).toBe(32);
    expect(generated.dekVersion).toBe(1);
    const again = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    expect(Buffer.from(again.plaintext)).toEqual(Buffer.from(generated.plaintext));
    const decrypted = await dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: generated.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(generated.plaintext));
    expect(decrypted.dekVersion).toBe(1);
  });

  it("refuses a second key with the same id and changes nothing", async () => {
    const before = await countRows("dek_versions");
    await expectRefusal(kms.clients().keys.createKey({ tenantId: "acme", keyId: "pii" }), {
      code: Code.AlreadyExists,
      reason: "KEY_ALREADY_EXISTS",
      field: "key_id",
    });
    expect(await countRows("dek_versions")).toBe(before);
  });

  it.each([
    ["tenant_id", { tenantId: "bad tenant", keyId: "k" }],
    ["tenant_id", { tenantId: "x".repeat(65), keyId: "k" }],
    ["key_id", { tenantId: "fresh", keyId: "" }],
    ["key_id", { tenantId: "fresh", keyId: "../etc/passwd" }],
    ["description", { tenantId: "fresh", keyId: "k", description: "d".repeat(257) }],
  ])("refuses a malformed %s on CreateKey and stores nothing", async (field, request) => {
    const before = await Promise.all([countRows("tenants"), countRows("keys")]);
    await expectRefusal(kms.clients().keys.createKey(request), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field });
    expect(await Promise.all([countRows("tenants"), countRows("keys")])).toEqual(before);
  });

  it("refuses a rotation policy outside its bounds, naming the period, and stores nothing", async () => {
    const before = await countRows("keys");
    await expectRefusal(
      kms.clients().keys.createKey({ tenantId: "fresh", keyId: "k", rotationPolicy: { dekRotationPeriod: { seconds: 60n } } }),
      { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "rotation_policy.dek_rotation_period" },
    );
    expect(await countRows("keys")).toBe(before);
  });

  it("keeps a per-key rotation policy and dates the next rotations from it", async () => {
    const { key } = await kms.clients().keys.createKey({
      tenantId: "acme",
      keyId: "short-lived",
      rotationPolicy: { dekRotationPeriod: { seconds: 7n * DAY }, kekRotationPeriod: { seconds: 30n * DAY } },
    });
    expect(key?.nextDekRotationTime?.seconds).toBe(key!.createTime!.seconds + 7n * DAY);
    expect(key?.nextKekRotationTime?.seconds).toBe(key!.createTime!.seconds + 30n * DAY);
  });

  it("answers KEY_NOT_FOUND for an unknown key and TENANT_NOT_FOUND for an unknown tenant", async () => {
    const { keys, dataKeys } = kms.clients();
    await expectRefusal(keys.getKey({ tenantId: "acme", keyId: "nope" }), { code: Code.NotFound, reason: "KEY_NOT_FOUND", field: "key_id" });
    await expectRefusal(keys.getKey({ tenantId: "nobody", keyId: "pii" }), { code: Code.NotFound, reason: "TENANT_NOT_FOUND" });
    await expectRefusal(keys.getEncryptionStatus({ tenantId: "nobody" }), { code: Code.NotFound, reason: "TENANT_NOT_FOUND" });
    await expectRefusal(dataKeys.generateDataKey({ tenantId: "acme", keyId: "nope" }), { code: Code.NotFound, reason: "KEY_NOT_FOUND" });
  });

  it("rotates the DEK: the new version is primary, the old one decrypt-only and its references still decrypt", async () => {
    const { keys, dataKeys } = kms.clients();
    const before = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    const { key } = await keys.rotateKey({ tenantId: "acme", keyId: "pii" });
    expect(key?.primaryDekVersion).toBe(2);
    expect(key?.dekVersions.map((v) => [v.version, v.state])).toEqual([
      [1, DekVersionState.DECRYPT_ONLY],
      [2, DekVersionState.PRIMARY],
    ]);
    expect(key?.dekVersions[0]?.rotateTime).toBeDefined();
    const after = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    expect(after.dekVersion).toBe(2);
    expect(Buffer.from(after.plaintext).equals(Buffer.from(before.plaintext))).toBe(false);
    const old = await dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: before.reference });
    expect(Buffer.from(old.plaintext)).toEqual(Buffer.from(before.plaintext));
    expect(old.dekVersion).toBe(1);
  });

  it("rotates the KEK: the old version retires, the background re-wrap moves every DEK under the new one and erases the old KEK's material, and every reference still decrypts", async () => {
    const { keys, dataKeys } = kms.clients();
    const v1 = await dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: firstReference });
    const v2 = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    const wrappedBefore = await kms.database.db.selectFrom("dek_versions").select(["version", "wrapped_material"]).where("key_id", "=", "pii").where("tenant_id", "=", "acme").orderBy("version").execute();

    const { key: rotated } = await keys.rotateKey({ tenantId: "acme", keyId: "pii", rotateKek: true });
    expect(rotated?.primaryKekVersion).toBe(2);
    expect(rotated?.primaryDekVersion).toBe(3);
    expect(rotated?.kekVersions.map((v) => [v.version, v.state])).toEqual([
      [1, KekVersionState.RETIRING],
      [2, KekVersionState.PRIMARY],
    ]);
    await drainJobs(kms.context, { workerId: "test", batchSize: 1_000, leaseMs: 30_000, concurrency: 1 }, { logger: silentLogger });
    const { key } = await keys.getKey({ tenantId: "acme", keyId: "pii" });
    expect(key?.kekVersions.map((v) => [v.version, v.state])).toEqual([
      [1, KekVersionState.DESTROYED],
      [2, KekVersionState.PRIMARY],
    ]);
    expect(key?.dekVersions.every((v) => v.kekVersion === 2)).toBe(true);

    const kekRows = await kms.database.db.selectFrom("kek_versions").select(["version", "wrapped_material"]).where("key_id", "=", "pii").where("tenant_id", "=", "acme").orderBy("version").execute();
    expect(kekRows[0]?.wrapped_material).toBeNull();
    const wrappedAfter = await kms.database.db.selectFrom("dek_versions").select(["version", "wrapped_material"]).where("key_id", "=", "pii").where("tenant_id", "=", "acme").orderBy("version").execute();
    for (const row of wrappedBefore) {
      const now = wrappedAfter.find((r) => r.version === row.version);
      expect(Buffer.from(now!.wrapped_material!).equals(Buffer.from(row.wrapped_material!))).toBe(false);
    }

    expect(Buffer.from((await dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: firstReference })).plaintext)).toEqual(Buffer.from(v1.plaintext));
    expect(Buffer.from((await dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: v2.reference })).plaintext)).toEqual(Buffer.from(v2.plaintext));
    expect((await dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" })).dekVersion).toBe(3);
  });

  it("serialises concurrent rotations of one key: each makes exactly one new version", async () => {
    const { keys } = kms.clients();
    await keys.createKey({ tenantId: "acme", keyId: "busy" });
    await Promise.all(Array.from({ length: 5 }, () => keys.rotateKey({ tenantId: "acme", keyId: "busy" })));
    const { key } = await keys.getKey({ tenantId: "acme", keyId: "busy" });
    expect(key?.dekVersions.map((v) => v.version)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(key?.dekVersions.filter((v) => v.state === DekVersionState.PRIMARY).map((v) => v.version)).toEqual([6]);
  });

  it("works the same with an RSA-4096 KEK, including a KEK rotation", async () => {
    const { keys, dataKeys } = kms.clients();
    const { key } = await keys.createKey({ tenantId: "acme", keyId: "rsa", kekAlgorithm: KekAlgorithm.RSA_4096 });
    expect(key?.kekAlgorithm).toBe(KekAlgorithm.RSA_4096);
    const first = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "rsa" });
    await keys.rotateKey({ tenantId: "acme", keyId: "rsa" });
    await keys.rotateKey({ tenantId: "acme", keyId: "rsa", rotateKek: true });
    const decrypted = await dataKeys.decrypt({ tenantId: "acme", keyId: "rsa", reference: first.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(first.plaintext));
    expect((await dataKeys.generateDataKey({ tenantId: "acme", keyId: "rsa" })).dekVersion).toBe(3);
  });

  it("refuses malformed, tampered and misdirected references with distinct reasons", async () => {
    const { keys, dataKeys } = kms.clients();
    await keys.createKey({ tenantId: "acme", keyId: "docs" });
    await keys.createKey({ tenantId: "globex", keyId: "pii" });
    const good = Buffer.from((await dataKeys.generateDataKey({ tenantId: "acme", keyId: "docs" })).reference);

    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: new Uint8Array() }), {
      code: Code.InvalidArgument,
      reason: "INVALID_FIELD",
      field: "reference",
    });
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: new Uint8Array(513) }), {
      code: Code.InvalidArgument,
      reason: "INVALID_FIELD",
      field: "reference",
    });
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: Buffer.from("not a reference") }), {
      code: Code.InvalidArgument,
      reason: "REFERENCE_MALFORMED",
      field: "reference",
    });
    const tampered = Buffer.from(good);
    tampered[tampered.length - 1]! ^= 0x01;
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: tampered }), {
      code: Code.InvalidArgument,
      reason: "REFERENCE_TAMPERED",
      field: "reference",
    });
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: good }), {
      code: Code.InvalidArgument,
      reason: "REFERENCE_KEY_MISMATCH",
      field: "reference",
    });
    await expectRefusal(dataKeys.decrypt({ tenantId: "globex", keyId: "pii", reference: good }), {
      code: Code.InvalidArgument,
      reason: "REFERENCE_KEY_MISMATCH",
      field: "reference",
    });
    // A version the key never had (the tag is then checked against nothing and the row is missing).
    const future = Buffer.from(good);
    future.writeUInt32BE(99, 17);
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: future }), {
      code: Code.NotFound,
      reason: "DEK_VERSION_NOT_FOUND",
    });
  });

  it("keeps tenants apart: a tenant caller cannot use or learn of another tenant's keys", async () => {
    const asGlobex = kms.clients(tenantCaller("globex"));
    const existing = await expectRefusal(asGlobex.keys.getKey({ tenantId: "acme", keyId: "pii" }), {
      code: Code.PermissionDenied,
      reason: "TENANT_FORBIDDEN",
    });
    const missing = await expectRefusal(asGlobex.keys.getKey({ tenantId: "acme", keyId: "no-such-key" }), {
      code: Code.PermissionDenied,
      reason: "TENANT_FORBIDDEN",
    });
    expect(existing.rawMessage).toBe(missing.rawMessage);
    await expectRefusal(asGlobex.dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" }), {
      code: Code.PermissionDenied,
      reason: "TENANT_FORBIDDEN",
    });
    await expectRefusal(asGlobex.keys.listKeys({ tenantId: "acme" }), { code: Code.PermissionDenied, reason: "TENANT_FORBIDDEN" });
    const own = await asGlobex.keys.listKeys({ tenantId: "globex" });
    expect(own.keys.map((k) => k.tenantId)).toEqual(["globex"]);
  });

  it("pages through keys in key order, filters by state, and refuses a token replayed with another filter", async () => {
    const { keys } = kms.clients();
    for (const id of ["p1", "p2", "p3", "p4", "p5"]) await keys.createKey({ tenantId: "pager", keyId: id });
    await keys.revokeKey({ tenantId: "pager", keyId: "p2" });
    const first = await keys.listKeys({ tenantId: "pager", pageSize: 2 });
    expect(first.keys.map((k) => k.keyId)).toEqual(["p1", "p2"]);
    const second = await keys.listKeys({ tenantId: "pager", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.keys.map((k) => k.keyId)).toEqual(["p3", "p4"]);
    const third = await keys.listKeys({ tenantId: "pager", pageSize: 2, pageToken: second.nextPageToken });
    expect(third.keys.map((k) => k.keyId)).toEqual(["p5"]);
    expect(third.nextPageToken).toBe("");
    const enabled = await keys.listKeys({ tenantId: "pager", state: KeyState.ENABLED });
    expect(enabled.keys.map((k) => k.keyId)).toEqual(["p1", "p3", "p4", "p5"]);
    await expectRefusal(keys.listKeys({ tenantId: "pager", pageSize: 2, pageToken: first.nextPageToken, state: KeyState.REVOKED }), {
      code: Code.InvalidArgument,
      reason: "INVALID_FIELD",
      field: "page_token",
    });
    await expectRefusal(keys.listKeys({ tenantId: "pager", pageSize: 101 }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "page_size" });
    await expectRefusal(keys.listKeys({ tenantId: "pager", pageToken: "garbage" }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "page_token" });
  });

  it("revokes at once: the next GenerateDataKey and Decrypt fail even with the KEK cached", async () => {
    const { keys, dataKeys } = kms.clients();
    await keys.createKey({ tenantId: "acme", keyId: "to-revoke" });
    const generated = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "to-revoke" });
    expect(kms.context.kekCache.size).toBeGreaterThan(0);
    const { key } = await keys.revokeKey({ tenantId: "acme", keyId: "to-revoke" });
    expect(key?.state).toBe(KeyState.REVOKED);
    expect(key?.revokeTime).toBeDefined();
    await expectRefusal(dataKeys.generateDataKey({ tenantId: "acme", keyId: "to-revoke" }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "to-revoke", reference: generated.reference }), {
      code: Code.FailedPrecondition,
      reason: "KEY_REVOKED",
    });
    await expectRefusal(keys.rotateKey({ tenantId: "acme", keyId: "to-revoke" }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
    const again = await keys.revokeKey({ tenantId: "acme", keyId: "to-revoke" });
    expect(again.key?.revokeTime).toEqual(key?.revokeTime);
  });

  it("revokes at once even when the revocation is written by another replica (this one's cache still holds the KEK)", async () => {
    const { keys, dataKeys } = kms.clients();
    await keys.createKey({ tenantId: "acme", keyId: "elsewhere" });
    const generated = await dataKeys.generateDataKey({ tenantId: "acme", keyId: "elsewhere" });
    await kms.database.db.updateTable("keys").set({ state: "REVOKED", revoke_time: new Date() }).where("tenant_id", "=", "acme").where("key_id", "=", "elsewhere").execute();
    await expectRefusal(dataKeys.decrypt({ tenantId: "acme", keyId: "elsewhere", reference: generated.reference }), {
      code: Code.FailedPrecondition,
      reason: "KEY_REVOKED",
    });
  });

  it("reports each key's versions, ages and next rotation, and flags an overdue rotation", async () => {
    const { keys } = kms.clients();
    await keys.createKey({ tenantId: "status", keyId: "k1" });
    kms.clock.advanceDays(31);
    const report = await keys.getEncryptionStatus({ tenantId: "status" });
    expect(report.tenantId).toBe("status");
    expect(report.keys).toHaveLength(1);
    const status = report.keys[0]!;
    expect(status.keyId).toBe("k1");
    expect(status.primaryDekAge?.seconds).toBe(31n * DAY);
    expect(status.rotationOverdue).toBe(true);
    expect(status.dekVersions.map((v) => v.version)).toEqual([1]);
    await keys.rotateKey({ tenantId: "status", keyId: "k1" });
    const after = (await keys.getEncryptionStatus({ tenantId: "status" })).keys[0]!;
    expect(after.primaryDekVersion).toBe(2);
    expect(after.primaryDekAge?.seconds).toBe(0n);
    expect(after.rotationOverdue).toBe(false);
    kms.clock.advanceDays(60);
    expect((await keys.getEncryptionStatus({ tenantId: "status" })).keys[0]!.rotationOverdue).toBe(true);
  });
});

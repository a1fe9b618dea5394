/**
 * BYOK: an enterprise tenant's keys whose KEK versions are wrapped by its own
 * AWS KMS, Azure Key Vault and Cloud KMS keys — through the real SDKs against
 * the local servers speaking each cloud's wire protocol. Includes the
 * customer-triggered rotations: RotateKey(rotate_kek) under the same customer
 * key and UpdateKey(customer_key) to another one, each re-wrapped in the
 * background by the KEK_REWRAP job.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CustomerKeyErrorClass, CustomerKeyProvider, KekVersionState, KeyProtection } from "../gen/matih/kms/v1/resources_pb.js";
import { createKmsServer } from "../server/src/api/kms-server.js";
import { silentLogger } from "../server/src/api/logger.js";
import { createKeyManagementService } from "../server/src/api/services/key-management-service.js";
import { probeCustomerKeys } from "../server/src/jobs/customer-key-probe.js";
import type { JobSettings } from "../server/src/jobs/job-handler.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { claimJob } from "../server/src/jobs/job-store.js";
import { kekRewrapJob } from "../server/src/jobs/kek-rewrap.js";
import { createCustomerKeys } from "../server/src/service/customer-keys.js";
import { engines } from "./support/databases.js";
import { restCall, type RestCall } from "./support/e2e-clients.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
import { createTestPki } from "./support/pki.js";
import { startLocalAwsKms, type LocalAwsKms } from "./providers/targets/aws-kms.js";
import { startLocalKeyVault, type LocalKeyVault } from "./providers/targets/azure-keyvault.js";
import { startLocalCloudKms, type LocalCloudKms } from "./providers/targets/gcp-kms.js";

let aws: LocalAwsKms;
let azure: LocalKeyVault;
let gcp: LocalCloudKms;

beforeAll(async () => {
  [aws, azure, gcp] = await Promise.all([startLocalAwsKms(), startLocalKeyVault(), startLocalCloudKms()]);
});
afterAll(async () => {
  await Promise.all([aws?.close(), azure?.close(), gcp?.close()]);
});

const CACHE_MAX_AGE_MS = 60_000;
/** Small batches, so a re-wrap takes several. */
const JOB_SETTINGS: JobSettings = { workerId: "byok-worker", batchSize: 2, leaseMs: 30_000, concurrency: 1 };

interface Minted {
  readonly reference: Uint8Array;
  readonly plaintext: Buffer;
}

describe.each(engines)("customer-managed keys (BYOK) on $name", (engine) => {
  let kms: TestKms;
  let cacheNow = 0;
  const keys = () => kms.clients().keys;
  const dataKeys = () => kms.clients().dataKeys;
  const probe = async () => {
    kms.clock.set(new Date(kms.clock.now().getTime() + 60_000));
    await probeCustomerKeys(kms.context, kms.clock.now());
  };
  const statusOf = async (keyId: string) => {
    const report = await keys().getEncryptionStatus({ tenantId: "acme" });
    return report.keys.find((k) => k.keyId === keyId)!;
  };
  const events = async (keyId: string) =>
    (await kms.database.db.selectFrom("key_events").select(["type"]).where("tenant_id", "=", "acme").where("key_id", "=", keyId).orderBy("event_id").execute()).map((e) => e.type);
  const awsDecryptCalls = () => aws.server.requestCounts()["Decrypt"] ?? 0;

  beforeAll(async () => {
    const customerKeys = createCustomerKeys({
      enterpriseTenants: ["acme"],
      open: (provider, keyUri) =>
        provider === "AWS_KMS" ? aws.open(keyUri) : provider === "AZURE_KEY_VAULT" ? azure.open(keyUri) : gcp.open(keyUri),
    });
    kms = await createTestKms(engine, {
      customerKeys,
      kekCache: { maxEntries: 100, maxAgeMs: CACHE_MAX_AGE_MS, now: () => cacheNow },
    });
  });
  afterAll(async () => {
    await kms?.close();
  });

  it("creates keys held in AWS KMS, Azure Key Vault and Cloud KMS for one tenant, and their data keys round-trip", async () => {
    const created = [
      await keys().createKey({ tenantId: "acme", keyId: "in-aws", customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: aws.keyB } }),
      await keys().createKey({ tenantId: "acme", keyId: "in-azure", customerKey: { provider: CustomerKeyProvider.AZURE_KEY_VAULT, keyUri: azure.keyB } }),
      await keys().createKey({ tenantId: "acme", keyId: "in-gcp", customerKey: { provider: CustomerKeyProvider.GCP_KMS, keyUri: gcp.keyB } }),
    ];
    expect(created.map((c) => [c.key?.protection, c.key?.customerKey?.keyUri])).toEqual([
      [KeyProtection.CUSTOMER_MANAGED, aws.keyB],
      [KeyProtection.CUSTOMER_MANAGED, azure.keyB],
      [KeyProtection.CUSTOMER_MANAGED, gcp.keyB],
    ]);
    const kekRows = await kms.database.db.selectFrom("kek_versions").select(["key_id", "root_provider", "root_key_id"]).where("tenant_id", "=", "acme").orderBy("key_id").execute();
    expect(kekRows).toEqual([
      { key_id: "in-aws", root_provider: "AWS_KMS", root_key_id: aws.keyB },
      { key_id: "in-azure", root_provider: "AZURE_KEY_VAULT", root_key_id: azure.keyB },
      { key_id: "in-gcp", root_provider: "GCP_KMS", root_key_id: gcp.keyB },
    ]);
    for (const keyId of ["in-aws", "in-azure", "in-gcp"]) {
      const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId });
      kms.context.kekCache.clear(); // the Decrypt unwraps the KEK through the customer's KMS
      const decrypted = await dataKeys().decrypt({ tenantId: "acme", keyId, reference: generated.reference });
      expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(generated.plaintext));
    }
  });

  it("refuses a tenant not on the enterprise plan, storing nothing", async () => {
    await expectRefusal(
      keys().createKey({ tenantId: "smallco", keyId: "mine", customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: aws.keyB } }),
      { code: Code.PermissionDenied, reason: "PLAN_NOT_ENTITLED", field: "customer_key" },
    );
    await expectRefusal(keys().getKey({ tenantId: "smallco", keyId: "mine" }), { code: Code.NotFound, reason: "TENANT_NOT_FOUND" });
  });

  it("refuses a key URI that does not fit its provider, and an unspecified provider", async () => {
    await expectRefusal(
      keys().createKey({ tenantId: "acme", keyId: "bad-uri", customerKey: { provider: CustomerKeyProvider.GCP_KMS, keyUri: aws.keyB } }),
      { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key.key_uri" },
    );
    await expectRefusal(
      keys().createKey({ tenantId: "acme", keyId: "bad-provider", customerKey: { provider: CustomerKeyProvider.UNSPECIFIED, keyUri: aws.keyB } }),
      { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key.provider" },
    );
  });

  it("refuses to create a key under a customer key it cannot use, saying why, and stores nothing", async () => {
    aws.server.setKeyState(aws.keyA, "Disabled");
    try {
      await expectRefusal(
        keys().createKey({ tenantId: "acme", keyId: "on-disabled", customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: aws.keyA } }),
        { code: Code.FailedPrecondition, reason: "CUSTOMER_KEY_REVOKED" },
      );
    } finally {
      aws.server.setKeyState(aws.keyA, "Enabled");
    }
    await expectRefusal(keys().getKey({ tenantId: "acme", keyId: "on-disabled" }), { code: Code.NotFound, reason: "KEY_NOT_FOUND" });
  });

  it("unwraps each KEK through the customer's KMS once per cache lifetime, however many Decrypts", async () => {
    const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId: "in-aws" });
    kms.context.kekCache.clear();
    const before = awsDecryptCalls();
    for (let i = 0; i < 25; i++) await dataKeys().decrypt({ tenantId: "acme", keyId: "in-aws", reference: generated.reference });
    expect(awsDecryptCalls() - before).toBe(1);
    cacheNow += CACHE_MAX_AGE_MS + 1;
    for (let i = 0; i < 25; i++) await dataKeys().decrypt({ tenantId: "acme", keyId: "in-aws", reference: generated.reference });
    expect(awsDecryptCalls() - before).toBe(2);
  });

  it("fails every use with CUSTOMER_KEY_REVOKED once the customer disables its key, shows it, and resumes when re-enabled", async () => {
    const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId: "in-aws" });
    aws.server.setKeyState(aws.keyB, "Disabled");
    try {
      await probe();
      await expectRefusal(dataKeys().decrypt({ tenantId: "acme", keyId: "in-aws", reference: generated.reference }), {
        code: Code.FailedPrecondition,
        reason: "CUSTOMER_KEY_REVOKED",
      });
      const status = await statusOf("in-aws");
      expect(status.customerKeyHealth?.lastErrorClass).toBe(CustomerKeyErrorClass.REVOKED);
      expect(status.customerKeyHealth?.lastError).toContain(aws.keyB);
    } finally {
      aws.server.setKeyState(aws.keyB, "Enabled");
    }
    await probe();
    const decrypted = await dataKeys().decrypt({ tenantId: "acme", keyId: "in-aws", reference: generated.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(generated.plaintext));
    const health = (await statusOf("in-aws")).customerKeyHealth!;
    expect(Number(health.lastSuccessTime!.seconds)).toBeGreaterThan(Number(health.lastErrorTime!.seconds));
    expect((await events("in-aws")).filter((t) => t.startsWith("CUSTOMER_KEY"))).toEqual(["CUSTOMER_KEY_UNAVAILABLE", "CUSTOMER_KEY_AVAILABLE"]);
  });

  it("fails with CUSTOMER_KEY_PERMISSION_DENIED when the customer withdraws access, and resumes when granted again", async () => {
    const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId: "in-gcp" });
    gcp.server.setAccess(gcp.keyB, false);
    try {
      await probe();
      await expectRefusal(dataKeys().decrypt({ tenantId: "acme", keyId: "in-gcp", reference: generated.reference }), {
        code: Code.FailedPrecondition,
        reason: "CUSTOMER_KEY_PERMISSION_DENIED",
      });
      expect((await statusOf("in-gcp")).customerKeyHealth?.lastErrorClass).toBe(CustomerKeyErrorClass.PERMISSION_DENIED);
      // The other clouds' keys of the same tenant are unaffected.
      await dataKeys().generateDataKey({ tenantId: "acme", keyId: "in-azure" });
    } finally {
      gcp.server.setAccess(gcp.keyB, true);
    }
    await probe();
    const decrypted = await dataKeys().decrypt({ tenantId: "acme", keyId: "in-gcp", reference: generated.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(generated.plaintext));
  });

  it("fails with CUSTOMER_KEY_UNREACHABLE while the customer's KMS is down, and resumes when it is back", async () => {
    const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId: "in-azure" });
    await azure.server.stop();
    try {
      await probe();
      await expectRefusal(dataKeys().decrypt({ tenantId: "acme", keyId: "in-azure", reference: generated.reference }), {
        code: Code.Unavailable,
        reason: "CUSTOMER_KEY_UNREACHABLE",
      });
      expect((await statusOf("in-azure")).customerKeyHealth?.lastErrorClass).toBe(CustomerKeyErrorClass.UNREACHABLE);
    } finally {
      await azure.server.start();
    }
    await probe();
    const decrypted = await dataKeys().decrypt({ tenantId: "acme", keyId: "in-azure", reference: generated.reference });
    expect(Buffer.from(decrypted.plaintext)).toEqual(Buffer.from(generated.plaintext));
  });

  it("rotates a BYOK key's DEK under its customer-wrapped KEK", async () => {
    const rotated = await keys().rotateKey({ tenantId: "acme", keyId: "in-gcp" });
    expect(rotated.key?.primaryDekVersion).toBeGreaterThan(1);
    expect(rotated.key?.primaryKekVersion).toBe(1);
  });

  const drain = () => drainJobs(kms.context, JOB_SETTINGS, { logger: silentLogger });
  const kekStates = async (keyId: string) =>
    ((await keys().getKey({ tenantId: "acme", keyId })).key?.kekVersions ?? []).map((v) => [v.version, KekVersionState[v.state], Number(v.totalDekCount), Number(v.rewrappedDekCount)]);
  const kekRowsOf = (keyId: string) =>
    kms.database.db.selectFrom("kek_versions").select(["version", "state", "root_provider", "root_key_id"]).where("tenant_id", "=", "acme").where("key_id", "=", keyId).orderBy("version").execute();
  const jobsOf = (keyId: string) => kms.database.db.selectFrom("jobs").selectAll().where("tenant_id", "=", "acme").where("key_id", "=", keyId).orderBy("job_id").execute();

  /** A BYOK key with `count` DEK versions (DEK rotations), and one data key of each. */
  async function byokKeyWithDeks(keyId: string, customerKey: { provider: CustomerKeyProvider; keyUri: string }, count: number): Promise<Minted[]> {
    await keys().createKey({ tenantId: "acme", keyId, customerKey });
    const minted: Minted[] = [];
    for (let i = 0; i < count; i++) {
      if (i > 0) await keys().rotateKey({ tenantId: "acme", keyId });
      const generated = await dataKeys().generateDataKey({ tenantId: "acme", keyId });
      minted.push({ reference: generated.reference, plaintext: Buffer.from(generated.plaintext) });
    }
    return minted;
  }

  /** Every minted data key decrypts, with the KEK cache emptied first (so the customer's KMS unwraps the KEKs). */
  async function expectAllDecrypt(keyId: string, minted: readonly Minted[]): Promise<void> {
    kms.context.kekCache.clear();
    for (const [i, dek] of minted.entries()) {
      const answer = await dataKeys().decrypt({ tenantId: "acme", keyId, reference: dek.reference });
      expect(Buffer.from(answer.plaintext).equals(dek.plaintext), `data key ${i}`).toBe(true);
    }
  }

  /** Claims the key's re-wrap job as the drain's worker and applies `count` batches of it. */
  async function runBatches(keyId: string, count: number): Promise<void> {
    const job = await claimJob(kms.database.db, { workerId: JOB_SETTINGS.workerId, now: kms.clock.now(), leaseMs: JOB_SETTINGS.leaseMs, excluding: [] });
    expect(job?.key_id).toBe(keyId);
    const session = await kekRewrapJob.open(kms.context, job!, JOB_SETTINGS);
    try {
      for (let i = 0; i < count; i++) expect(await session.runBatch()).toBe("applied");
    } finally {
      session.close();
    }
  }

  it("rotates a BYOK key's KEK after the tenant rotated in its KMS: the new version is wrapped under the customer key, every DEK decrypts during and after the background re-wrap, and the old version is destroyed", async () => {
    const cryptoKey = gcp.server.createKey("acme", `rotating-${engine.name}`);
    const minted = await byokKeyWithDeks("kek-rotating", { provider: CustomerKeyProvider.GCP_KMS, keyUri: cryptoKey }, 5);
    gcp.server.rotateKey(cryptoKey); // the tenant's rotation in Cloud KMS: a new primary version

    const rotated = await keys().rotateKey({ tenantId: "acme", keyId: "kek-rotating", rotateKek: true });
    expect(rotated.key?.primaryKekVersion).toBe(2);
    expect(rotated.key?.customerKey?.keyUri).toBe(cryptoKey);
    expect(await kekStates("kek-rotating")).toEqual([
      [1, "RETIRING", 5, 0],
      [2, "PRIMARY", 0, 0],
    ]);
    expect((await kekRowsOf("kek-rotating")).map((r) => [r.version, r.root_provider, r.root_key_id])).toEqual([
      [1, "GCP_KMS", cryptoKey],
      [2, "GCP_KMS", cryptoKey],
    ]);
    expect((await events("kek-rotating")).slice(-2)).toEqual(["KEK_ROTATED", "DEK_ROTATED"]);
    const afterRotation = await dataKeys().generateDataKey({ tenantId: "acme", keyId: "kek-rotating" });
    minted.push({ reference: afterRotation.reference, plaintext: Buffer.from(afterRotation.plaintext) });

    await runBatches("kek-rotating", 1); // half-way: some DEKs under version 1, some under version 2
    expect(await kekStates("kek-rotating")).toEqual([
      [1, "RETIRING", 5, 2],
      [2, "PRIMARY", 0, 0],
    ]);
    await expectAllDecrypt("kek-rotating", minted);

    expect((await drain()).finished).toBe(1);
    expect(await kekStates("kek-rotating")).toEqual([
      [1, "DESTROYED", 5, 5],
      [2, "PRIMARY", 0, 0],
    ]);
    expect((await kekRowsOf("kek-rotating"))[0]?.state).toBe("DESTROYED");
    expect((await events("kek-rotating")).at(-1)).toBe("KEK_VERSION_DESTROYED");
    await expectAllDecrypt("kek-rotating", minted);
    // The KEK is now wrapped by the tenant's new Cloud KMS version alone: the old one can go.
    gcp.server.setVersionState(cryptoKey, 1, "DISABLED");
    await expectAllDecrypt("kek-rotating", minted);
  });

  it("UpdateKey customer_key points a key at a second customer key: the new KEK version is wrapped under it, the DEKs are re-wrapped in the background, and the first key can then be disabled", async () => {
    const first = aws.server.createKey();
    const second = aws.server.createKey();
    const minted = await byokKeyWithDeks("moving", { provider: CustomerKeyProvider.AWS_KMS, keyUri: first }, 3);

    const updated = await keys().updateKey({
      tenantId: "acme",
      keyId: "moving",
      updateMask: { paths: ["customer_key", "description"] },
      customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: second },
      description: "now in the second key",
    });
    expect([updated.key?.customerKey?.keyUri, updated.key?.description, updated.key?.primaryKekVersion]).toEqual([second, "now in the second key", 2]);
    expect((await keys().getKey({ tenantId: "acme", keyId: "moving" })).key?.customerKey?.keyUri).toBe(second);
    expect((await kekRowsOf("moving")).map((r) => [r.version, r.state, r.root_key_id])).toEqual([
      [1, "RETIRING", first],
      [2, "PRIMARY", second],
    ]);
    expect((await events("moving")).at(-1)).toBe("KEK_ROTATED");
    await expectAllDecrypt("moving", minted); // before the re-wrap: through the first key

    expect((await drain()).finished).toBe(1);
    expect(await kekStates("moving")).toEqual([
      [1, "DESTROYED", 3, 3],
      [2, "PRIMARY", 0, 0],
    ]);
    expect((await events("moving")).at(-1)).toBe("KEK_VERSION_DESTROYED");

    aws.server.setKeyState(first, "Disabled");
    await expectAllDecrypt("moving", minted);
    await dataKeys().generateDataKey({ tenantId: "acme", keyId: "moving" });
    // The health probe follows the key to its new customer key.
    await probe();
    const health = (await statusOf("moving")).customerKeyHealth!;
    expect([health.lastErrorClass, health.lastError]).toEqual([CustomerKeyErrorClass.UNSPECIFIED, ""]);
  });

  it("refuses UpdateKey to a customer key it cannot use, saying why, and changes nothing", async () => {
    const current = aws.server.createKey();
    await keys().createKey({ tenantId: "acme", keyId: "staying", customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: current } });
    const before = { key: (await keys().getKey({ tenantId: "acme", keyId: "staying" })).key, events: await events("staying"), keks: await kekRowsOf("staying") };
    const update = (customerKey: { provider: CustomerKeyProvider; keyUri: string } | undefined) =>
      keys().updateKey({ tenantId: "acme", keyId: "staying", updateMask: { paths: ["customer_key"] }, ...(customerKey === undefined ? {} : { customerKey }) });

    const disabled = aws.server.createKey();
    aws.server.setKeyState(disabled, "Disabled");
    const revoked = await expectRefusal(update({ provider: CustomerKeyProvider.AWS_KMS, keyUri: disabled }), { code: Code.FailedPrecondition, reason: "CUSTOMER_KEY_REVOKED" });
    expect(revoked.rawMessage).toContain(disabled);

    const denied = gcp.server.createKey("acme", `denied-${engine.name}`);
    gcp.server.setAccess(denied, false);
    await expectRefusal(update({ provider: CustomerKeyProvider.GCP_KMS, keyUri: denied }), { code: Code.FailedPrecondition, reason: "CUSTOMER_KEY_PERMISSION_DENIED" });

    const unreachable = azure.server.createKey(`unreachable-${engine.name}`);
    await azure.server.stop();
    try {
      await expectRefusal(update({ provider: CustomerKeyProvider.AZURE_KEY_VAULT, keyUri: unreachable }), { code: Code.Unavailable, reason: "CUSTOMER_KEY_UNREACHABLE" });
    } finally {
      await azure.server.start();
    }

    await expectRefusal(update({ provider: CustomerKeyProvider.GCP_KMS, keyUri: current }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key.key_uri" });
    await expectRefusal(update({ provider: CustomerKeyProvider.UNSPECIFIED, keyUri: current }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key.provider" });
    await expectRefusal(update(undefined), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key" });
    // A bad period in the same request is refused before the customer's KMS is called.
    const decrypts = awsDecryptCalls();
    await expectRefusal(
      keys().updateKey({
        tenantId: "acme",
        keyId: "staying",
        updateMask: { paths: ["customer_key", "rotation_policy.dek_rotation_period"] },
        customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: aws.server.createKey() },
        rotationPolicy: { dekRotationPeriod: { seconds: 1n } },
      }),
      { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "rotation_policy.dek_rotation_period" },
    );
    expect(awsDecryptCalls()).toBe(decrypts);
    // Naming the current customer key changes nothing (a retried PATCH succeeds).
    expect((await update({ provider: CustomerKeyProvider.AWS_KMS, keyUri: current })).key?.primaryKekVersion).toBe(1);

    const after = { key: (await keys().getKey({ tenantId: "acme", keyId: "staying" })).key, events: await events("staying"), keks: await kekRowsOf("staying") };
    expect(after.key?.customerKey).toEqual(before.key?.customerKey);
    expect(after.key?.kekVersions).toEqual(before.key?.kekVersions);
    expect([after.events, after.keks]).toEqual([before.events, before.keks]);
    expect(await jobsOf("staying")).toEqual([]);
    // A platform-managed key does not change its protection.
    await keys().createKey({ tenantId: "acme", keyId: "platform" });
    await expectRefusal(
      keys().updateKey({ tenantId: "acme", keyId: "platform", updateMask: { paths: ["customer_key"] }, customerKey: { provider: CustomerKeyProvider.AWS_KMS, keyUri: current } }),
      { code: Code.InvalidArgument, reason: "INVALID_FIELD", field: "customer_key" },
    );
  });

  it("a re-wrap whose customer key is revoked mid-way waits, applies nothing more, and resumes where it stopped when the key is back", async () => {
    const cryptoKey = gcp.server.createKey("acme", `paused-${engine.name}`);
    const minted = await byokKeyWithDeks("paused", { provider: CustomerKeyProvider.GCP_KMS, keyUri: cryptoKey }, 5);
    await keys().rotateKey({ tenantId: "acme", keyId: "paused", rotateKek: true });
    await runBatches("paused", 1);
    const underOld = async () => (await kms.database.db.selectFrom("dek_versions").select("version").where("tenant_id", "=", "acme").where("key_id", "=", "paused").where("kek_version", "=", 1).execute()).length;
    expect(await underOld()).toBe(3);

    gcp.server.setPrimaryState(cryptoKey, "DISABLED");
    try {
      expect(await drain()).toEqual({ batches: 0, finished: 0, failures: 1 });
      const [job] = await jobsOf("paused");
      expect([job?.state, job?.done, job?.attempts]).toEqual(["PENDING", 2, 1]);
      expect(job?.last_error).toContain("is disabled");
      expect(await underOld()).toBe(3);
      expect(await kekStates("paused")).toEqual([
        [1, "RETIRING", 5, 2],
        [2, "PRIMARY", 0, 0],
      ]);
      // Backing off: the job is not retried before its time.
      expect(await drain()).toEqual({ batches: 0, finished: 0, failures: 0 });
    } finally {
      gcp.server.setPrimaryState(cryptoKey, "ENABLED");
    }
    kms.clock.set(new Date(kms.clock.now().getTime() + 60_000));
    expect(await drain()).toMatchObject({ finished: 1, failures: 0 });
    expect(await underOld()).toBe(0);
    expect(await kekStates("paused")).toEqual([
      [1, "DESTROYED", 5, 5],
      [2, "PRIMARY", 0, 0],
    ]);
    await expectAllDecrypt("paused", minted);
  });

  it("PATCH over REST moves a key to another cloud's key (AWS KMS to Cloud KMS), and GetKey shows the new reference", async () => {
    const pki = await createTestPki();
    const server = await createKmsServer({ services: { keyManagement: createKeyManagementService(kms.context), dataKey: {} }, tls: pki.serverTls, port: 0, logger: silentLogger });
    try {
      const minted = await byokKeyWithDeks("cross-cloud", { provider: CustomerKeyProvider.AWS_KMS, keyUri: aws.server.createKey() }, 2);
      const target = gcp.server.createKey("acme", `cross-cloud-${engine.name}`);
      const rest = (call: Omit<RestCall, "cert">) => restCall({ url: server.url, ca: pki.caCert }, { ...call, cert: pki.client });
      const patched = await rest({
        method: "PATCH",
        path: "/api/v1/tenants/acme/encryption/keys/cross-cloud",
        json: { updateMask: "customerKey", customerKey: { provider: "CUSTOMER_KEY_PROVIDER_GCP_KMS", keyUri: target } },
      });
      expect(patched.status, patched.text).toBe(200);
      expect(patched.json.key).toMatchObject({ customerKey: { provider: "CUSTOMER_KEY_PROVIDER_GCP_KMS", keyUri: target }, primaryKekVersion: 2 });
      const refused = await rest({
        method: "PATCH",
        path: "/api/v1/tenants/acme/encryption/keys/cross-cloud",
        json: { updateMask: "customerKey", customerKey: { provider: "CUSTOMER_KEY_PROVIDER_AWS_KMS", keyUri: target } },
      });
      expect([refused.status, refused.json.reason, refused.json.field]).toEqual([400, "ERROR_REASON_INVALID_FIELD", "customer_key.key_uri"]);

      expect((await drain()).finished).toBe(1);
      const got = await rest({ method: "GET", path: "/api/v1/tenants/acme/encryption/keys/cross-cloud" });
      expect(got.json.key.customerKey).toEqual({ provider: "CUSTOMER_KEY_PROVIDER_GCP_KMS", keyUri: target });
      expect(got.json.key.kekVersions.map((v: { state: string }) => v.state)).toEqual(["KEK_VERSION_STATE_DESTROYED", "KEK_VERSION_STATE_PRIMARY"]);
      expect((await kekRowsOf("cross-cloud")).map((r) => r.root_provider)).toEqual(["AWS_KMS", "GCP_KMS"]);
      await expectAllDecrypt("cross-cloud", minted);
    } finally {
      await server.close(100);
      await pki.cleanup();
    }
  });

});


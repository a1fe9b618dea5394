/**
 * BYOK: an enterprise tenant's keys whose KEK versions are wrapped by its own
 * AWS KMS, Azure Key Vault and Cloud KMS keys — through the real SDKs against
 * the local servers speaking each cloud's wire protocol.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CustomerKeyErrorClass, CustomerKeyProvider, KeyProtection } from "../gen/matih/kms/v1/resources_pb.js";
import { probeCustomerKeys } from "../server/src/jobs/customer-key-probe.js";
import { createCustomerKeys } from "../server/src/service/customer-keys.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
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

  it("rotates a BYOK key's DEK under its customer-wrapped KEK, and refuses a KEK rotation it cannot complete", async () => {
    const rotated = await keys().rotateKey({ tenantId: "acme", keyId: "in-gcp" });
    expect(rotated.key?.primaryDekVersion).toBeGreaterThan(1);
    await expectRefusal(keys().rotateKey({ tenantId: "acme", keyId: "in-gcp", rotateKek: true }), {
      code: Code.FailedPrecondition,
      reason: "INVALID_STATE_TRANSITION",
      field: "rotate_kek",
    });
  });
});


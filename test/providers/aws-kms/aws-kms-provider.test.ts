/**
 * aws-kms beyond the shared contract: what the local server proves about the
 * SDK's requests (signed, context sent), alias resolution, and key states
 * the contract does not stage.
 */
import { KMSClient, EncryptCommand } from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AWS_TEST_CREDENTIALS, startLocalAwsKms, type LocalAwsKms } from "../targets/aws-kms.js";
import { startAwsKmsServer } from "./aws-kms-server.js";

const context = { purpose: "dek" as const, tenantId: "acme", keyId: "pii", version: 5 };

describe("aws-kms provider against the local AWS KMS", () => {
  let local: LocalAwsKms;
  beforeAll(async () => {
    local = await startLocalAwsKms();
  });
  afterAll(async () => {
    await local.close();
  });

  it("resolves an alias to the key ARN once, when it opens, and uses the ARN from then on", async () => {
    const before = local.server.requestCounts()["DescribeKey"] ?? 0;
    const provider = await local.open("alias/matih-root");
    expect(provider.keyRef).toBe(local.keyA);
    expect(local.server.requestCounts()["DescribeKey"]).toBe(before + 1);
    const byArn = await local.open(local.keyA);
    expect(local.server.requestCounts()["DescribeKey"]).toBe(before + 1);
    await provider.close();
    await byArn.close();
  });

  it("sends the context as the EncryptionContext, on Encrypt and on Decrypt", async () => {
    const provider = await local.open(local.keyA);
    const blob = await provider.wrap(Buffer.alloc(32, 9), context);
    expect(local.server.lastEncryptionContext()).toEqual({ "matih-purpose": "dek", "matih-tenant": "acme", "matih-key": "pii", "matih-version": "5" });
    await provider.unwrap(blob, { ...context, version: 6 }).catch(() => undefined);
    expect(local.server.lastEncryptionContext()).toMatchObject({ "matih-version": "6" });
    await provider.close();
  });

  it("signs every request: the server verifies each signature, and a wrong secret is refused as permission-denied", async () => {
    const failuresBefore = local.server.signatureFailures;
    const good = await local.open(local.keyA);
    await good.unwrap(await good.wrap(Buffer.alloc(32, 1), context), context);
    expect(local.server.signatureFailures).toBe(failuresBefore);
    const forged = await local.open(local.keyA, { credentials: { ...AWS_TEST_CREDENTIALS, secretAccessKey: "not-the-secret" }, maxAttempts: 1 });
    await expect(forged.wrap(Buffer.alloc(32, 1), context)).rejects.toMatchObject({ failure: "permission-denied", message: expect.stringContaining("InvalidSignatureException") });
    expect(local.server.signatureFailures).toBe(failuresBefore + 1);
    await good.close();
    await forged.close();
  });

  it("is refused as permission-denied with an access key the service does not know", async () => {
    const stranger = await local.open(local.keyA, { credentials: { accessKeyId: "AKIAUNKNOWN000000000", secretAccessKey: "x" }, maxAttempts: 1 });
    await expect(stranger.wrap(Buffer.alloc(32, 1), context)).rejects.toMatchObject({ failure: "permission-denied", message: expect.stringContaining("UnrecognizedClientException") });
    await stranger.close();
  });

  it("the server refuses a request without a signature (so a provider that did not sign could not pass)", async () => {
    const response = await fetch(`${local.server.endpoint}/`, {
      method: "POST",
      headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": "TrentService.Encrypt" },
      body: JSON.stringify({ KeyId: local.keyA, Plaintext: Buffer.alloc(32).toString("base64") }),
    });
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ __type: "MissingAuthenticationTokenException" });
  });

  it("the server refuses a signature made more than five minutes from its clock", async () => {
    const skewed = await startAwsKmsServer({ credentials: [AWS_TEST_CREDENTIALS], now: () => new Date(Date.now() + 10 * 60 * 1000) });
    const keyId = skewed.createKey();
    const client = new KMSClient({ region: skewed.region, endpoint: skewed.endpoint, credentials: AWS_TEST_CREDENTIALS, maxAttempts: 1 });
    await expect(client.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.alloc(32) }))).rejects.toMatchObject({ name: "InvalidSignatureException" });
    client.destroy();
    await skewed.close();
  });

  it("a key pending deletion is key-disabled, and so is a key that no longer exists", async () => {
    const doomed = local.server.createKey();
    const provider = await local.open(doomed);
    const blob = await provider.wrap(Buffer.alloc(32, 2), context);
    local.server.setKeyState(doomed, "PendingDeletion");
    await expect(provider.unwrap(blob, context)).rejects.toMatchObject({ failure: "key-disabled", message: expect.stringContaining("KMSInvalidStateException") });
    await provider.close();
    const missing = await local.open("arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000");
    await expect(missing.wrap(Buffer.alloc(32, 2), context)).rejects.toMatchObject({ failure: "key-disabled", message: expect.stringContaining("NotFoundException") });
    await missing.close();
  });

  it("fails to open, classified, when an alias cannot be resolved", async () => {
    await expect(local.open("alias/does-not-exist")).rejects.toMatchObject({ failure: "key-disabled", message: expect.stringContaining("configure the key ARN") });
  });
});

/**
 * The factory builds each kind of root provider from a plain options object
 * (as config.ts will pass it) and the result serves the service's root port.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRootProvider } from "../../server/src/providers/create-root-provider.js";
import { openLocalRootProvider } from "../../server/src/providers/local/local-root-provider.js";
import { AWS_TEST_CREDENTIALS, startLocalAwsKms, type LocalAwsKms } from "./targets/aws-kms.js";
import { startLocalKeyVault, type LocalKeyVault } from "./targets/azure-keyvault.js";
import { startLocalCloudKms, type LocalCloudKms } from "./targets/gcp-kms.js";

const context = { tenantId: "acme", keyId: "pii", kekVersion: 1 };

describe("createRootProvider", () => {
  let aws: LocalAwsKms;
  let azure: LocalKeyVault;
  let gcp: LocalCloudKms;
  let dir: string;
  beforeAll(async () => {
    [aws, azure, gcp] = await Promise.all([startLocalAwsKms(), startLocalKeyVault(), startLocalCloudKms()]);
    dir = await mkdtemp(join(tmpdir(), "kms-factory-"));
  });
  afterAll(async () => {
    await Promise.all([aws.close(), azure.close(), gcp.close(), rm(dir, { recursive: true, force: true })]);
  });

  it("local: the existing local provider, so KEKs it wrapped before still unwrap", async () => {
    const before = await openLocalRootProvider(dir);
    const wrapped = await before.wrap(Buffer.alloc(32, 1), context);
    const keyId = before.currentKeyId;
    await before.close();
    const root = await createRootProvider({ kind: "local", dataDir: dir });
    expect(root.name).toBe("local");
    expect(root.currentKeyId).toBe(keyId);
    expect(await root.unwrap(wrapped, context, keyId)).toEqual(Buffer.alloc(32, 1));
    await root.close();
  });

  it.each([
    ["aws-kms", () => ({ kind: "aws-kms" as const, keyId: aws.keyA, region: aws.server.region, endpoint: aws.server.endpoint, credentials: AWS_TEST_CREDENTIALS }), () => aws.keyA],
    [
      "azure-keyvault",
      () => ({
        kind: "azure-keyvault" as const,
        keyId: azure.keyA,
        credential: { tenantId: azure.server.tenantId, ...azure.server.addClient(), authorityHost: azure.server.authorityHost, agent: azure.server.agent },
      }),
      () => azure.keyA,
    ],
    ["gcp-kms", () => ({ kind: "gcp-kms" as const, keyName: gcp.keyA, apiEndpoint: gcp.server.host, port: gcp.server.port, tls: "insecure" as const }), () => gcp.keyA],
  ])("%s: a root provider named after its kind, keyed by the key's reference", async (kind, options, keyRef) => {
    const root = await createRootProvider(options());
    expect(root.name).toBe(kind);
    expect(root.currentKeyId).toBe(keyRef());
    const wrapped = await root.wrap(Buffer.alloc(32, 2), context);
    expect(await root.unwrap(wrapped, context, root.currentKeyId)).toEqual(Buffer.alloc(32, 2));
    await root.close();
  });
});

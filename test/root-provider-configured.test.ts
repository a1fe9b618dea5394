/**
 * The root provider is chosen by configuration: with KMS_ROOT_PROVIDER=aws-kms
 * the server wraps every KEK through AWS KMS (here the local server speaking
 * AWS JSON 1.1 with SigV4) and the hot path works through it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../server/src/api/logger.js";
import { loadConfig } from "../server/src/config.js";
import { createKey } from "../server/src/service/create-key.js";
import { decryptDataKey } from "../server/src/service/decrypt-data-key.js";
import { generateDataKey } from "../server/src/service/generate-data-key.js";
import { startKms, type RunningKms } from "../server/src/start-kms.js";
import { engines } from "./support/databases.js";
import { AWS_TEST_CREDENTIALS, startLocalAwsKms, type LocalAwsKms } from "./providers/targets/aws-kms.js";

const engine = engines.find((e) => e.name === "pglite")!;

describe("root provider from configuration", () => {
  let aws: LocalAwsKms;
  let kms: RunningKms;
  let dataDir: string;

  beforeAll(async () => {
    aws = await startLocalAwsKms();
    dataDir = await mkdtemp(join(tmpdir(), "kms-root-aws-"));
    // The SDK's default credential chain reads these, as it would in a pod.
    process.env["AWS_ACCESS_KEY_ID"] = AWS_TEST_CREDENTIALS.accessKeyId;
    process.env["AWS_SECRET_ACCESS_KEY"] = AWS_TEST_CREDENTIALS.secretAccessKey;
    const config = loadConfig({
      KMS_DATA_DIR: dataDir,
      KMS_PORT: "0",
      KMS_ROOT_PROVIDER: "aws-kms",
      KMS_AWS_KMS_KEY_ID: aws.keyA,
      KMS_AWS_REGION: aws.server.region,
      KMS_AWS_KMS_ENDPOINT: aws.server.endpoint,
      KMS_WORKERS: "off",
    });
    kms = await startKms(config, { database: await engine.open(), logger: silentLogger });
  });
  afterAll(async () => {
    await kms?.stop(0);
    await kms?.database.close();
    await aws?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("wraps KEKs through the configured AWS KMS key and serves data keys through it", async () => {
    await createKey(kms.context, { tenantId: "acme", keyId: "pii" });
    const row = await kms.database.db.selectFrom("kek_versions").selectAll().where("tenant_id", "=", "acme").executeTakeFirstOrThrow();
    expect(row.root_provider).toBe("aws-kms");
    const generated = await generateDataKey(kms.context, { tenantId: "acme", keyId: "pii" });
    kms.context.kekCache.clear();
    const decrypted = await decryptDataKey(kms.context, { tenantId: "acme", keyId: "pii", reference: generated.reference });
    expect(decrypted.plaintext.equals(generated.plaintext)).toBe(true);
  });

  it("answers PROVIDER_UNAVAILABLE when the master key's KMS cannot be reached, and recovers when it returns", async () => {
    const generated = await generateDataKey(kms.context, { tenantId: "acme", keyId: "pii" });
    kms.context.kekCache.clear();
    await aws.server.stop();
    await expect(decryptDataKey(kms.context, { tenantId: "acme", keyId: "pii", reference: generated.reference })).rejects.toMatchObject({
      reason: "PROVIDER_UNAVAILABLE",
    });
    await aws.server.start();
    const decrypted = await decryptDataKey(kms.context, { tenantId: "acme", keyId: "pii", reference: generated.reference });
    expect(decrypted.plaintext.equals(generated.plaintext)).toBe(true);
  });

  it("refuses an unknown provider, naming the variable", () => {
    expect(() => loadConfig({ KMS_ROOT_PROVIDER: "vault" })).toThrow(/KMS_ROOT_PROVIDER/);
    expect(() => loadConfig({ KMS_ROOT_PROVIDER: "aws-kms" })).toThrow(/KMS_AWS_REGION/);
    expect(() => loadConfig({ KMS_ROOT_PROVIDER: "aws-kms", KMS_AWS_REGION: "eu-west-1" })).toThrow(/KMS_AWS_KMS_KEY_ID/);
  });
});

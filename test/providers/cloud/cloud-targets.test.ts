import { describe, expect, it } from "vitest";
import { cloudSmokeConfigs, cloudSmokeTargets } from "./cloud-targets.js";

describe("real-cloud smoke configuration", () => {
  it("with nothing set, every cloud is skipped and says what is missing", () => {
    for (const config of cloudSmokeConfigs({})) expect(config.missing.length).toBeGreaterThan(0);
    for (const target of cloudSmokeTargets({})) expect(target.skip).toMatch(/^set /);
  });

  it("AWS runs with two key ARNs, a region and credentials; the fixtures enable their scenarios", () => {
    const env = {
      KMS_SMOKE_AWS_KEY_ID: "arn:aws:kms:eu-west-1:111122223333:key/a",
      KMS_SMOKE_AWS_OTHER_KEY_ID: "arn:aws:kms:eu-west-1:111122223333:key/b",
      AWS_REGION: "eu-west-1",
      AWS_PROFILE: "smoke",
      KMS_SMOKE_AWS_DISABLED_KEY_ID: "arn:aws:kms:eu-west-1:111122223333:key/c",
    };
    const aws = cloudSmokeConfigs(env).find((c) => c.cloud === "aws-kms");
    expect(aws?.missing).toEqual([]);
    const target = cloudSmokeTargets(env).find((t) => t.name.startsWith("aws-kms"));
    expect(target?.skip).toBeUndefined();
    expect(target?.scenarios).toEqual({ unavailable: true, "key-disabled": true, "permission-denied": "set KMS_SMOKE_AWS_DENIED_KEY_ID to a fixture key to stage it" });
  });

  it("Azure needs a secret or a federated token file, not both names", () => {
    const base = { KMS_SMOKE_AZURE_KEY_ID: "https://v.vault.azure.net/keys/a", KMS_SMOKE_AZURE_OTHER_KEY_ID: "https://v.vault.azure.net/keys/b", AZURE_TENANT_ID: "t", AZURE_CLIENT_ID: "c" };
    expect(cloudSmokeConfigs(base).find((c) => c.cloud === "azure-keyvault")?.missing).toEqual(["AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE"]);
    expect(cloudSmokeConfigs({ ...base, AZURE_FEDERATED_TOKEN_FILE: "/t" }).find((c) => c.cloud === "azure-keyvault")?.missing).toEqual([]);
  });
});

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RootProviderConfigError, rootProviderOptionsFromEnv } from "./root-provider-env.js";

const defaults = { dataDir: "/var/lib/matih-kms" };
const AWS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

describe("rootProviderOptionsFromEnv", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-env-"));
    await writeFile(join(dir, "pin"), "1234\n");
    await writeFile(join(dir, "empty"), "");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("defaults to the local provider in the data directory", () => {
    expect(rootProviderOptionsFromEnv({}, defaults)).toEqual({ kind: "local", dataDir: "/var/lib/matih-kms" });
  });

  it("reads pkcs11 settings, the PIN from a file without its trailing newline", () => {
    const options = rootProviderOptionsFromEnv(
      {
        KMS_ROOT_PROVIDER: "pkcs11",
        KMS_PKCS11_LIBRARY: "/usr/lib/softhsm/libsofthsm2.so",
        KMS_PKCS11_TOKEN_LABEL: "matih",
        KMS_PKCS11_KEY_LABEL: "root-2025",
        KMS_PKCS11_PIN_FILE: join(dir, "pin"),
      },
      defaults,
    );
    expect(options).toEqual({ kind: "pkcs11", library: "/usr/lib/softhsm/libsofthsm2.so", tokenLabel: "matih", keyLabel: "root-2025", pin: "1234", sessions: 4 });
  });

  it("reads aws-kms settings, falling back to AWS_REGION", () => {
    expect(rootProviderOptionsFromEnv({ KMS_ROOT_PROVIDER: "aws-kms", KMS_AWS_KMS_KEY_ID: AWS_KEY, AWS_REGION: "eu-west-1" }, defaults)).toEqual({
      kind: "aws-kms",
      keyId: AWS_KEY,
      region: "eu-west-1",
      maxAttempts: 3,
      requestTimeoutMs: 10_000,
    });
  });

  it("reads azure-keyvault settings from AKS workload identity's own variables", () => {
    const options = rootProviderOptionsFromEnv(
      {
        KMS_ROOT_PROVIDER: "azure-keyvault",
        KMS_AZURE_KEY_ID: "https://matih.vault.azure.net/keys/root",
        AZURE_TENANT_ID: "tenant",
        AZURE_CLIENT_ID: "client",
        AZURE_FEDERATED_TOKEN_FILE: "/var/run/secrets/azure/tokens/azure-identity-token",
        AZURE_AUTHORITY_HOST: "https://login.microsoftonline.com/",
      },
      defaults,
    );
    expect(options).toMatchObject({
      kind: "azure-keyvault",
      keyId: "https://matih.vault.azure.net/keys/root",
      algorithm: "RSA-OAEP-256",
      credential: { tenantId: "tenant", clientId: "client", federatedTokenFile: "/var/run/secrets/azure/tokens/azure-identity-token", authorityHost: "https://login.microsoftonline.com/" },
    });
  });

  it("reads gcp-kms settings with an endpoint host:port", () => {
    expect(
      rootProviderOptionsFromEnv(
        { KMS_ROOT_PROVIDER: "gcp-kms", KMS_GCP_KMS_KEY_NAME: "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/root", KMS_GCP_KMS_ENDPOINT: "europe-west1-kms.googleapis.com:443" },
        defaults,
      ),
    ).toEqual({
      kind: "gcp-kms",
      keyName: "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/root",
      apiEndpoint: "europe-west1-kms.googleapis.com",
      port: 443,
      timeoutMs: 10_000,
      maxRetries: 2,
    });
  });

  it.each([
    ["an unknown kind", { KMS_ROOT_PROVIDER: "vault" }, /KMS_ROOT_PROVIDER must be one of/],
    ["pkcs11 without a PIN", { KMS_ROOT_PROVIDER: "pkcs11", KMS_PKCS11_LIBRARY: "l", KMS_PKCS11_TOKEN_LABEL: "t", KMS_PKCS11_KEY_LABEL: "k" }, /KMS_PKCS11_PIN and KMS_PKCS11_PIN_FILE/],
    ["pkcs11 with an empty PIN file", { KMS_ROOT_PROVIDER: "pkcs11", KMS_PKCS11_LIBRARY: "l", KMS_PKCS11_TOKEN_LABEL: "t", KMS_PKCS11_KEY_LABEL: "k", KMS_PKCS11_PIN_FILE: "<empty>" }, /is empty/],
    ["aws-kms without a key", { KMS_ROOT_PROVIDER: "aws-kms", AWS_REGION: "us-east-1" }, /KMS_AWS_KMS_KEY_ID/],
    ["aws-kms without a region", { KMS_ROOT_PROVIDER: "aws-kms", KMS_AWS_KMS_KEY_ID: AWS_KEY }, /KMS_AWS_REGION/],
    ["azure with both a secret and a federated token", { KMS_ROOT_PROVIDER: "azure-keyvault", KMS_AZURE_KEY_ID: "https://v.vault.azure.net/keys/k", AZURE_TENANT_ID: "t", AZURE_CLIENT_ID: "c", KMS_AZURE_CLIENT_SECRET: "s", AZURE_FEDERATED_TOKEN_FILE: "/f" }, /exactly one of/],
    ["gcp with a key version instead of a key", { KMS_ROOT_PROVIDER: "gcp-kms", KMS_GCP_KMS_KEY_NAME: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1" }, /KMS_GCP_KMS_KEY_NAME must be/],
    ["a timeout out of range", { KMS_ROOT_PROVIDER: "gcp-kms", KMS_GCP_KMS_KEY_NAME: "projects/p/locations/l/keyRings/r/cryptoKeys/k", KMS_PROVIDER_TIMEOUT_SECONDS: "0" }, /KMS_PROVIDER_TIMEOUT_SECONDS/],
  ])("refuses %s, naming the variable", (_what, env, message) => {
    const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === "<empty>" ? join(dir, "empty") : v]));
    expect(() => rootProviderOptionsFromEnv(resolved, defaults)).toThrow(RootProviderConfigError);
    expect(() => rootProviderOptionsFromEnv(resolved, defaults)).toThrow(message);
  });
});

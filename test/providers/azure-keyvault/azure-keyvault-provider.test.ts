/**
 * azure-keyvault beyond the shared contract: the bearer challenge, key
 * versions, the disabled-RSA-key gap, A256KW, deleted keys and tenants.
 */
import { CryptographyClient } from "@azure/keyvault-keys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEntraCredential } from "../../../server/src/providers/azure-keyvault/entra-credential.js";
import { startLocalKeyVault, type LocalKeyVault } from "../targets/azure-keyvault.js";

const context = { purpose: "dek" as const, tenantId: "acme", keyId: "pii", version: 1 };

/** The versioned key id an envelope names (bytes 3.. after its format byte and u16 length). */
function kidOf(blob: Buffer): string {
  return blob.subarray(3, 3 + blob.readUInt16BE(1)).toString("utf8");
}

describe("azure-keyvault provider against the local Key Vault", () => {
  let local: LocalKeyVault;
  beforeAll(async () => {
    local = await startLocalKeyVault();
  });
  afterAll(async () => {
    await local.close();
  });

  it("answers the vault's bearer challenge: unauthenticated first requests get 401, and one token serves every later call", async () => {
    const before = local.server.requestCounts();
    const provider = await local.open(local.keyA);
    for (let i = 0; i < 5; i++) await provider.unwrap(await provider.wrap(Buffer.alloc(32, i), context), context);
    const after = local.server.requestCounts();
    expect((after["challenge"] ?? 0) - (before["challenge"] ?? 0)).toBeGreaterThanOrEqual(1);
    expect(after["token"]).toBe(1); // the credential's cache: one token for the whole run so far
    expect((after["wrapkey"] ?? 0) - (before["wrapkey"] ?? 0)).toBe(5);
    await provider.close();
  });

  it("wraps under the key's current version and still unwraps blobs of older versions after the key rotates", async () => {
    const keyId = local.server.createKey("rotating");
    const provider = await local.open(keyId);
    const old = await provider.wrap(Buffer.alloc(32, 1), context);
    const v2 = local.server.rotateKey("rotating");
    const fresh = await provider.wrap(Buffer.alloc(32, 2), context);
    expect(kidOf(fresh)).toBe(v2);
    expect(kidOf(old)).not.toBe(v2);
    expect(await provider.unwrap(old, context)).toEqual(Buffer.alloc(32, 1));
    expect(await provider.unwrap(fresh, context)).toEqual(Buffer.alloc(32, 2));
    await provider.close();
  });

  it("a pinned version keeps wrapping under that version, and refuses blobs of other versions", async () => {
    local.server.createKey("pinned");
    const v2 = local.server.rotateKey("pinned");
    const pinned = await local.open(v2);
    expect(pinned.keyRef).toBe(v2);
    local.server.rotateKey("pinned");
    const blob = await pinned.wrap(Buffer.alloc(32, 3), context);
    expect(kidOf(blob)).toBe(v2);
    const latest = await local.open(`${local.server.vaultUrl}/keys/pinned`);
    const other = await latest.wrap(Buffer.alloc(32, 3), context);
    await expect(pinned.unwrap(other, context)).rejects.toMatchObject({ failure: "invalid-ciphertext" });
    await pinned.close();
    await latest.close();
  });

  it("refuses to wrap under a disabled RSA key, although the vault itself lets that public-key operation through", async () => {
    const keyId = local.server.createKey("disabled-rsa");
    const provider = await local.open(keyId);
    local.server.setKeyEnabled("disabled-rsa", false);
    await expect(provider.wrap(Buffer.alloc(32, 4), context)).rejects.toMatchObject({ failure: "key-disabled" });
    // The gap the provider's check closes: the SDK alone wraps happily.
    const app = local.server.addClient();
    const credential = createEntraCredential({ tenantId: local.server.tenantId, ...app, authorityHost: local.server.authorityHost, agent: local.server.agent });
    const raw = new CryptographyClient(`${local.server.vaultUrl}/keys/disabled-rsa`, credential, { agent: local.server.agent });
    await expect(raw.wrapKey("RSA-OAEP-256", Buffer.alloc(32, 4))).resolves.toMatchObject({ result: expect.any(Uint8Array) });
    await provider.close();
  });

  it("wraps with A256KW under a Managed HSM oct-HSM key", async () => {
    const keyId = local.server.createKey("hsm-aes", "oct-HSM");
    const provider = await local.open(keyId, { algorithm: "A256KW" });
    const blob = await provider.wrap(Buffer.alloc(2400, 8), context);
    expect(await provider.unwrap(blob, context)).toEqual(Buffer.alloc(2400, 8));
    local.server.setKeyEnabled("hsm-aes", false);
    await expect(provider.unwrap(blob, context)).rejects.toMatchObject({ failure: "key-disabled" });
    await provider.close();
  });

  it("refuses an algorithm the key type cannot do", async () => {
    const provider = await local.open(local.keyA, { algorithm: "A256KW" });
    await expect(provider.wrap(Buffer.alloc(32, 1), context)).rejects.toMatchObject({ failure: "other", message: expect.stringContaining("cannot wrap with A256KW") });
    await provider.close();
  });

  it("a deleted key is key-disabled, on wrap and on unwrap", async () => {
    const keyId = local.server.createKey("deleted");
    const provider = await local.open(keyId);
    const blob = await provider.wrap(Buffer.alloc(32, 5), context);
    local.server.setKeyDeleted("deleted", true);
    await expect(provider.wrap(Buffer.alloc(32, 5), context)).rejects.toMatchObject({ failure: "key-disabled" });
    await expect(provider.unwrap(blob, context)).rejects.toMatchObject({ failure: "key-disabled" });
    await provider.close();
  });

  it("a revoked client secret is permission-denied", async () => {
    const app = local.server.addClient();
    const credential = createEntraCredential({ tenantId: local.server.tenantId, ...app, authorityHost: local.server.authorityHost, agent: local.server.agent });
    const keyId = local.server.createKey("secret-revoked");
    const { openAzureKeyVaultProvider } = await import("../../../server/src/providers/azure-keyvault/azure-keyvault-provider.js");
    const provider = await openAzureKeyVaultProvider({ keyId, credential, agent: local.server.agent, maxRetries: 0 });
    await provider.wrap(Buffer.alloc(32, 6), context);
    local.server.revokeClientSecret(app.clientId);
    await expect(provider.wrap(Buffer.alloc(32, 6), context)).rejects.toMatchObject({ failure: "permission-denied" });
    await provider.close();
  });

  it("goes to the tenant the vault's challenge names only when the credential allows it", async () => {
    const app = local.server.addClient();
    const { openAzureKeyVaultProvider } = await import("../../../server/src/providers/azure-keyvault/azure-keyvault-provider.js");
    const homeElsewhere = { tenantId: "11111111-2222-3333-4444-555555555555", ...app, authorityHost: local.server.authorityHost, agent: local.server.agent };
    const strict = await openAzureKeyVaultProvider({ keyId: local.keyA, credential: createEntraCredential(homeElsewhere), agent: local.server.agent, maxRetries: 0 });
    await expect(strict.wrap(Buffer.alloc(32, 7), context)).rejects.toMatchObject({ failure: "permission-denied", message: expect.stringContaining("additionallyAllowedTenants") });
    const allowing = await openAzureKeyVaultProvider({
      keyId: local.keyA,
      credential: createEntraCredential({ ...homeElsewhere, additionallyAllowedTenants: [local.server.tenantId] }),
      agent: local.server.agent,
      maxRetries: 0,
    });
    expect(await allowing.unwrap(await allowing.wrap(Buffer.alloc(32, 7), context), context)).toEqual(Buffer.alloc(32, 7));
    await strict.close();
    await allowing.close();
  });

  it("refuses at open a key id that is not https://{vault}/keys/{name}", async () => {
    await expect(local.open("http://matih.vault.localtest/keys/x")).rejects.toThrow(/keyId must be/);
    await expect(local.open(`${local.server.vaultUrl}/secrets/x`)).rejects.toThrow(/keyId must be/);
  });
});

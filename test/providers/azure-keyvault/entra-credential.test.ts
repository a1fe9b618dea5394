import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEntraCredential, EntraTokenError } from "../../../server/src/providers/azure-keyvault/entra-credential.js";
import { startKeyVaultServer, type KeyVaultServer } from "./key-vault-server.js";

const SCOPE = "https://vault.localtest/.default";

describe("Entra client-credentials TokenCredential", () => {
  let server: KeyVaultServer;
  let dir: string;
  beforeAll(async () => {
    server = await startKeyVaultServer();
    dir = await mkdtemp(join(tmpdir(), "kms-entra-"));
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const base = () => ({ tenantId: server.tenantId, authorityHost: server.authorityHost, agent: server.agent });

  it("gets a token with a client secret, caches it, and shares one request among concurrent callers", async () => {
    const app = server.addClient();
    const credential = createEntraCredential({ ...base(), ...app });
    const before = server.requestCounts()["token"] ?? 0;
    const tokens = await Promise.all(Array.from({ length: 10 }, () => credential.getToken(SCOPE)));
    expect(new Set(tokens.map((t) => t?.token)).size).toBe(1);
    await credential.getToken([SCOPE]);
    expect(server.requestCounts()["token"]).toBe(before + 1);
    expect(tokens[0]).toMatchObject({ tokenType: "Bearer", expiresOnTimestamp: expect.any(Number) });
  });

  it("asks again once the cached token is within five minutes of expiring", async () => {
    const app = server.addClient();
    let now = Date.now();
    const credential = createEntraCredential({ ...base(), ...app, now: () => now });
    const before = server.requestCounts()["token"] ?? 0;
    await credential.getToken(SCOPE);
    now += 56 * 60 * 1000; // the server's tokens live an hour
    await credential.getToken(SCOPE);
    expect(server.requestCounts()["token"]).toBe(before + 2);
  });

  it("authenticates with a federated token file (AKS workload identity), reading the file on every request", async () => {
    const file = join(dir, "azure-identity-token");
    await writeFile(file, "first-assertion\n");
    const app = server.addFederatedClient("first-assertion");
    const credential = createEntraCredential({ ...base(), clientId: app.clientId, federatedTokenFile: file });
    await expect(credential.getToken(SCOPE)).resolves.toMatchObject({ token: expect.any(String) });
    await writeFile(file, "rotated-assertion\n");
    const fresh = createEntraCredential({ ...base(), clientId: app.clientId, federatedTokenFile: file });
    await expect(fresh.getToken(SCOPE)).rejects.toMatchObject({ failure: "permission-denied", message: expect.stringContaining("AADSTS700213") });
  });

  it("classes a refusal as permission-denied (never echoing the secret) and no answer as unavailable", async () => {
    const app = server.addClient();
    const wrong = createEntraCredential({ ...base(), clientId: app.clientId, clientSecret: "wrong-secret-value" });
    const error = await wrong.getToken(SCOPE).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EntraTokenError);
    expect(error).toMatchObject({ failure: "permission-denied", message: expect.stringContaining("AADSTS7000215") });
    expect(String((error as Error).message)).not.toContain("wrong-secret-value");
    const nowhere = createEntraCredential({ ...base(), ...app, authorityHost: "https://nowhere.localtest:1" }); // resolved to 127.0.0.1 by the agent; nothing listens on port 1
    await expect(nowhere.getToken(SCOPE)).rejects.toMatchObject({ failure: "unavailable" });
  });

  it("refuses an authority that is not https, and a configuration with both or neither of secret and token file", () => {
    expect(() => createEntraCredential({ tenantId: "t", clientId: "c", clientSecret: "s", authorityHost: "http://login.example" })).toThrow(/https/);
    expect(() => createEntraCredential({ tenantId: "t", clientId: "c" })).toThrow(/exactly one/);
    expect(() => createEntraCredential({ tenantId: "t", clientId: "c", clientSecret: "s", federatedTokenFile: "/f" })).toThrow(/exactly one/);
  });
});

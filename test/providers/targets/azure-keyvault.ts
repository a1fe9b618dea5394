/** `azure-keyvault` against the local Key Vault (HTTPS, bearer challenge, Entra token endpoint), through @azure/keyvault-keys. */
import { asRootKeyProvider } from "../../../server/src/providers/as-root-key-provider.js";
import { openAzureKeyVaultProvider, type AzureKeyVaultProviderOptions } from "../../../server/src/providers/azure-keyvault/azure-keyvault-provider.js";
import { createEntraCredential } from "../../../server/src/providers/azure-keyvault/entra-credential.js";
import type { KeyWrappingProvider } from "../../../server/src/providers/key-wrapping-provider.js";
import { startKeyVaultServer, type KeyVaultServer } from "../azure-keyvault/key-vault-server.js";
import type { ContractTarget } from "../contract/key-wrapping-contract.js";

export interface LocalKeyVault {
  readonly server: KeyVaultServer;
  readonly clientId: string;
  readonly keyA: string;
  readonly keyB: string;
  open(keyId: string, overrides?: Partial<AzureKeyVaultProviderOptions>): Promise<KeyWrappingProvider>;
  close(): Promise<void>;
}

export async function startLocalKeyVault(): Promise<LocalKeyVault> {
  const server = await startKeyVaultServer();
  const app = server.addClient();
  const keyA = server.createKey("matih-root");
  const keyB = server.createKey("matih-other");
  const credential = createEntraCredential({
    tenantId: server.tenantId,
    clientId: app.clientId,
    clientSecret: app.clientSecret,
    authorityHost: server.authorityHost,
    agent: server.agent,
  });
  return {
    server,
    clientId: app.clientId,
    keyA,
    keyB,
    open: (keyId, overrides = {}) => openAzureKeyVaultProvider({ keyId, credential, agent: server.agent, maxRetries: 1, timeoutMs: 3_000, ...overrides }),
    close: () => server.close(),
  };
}

export function azureKeyVaultTarget(): ContractTarget {
  return {
    name: "azure-keyvault (local Key Vault REST server)",
    skip: undefined,
    scenarios: { unavailable: true, "permission-denied": true, "key-disabled": true },
    async open() {
      const local = await startLocalKeyVault();
      const a = await local.open(local.keyA);
      const b = await local.open(local.keyB);
      const root = asRootKeyProvider(a);
      const name = "matih-root";
      return {
        root,
        otherRoot: asRootKeyProvider(b),
        wrapping: { a, b },
        async stage(scenario) {
          switch (scenario) {
            case "unavailable":
              await local.server.stop();
              return { provider: a, root, isKeyA: true, end: () => local.server.start() };
            case "permission-denied":
              local.server.setAccess(name, local.clientId, false);
              return { provider: a, root, isKeyA: true, end: async () => local.server.setAccess(name, local.clientId, true) };
            case "key-disabled":
              local.server.setKeyEnabled(name, false);
              return { provider: a, root, isKeyA: true, end: async () => local.server.setKeyEnabled(name, true) };
          }
        },
        async close() {
          await a.close();
          await b.close();
          await local.close();
        },
      };
    },
  };
}

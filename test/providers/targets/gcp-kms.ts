/** `gcp-kms` against the local Cloud KMS gRPC server, through @google-cloud/kms. */
import { asRootKeyProvider } from "../../../server/src/providers/as-root-key-provider.js";
import { openGcpKmsProvider, type GcpKmsProviderOptions } from "../../../server/src/providers/gcp-kms/gcp-kms-provider.js";
import type { KeyWrappingProvider } from "../../../server/src/providers/key-wrapping-provider.js";
import { startCloudKmsServer, type CloudKmsServer } from "../gcp-kms/cloud-kms-server.js";
import type { ContractTarget } from "../contract/key-wrapping-contract.js";

export interface LocalCloudKms {
  readonly server: CloudKmsServer;
  readonly keyA: string;
  readonly keyB: string;
  open(keyName: string, overrides?: Partial<GcpKmsProviderOptions>): Promise<KeyWrappingProvider>;
  close(): Promise<void>;
}

export async function startLocalCloudKms(): Promise<LocalCloudKms> {
  const server = await startCloudKmsServer();
  const keyA = server.createKey("matih", "root");
  const keyB = server.createKey("matih", "other");
  return {
    server,
    keyA,
    keyB,
    open: (keyName, overrides = {}) =>
      openGcpKmsProvider({ keyName, apiEndpoint: server.host, port: server.port, tls: "insecure", timeoutMs: 3_000, maxRetries: 1, ...overrides }),
    close: () => server.close(),
  };
}

export function gcpKmsTarget(): ContractTarget {
  return {
    name: "gcp-kms (local Cloud KMS gRPC server)",
    skip: undefined,
    scenarios: { unavailable: true, "permission-denied": true, "key-disabled": true },
    async open() {
      const local = await startLocalCloudKms();
      const a = await local.open(local.keyA);
      const b = await local.open(local.keyB);
      const root = asRootKeyProvider(a);
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
              local.server.setAccess(local.keyA, false);
              return { provider: a, root, isKeyA: true, end: async () => local.server.setAccess(local.keyA, true) };
            case "key-disabled":
              local.server.setPrimaryState(local.keyA, "DISABLED");
              return { provider: a, root, isKeyA: true, end: async () => local.server.setPrimaryState(local.keyA, "ENABLED") };
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

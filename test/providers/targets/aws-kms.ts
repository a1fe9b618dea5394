/** `aws-kms` against the local AWS KMS server (JSON 1.1, SigV4 verified), through @aws-sdk/client-kms. */
import { asRootKeyProvider } from "../../../server/src/providers/as-root-key-provider.js";
import { openAwsKmsProvider, type AwsKmsProviderOptions } from "../../../server/src/providers/aws-kms/aws-kms-provider.js";
import type { KeyWrappingProvider } from "../../../server/src/providers/key-wrapping-provider.js";
import { startAwsKmsServer, type AwsKmsServer } from "../aws-kms/aws-kms-server.js";
import type { ContractTarget } from "../contract/key-wrapping-contract.js";

export const AWS_TEST_CREDENTIALS = { accessKeyId: "AKIAMATIHTEST0000001", secretAccessKey: "matih/test/secret/key/0000000000000000000" };

export interface LocalAwsKms {
  readonly server: AwsKmsServer;
  readonly keyA: string;
  readonly keyB: string;
  open(keyId: string, overrides?: Partial<AwsKmsProviderOptions>): Promise<KeyWrappingProvider>;
  close(): Promise<void>;
}

export async function startLocalAwsKms(): Promise<LocalAwsKms> {
  const server = await startAwsKmsServer({ credentials: [AWS_TEST_CREDENTIALS] });
  const keyA = server.createKey("alias/matih-root");
  const keyB = server.createKey();
  return {
    server,
    keyA,
    keyB,
    open: (keyId, overrides = {}) =>
      openAwsKmsProvider({
        keyId,
        region: server.region,
        endpoint: server.endpoint,
        credentials: AWS_TEST_CREDENTIALS,
        maxAttempts: 2,
        connectTimeoutMs: 1_000,
        requestTimeoutMs: 3_000,
        ...overrides,
      }),
    close: () => server.close(),
  };
}

export function awsKmsTarget(): ContractTarget {
  return {
    name: "aws-kms (local AWS KMS server)",
    skip: undefined,
    scenarios: { unavailable: true, "permission-denied": true, "key-disabled": true },
    async open() {
      const local = await startLocalAwsKms();
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
              local.server.setAccess(local.keyA, AWS_TEST_CREDENTIALS.accessKeyId, false);
              return { provider: a, root, isKeyA: true, end: async () => local.server.setAccess(local.keyA, AWS_TEST_CREDENTIALS.accessKeyId, true) };
            case "key-disabled":
              local.server.setKeyState(local.keyA, "Disabled");
              return { provider: a, root, isKeyA: true, end: async () => local.server.setKeyState(local.keyA, "Enabled") };
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

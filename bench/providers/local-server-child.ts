/**
 * Runs one provider's local wire-protocol server (from test/providers) in its
 * own process for `npm run bench:providers`, so the server's work does not
 * share the measured client's event loop. Reports what a client needs over
 * IPC ("ready"), then serves until SIGTERM.
 */
import { startAwsKmsServer } from "../../test/providers/aws-kms/aws-kms-server.js";
import { startKeyVaultServer } from "../../test/providers/azure-keyvault/key-vault-server.js";
import { startCloudKmsServer } from "../../test/providers/gcp-kms/cloud-kms-server.js";
import { AWS_TEST_CREDENTIALS } from "../../test/providers/targets/aws-kms.js";

export type LocalServerReady =
  | { readonly type: "ready"; readonly kind: "aws-kms"; readonly endpoint: string; readonly region: string; readonly keyId: string }
  | {
      readonly type: "ready";
      readonly kind: "azure-keyvault";
      readonly keyId: string;
      readonly tenantId: string;
      readonly clientId: string;
      readonly clientSecret: string;
      readonly authorityHost: string;
      readonly caPem: string;
    }
  | { readonly type: "ready"; readonly kind: "gcp-kms"; readonly host: string; readonly port: number; readonly keyName: string };

const kind = process.argv[2];
const send = (message: LocalServerReady) => process.send?.(message);
let close: () => Promise<void>;

switch (kind) {
  case "aws-kms": {
    const server = await startAwsKmsServer({ credentials: [AWS_TEST_CREDENTIALS] });
    send({ type: "ready", kind, endpoint: server.endpoint, region: server.region, keyId: server.createKey() });
    close = () => server.close();
    break;
  }
  case "azure-keyvault": {
    const server = await startKeyVaultServer();
    const app = server.addClient();
    send({ type: "ready", kind, keyId: server.createKey("bench"), tenantId: server.tenantId, ...app, authorityHost: server.authorityHost, caPem: server.caPem });
    close = () => server.close();
    break;
  }
  case "gcp-kms": {
    const server = await startCloudKmsServer();
    send({ type: "ready", kind, host: server.host, port: server.port, keyName: server.createKey("bench", "root") });
    close = () => server.close();
    break;
  }
  default:
    throw new Error(`unknown server kind ${String(kind)}`);
}

process.once("SIGTERM", () => {
  void close().finally(() => process.exit(0));
});

/** What `npm start` prints in development mode: how to call the server it just started. */
import { relative } from "node:path";

export function printDevelopmentBanner(url: string, tlsDir: string, dataDir: string): void {
  const tls = relative(process.cwd(), tlsDir) || ".";
  const data = relative(process.cwd(), dataDir) || ".";
  const api = `${url}/api/v1/tenants/acme/encryption`;
  process.stdout.write(
    [
      "",
      `matih-kms (development mode) on ${url} — data in ${data}/, PKI in ${tls}/`,
      "",
      "As a tenant (bearer token):",
      `  TOKEN=$(npm run --silent dev-token -- acme)`,
      `  curl --cacert ${tls}/ca.pem -H "Authorization: Bearer $TOKEN" \\`,
      `       --json '{"keyId":"pii"}' ${api}/keys`,
      `  curl --cacert ${tls}/ca.pem -H "Authorization: Bearer $TOKEN" ${api}/status`,
      "",
      "As an internal service (mutual TLS, identity spiffe://matih.local/dev):",
      `  curl --cacert ${tls}/ca.pem --cert ${tls}/client.pem --key ${tls}/client-key.pem \\`,
      `       --json '{}' ${api}/keys/pii:generateDataKey`,
      "",
      "Stop with Ctrl-C (drains in-flight calls).",
      "",
    ].join("\n"),
  );
}

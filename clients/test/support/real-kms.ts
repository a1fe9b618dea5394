/**
 * The REAL matih-kms for the client's end-to-end tests: `startKms` in
 * development mode (dev PKI and dev token key generated in a temp data
 * directory), listening on an ephemeral localhost port, on PostgreSQL when
 * the suite has it (a throw-away schema) and on PGlite otherwise.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../../server/src/api/logger.js";
import { loadConfig } from "../../../server/src/config.js";
import { signDevToken } from "../../../server/src/dev/dev-token-issuer.js";
import { startKms, type RunningKms } from "../../../server/src/start-kms.js";
import type { OpenedDatabase } from "../../../server/src/storage/open-database.js";
import { PKI_FILE_NAMES } from "../../../server/src/tls/dev-pki.js";
import { engines } from "../../../test/support/databases.js";

export interface RealKms {
  readonly kms: RunningKms;
  /** "https://127.0.0.1:port" */
  readonly url: string;
  /** The dev PKI's files: the CA, and the dev service identity (spiffe://matih.local/dev). */
  readonly files: { readonly ca: string; readonly cert: string; readonly key: string };
  readonly pem: { readonly ca: string; readonly cert: string; readonly key: string };
  /** A bearer token for a tenant, signed by the dev token key. */
  tokenFor(tenantId: string): Promise<string>;
  close(): Promise<void>;
}

export async function startRealKms(env: Record<string, string> = {}): Promise<RealKms> {
  const dataDir = await mkdtemp(join(tmpdir(), "kms-client-e2e-"));
  const engine = engines[0];
  if (engine === undefined) throw new Error("no database engine enabled");
  let database: OpenedDatabase | undefined;
  let kms: RunningKms | undefined;
  try {
    database = await engine.open();
    kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0", KMS_MODE: "development", KMS_WORKERS: "off", ...env }), {
      database,
      logger: silentLogger,
    });
    const tlsDir = kms.devTlsDir as string;
    const files = {
      ca: join(tlsDir, PKI_FILE_NAMES.caCert),
      cert: join(tlsDir, PKI_FILE_NAMES.clientCert),
      key: join(tlsDir, PKI_FILE_NAMES.clientKey),
    };
    const [ca, cert, key] = await Promise.all([readFile(files.ca, "utf8"), readFile(files.cert, "utf8"), readFile(files.key, "utf8")]);
    const running = kms;
    const db = database;
    return {
      kms: running,
      url: running.server.url,
      files,
      pem: { ca, cert, key },
      tokenFor: (tenantId) => signDevToken(dataDir, tenantId),
      async close() {
        await running.stop(500);
        await db.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await kms?.stop(0).catch(() => undefined);
    await database?.close().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

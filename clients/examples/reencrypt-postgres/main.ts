/**
 * The worked example, end to end on a real PostgreSQL:
 *
 *   npx tsx clients/examples/reencrypt-postgres/main.ts [--rows 20000] [--batch 200] [--concurrency 8]
 *
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) is where the
 * example's own schema is created, filled, re-encrypted and dropped again.
 * KMS_URL and KMS_TLS_DIR (ca.pem, client.pem, client-key.pem) point at a
 * running matih-kms; without them a development KMS is started in-process in
 * a temporary directory.
 *
 * It creates customers whose e-mail addresses are encrypted under the key's
 * DEK version 1, rotates the key (version 2 becomes primary), re-encrypts the
 * column with a progress display, and reports the remaining counts per DEK
 * version to the service, which then shows version 1 holding nothing back.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { createKmsClient } from "../../src/client/kms-client.js";
import { createEnvelopeEncryption } from "../../src/envelope/envelope-encryption.js";
import { isKmsError } from "../../src/errors/kms-error.js";
import { ErrorReason } from "../../src/gen.js";
import { createTerminalProgress } from "../../src/reencrypt/progress.js";
import { createKmsGrpcTransport } from "../../src/transport/grpc-transport.js";
import { createExampleSchema, dropExampleSchema, type ExampleDatabase } from "./customer.table.js";
import { DATASET_ID, reencryptCustomers, seedCustomers } from "./reencrypt-customers.js";

const { values } = parseArgs({ options: { rows: { type: "string" }, batch: { type: "string" }, concurrency: { type: "string" } } });
const rows = Number(values.rows ?? 20_000);
const tenantId = "example";
const keyId = "pii";

async function connectKms(): Promise<{ url: string; tlsDir: string; stop(): Promise<void> }> {
  if (process.env["KMS_URL"] !== undefined && process.env["KMS_TLS_DIR"] !== undefined) {
    return { url: process.env["KMS_URL"], tlsDir: process.env["KMS_TLS_DIR"], stop: async () => {} };
  }
  // A development KMS in-process (PGlite, local master key, dev PKI in a temp dir).
  const { startKms } = await import("../../../server/src/start-kms.js");
  const { loadConfig } = await import("../../../server/src/config.js");
  const { silentLogger } = await import("../../../server/src/api/logger.js");
  const dataDir = await mkdtemp(join(tmpdir(), "kms-example-"));
  const kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0" }), { logger: silentLogger });
  console.error(`started a development KMS at ${kms.server.url}`);
  return {
    url: kms.server.url,
    tlsDir: kms.devTlsDir as string,
    async stop() {
      await kms.stop(1_000);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const db = new Kysely<ExampleDatabase>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test", max: 10 }) }),
  });
  const schema = `kms_client_example_${randomBytes(4).toString("hex")}`;
  const server = await connectKms();
  const kms = createKmsClient({
    transport: createKmsGrpcTransport({
      baseUrl: server.url,
      tls: { ca: { path: join(server.tlsDir, "ca.pem") }, cert: { path: join(server.tlsDir, "client.pem") }, key: { path: join(server.tlsDir, "client-key.pem") } },
    }),
  });
  const envelope = createEnvelopeEncryption({ kms, cache: { maxAgeMs: 5 * 60_000 } });
  try {
    await createExampleSchema(db, schema);
    try {
      await kms.keys.createKey({ tenantId, keyId, description: "customer PII (example)" });
    } catch (error) {
      if (!isKmsError(error, ErrorReason.KEY_ALREADY_EXISTS)) throw error;
    }
    const before = (await kms.keys.getKey({ tenantId, keyId })).key?.primaryDekVersion;
    console.error(`encrypting ${rows.toLocaleString("en-US")} e-mail addresses into ${schema}.customers under DEK version ${before}`);
    await seedCustomers(db, schema, envelope, tenantId, keyId, rows);
    const rotated = await kms.keys.rotateKey({ tenantId, keyId });
    console.error(`rotated ${tenantId}/${keyId}: DEK version ${rotated.key?.primaryDekVersion} is primary; re-encrypting`);

    const progress = createTerminalProgress();
    const result = await reencryptCustomers({
      db,
      schema,
      kms,
      envelope,
      tenantId,
      keyId,
      ...(values.batch === undefined ? {} : { batchSize: Number(values.batch) }),
      ...(values.concurrency === undefined ? {} : { concurrency: Number(values.concurrency) }),
      onProgress: progress.update,
    });
    progress.finish();
    const counts = [...result.counts.entries()].map(([v, n]) => `v${v}: ${n}`).join(", ");
    console.log(`re-encrypted ${result.reencrypted} of ${result.scanned} rows to DEK version ${result.primaryDekVersion} (${result.failed} failed); reported ${counts}`);
    const { datasets } = await kms.datasets.listDatasets({ tenantId, keyId });
    const reported = datasets.find((d) => d.datasetId === DATASET_ID);
    console.log(`the service's inventory for ${DATASET_ID}: ${reported?.counts.map((c) => `v${c.dekVersion}: ${c.ciphertexts}`).join(", ")}`);
    console.log(`cache: ${JSON.stringify({ hits: envelope.stats().hits, misses: envelope.stats().misses, rpcs: envelope.stats().rpcs })}`);
  } finally {
    await envelope.close();
    await dropExampleSchema(db, schema);
    await db.destroy();
    await server.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});

/**
 * The worked example, as a function the test calls and main.ts runs: fill a
 * PostgreSQL table with customers whose e-mail is encrypted under the key's
 * current DEK, rotate the key, then re-encrypt the column to the new primary
 * DEK version with the helper and report what remains per version.
 */
import { sql, type Kysely } from "kysely";
import type { KmsClient } from "../../src/client/kms-client.js";
import type { EnvelopeEncryption } from "../../src/envelope/envelope-encryption.js";
import { StoreKind } from "../../src/gen.js";
import { reencryptDataset, type ReencryptionProgress, type ReencryptionResult } from "../../src/reencrypt/reencrypt.js";
import { emailContext, type ExampleDatabase } from "./customer.table.js";
import { customerEmailSource, customerEmailWriter, tableCheckpointStore } from "./customer-ciphertexts.js";

export const DATASET_ID = "customers-email";

/** Inserts `count` customers, each e-mail encrypted under the key's primary DEK. */
export async function seedCustomers(db: Kysely<ExampleDatabase>, schema: string, envelope: EnvelopeEncryption, tenantId: string, keyId: string, count: number): Promise<void> {
  const table = db.withSchema(schema);
  for (let first = 1; first <= count; first += 500) {
    const ids = Array.from({ length: Math.min(500, count - first + 1) }, (_, i) => first + i);
    const rows = await Promise.all(
      ids.map(async (id) => ({
        id,
        name: `Customer ${id}`,
        email_enc: await envelope.encrypt(tenantId, keyId, Buffer.from(`customer${id}@example.com`), emailContext(id)),
      })),
    );
    await table.insertInto("customers").values(rows).execute();
  }
  // keep the serial in step with the explicit ids
  await sql`select setval(pg_get_serial_sequence(${`${schema}.customers`}, 'id'), ${count})`.execute(db);
}

export interface ReencryptCustomersOptions {
  readonly db: Kysely<ExampleDatabase>;
  readonly schema: string;
  readonly kms: KmsClient;
  readonly envelope: EnvelopeEncryption;
  readonly tenantId: string;
  readonly keyId: string;
  readonly batchSize?: number;
  readonly concurrency?: number;
  readonly onProgress?: (progress: ReencryptionProgress) => void;
  readonly signal?: AbortSignal;
}

/** Re-encrypts the e-mail column to the primary DEK version and reports the inventory (resumable). */
export function reencryptCustomers(options: ReencryptCustomersOptions): Promise<ReencryptionResult<number>> {
  const { db, schema } = options;
  return reencryptDataset({
    envelope: options.envelope,
    tenantId: options.tenantId,
    keyId: options.keyId,
    datasetId: DATASET_ID,
    source: customerEmailSource(db, schema),
    writer: customerEmailWriter(db, schema),
    context: (record) => emailContext(record.id),
    batchSize: options.batchSize ?? 200,
    concurrency: options.concurrency ?? 8,
    checkpoint: tableCheckpointStore(db, schema, DATASET_ID),
    inventory: options.kms.datasets,
    register: { storeKind: StoreKind.POSTGRES, description: `${schema}.customers.email_enc` },
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
}

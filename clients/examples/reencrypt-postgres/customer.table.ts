/**
 * The example's table: customers whose e-mail address is stored encrypted
 * (an envelope, in a bytea column), and the table the re-encryption run keeps
 * its checkpoint in. Row types first, then the DDL, kysely style.
 */
import { sql, type Generated, type Kysely } from "kysely";

export interface CustomerTable {
  id: Generated<number>;
  name: string;
  /** An envelope from @matih/kms-client, bound to the context { table, column, id }. */
  email_enc: Buffer;
}

export interface ReencryptionCheckpointTable {
  dataset_id: string;
  checkpoint: string;
  updated_at: Generated<Date>;
}

export interface ExampleDatabase {
  customers: CustomerTable;
  reencryption_checkpoints: ReencryptionCheckpointTable;
}

/** The encryption context of a customer's e-mail: a ciphertext cannot be moved to another row or column. */
export function emailContext(id: number): { table: string; column: string; id: string } {
  return { table: "customers", column: "email", id: String(id) };
}

export async function createExampleSchema(db: Kysely<ExampleDatabase>, schema: string): Promise<void> {
  await db.schema.createSchema(schema).execute();
  const inSchema = db.withSchema(schema);
  await inSchema.schema
    .createTable("customers")
    .addColumn("id", "serial", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("email_enc", "bytea", (c) => c.notNull())
    .execute();
  await inSchema.schema
    .createTable("reencryption_checkpoints")
    .addColumn("dataset_id", "text", (c) => c.primaryKey())
    .addColumn("checkpoint", "text", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function dropExampleSchema(db: Kysely<ExampleDatabase>, schema: string): Promise<void> {
  await db.schema.dropSchema(schema).ifExists().cascade().execute();
}

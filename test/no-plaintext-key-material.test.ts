/**
 * Plaintext key material must never reach the database or a log line. A full
 * scenario (AES and RSA keys, data keys, rotations with KEK re-wrap,
 * revocation, refusals, an internal fault) runs while every plaintext DEK and
 * KEK it produces is collected; then every row of every table and every
 * captured log line is scanned for each of them, raw, hex and base64.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KekAlgorithm } from "../gen/matih/kms/v1/resources_pb.js";
import { createJsonLinesLogger } from "../server/src/api/logger.js";
import { MASTER_KEY_FILE } from "../server/src/providers/local/local-root-provider.js";
import { engines } from "./support/databases.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";

describe.each(engines)("no plaintext key material on $name", (engine) => {
  let kms: TestKms;
  const logLines: string[] = [];
  const secrets = new Map<string, Buffer>();

  beforeAll(async () => {
    kms = await createTestKms(engine, { logger: createJsonLinesLogger({ write: (line) => logLines.push(line) }) });
  });
  afterAll(async () => {
    await kms?.close();
  });

  const remember = (label: string, bytes: Uint8Array) => secrets.set(`${label}:${Buffer.from(bytes).toString("hex").slice(0, 8)}`, Buffer.from(bytes));

  /** Unwraps every KEK version that still has material, so its plaintext can be searched for. */
  async function collectKekPlaintexts() {
    const rows = await kms.database.db.selectFrom("kek_versions").selectAll().execute();
    for (const row of rows) {
      if (row.wrapped_material === null) continue;
      const plaintext = await kms.context.rootProvider.unwrap(
        row.wrapped_material,
        { tenantId: row.tenant_id, keyId: row.key_id, kekVersion: row.version },
        row.root_key_id,
      );
      remember(`kek ${row.tenant_id}/${row.key_id}/v${row.version}`, plaintext);
    }
  }

  async function runScenario() {
    const { keys, dataKeys } = kms.clients();
    for (const [keyId, kekAlgorithm] of [["aes", KekAlgorithm.AES_256], ["rsa", KekAlgorithm.RSA_4096]] as const) {
      await keys.createKey({ tenantId: "leak", keyId, kekAlgorithm });
      await collectKekPlaintexts();
      const first = await dataKeys.generateDataKey({ tenantId: "leak", keyId });
      remember(`dek ${keyId} v1`, first.plaintext);
      await keys.rotateKey({ tenantId: "leak", keyId });
      remember(`dek ${keyId} v2`, (await dataKeys.generateDataKey({ tenantId: "leak", keyId })).plaintext);
      await keys.rotateKey({ tenantId: "leak", keyId, rotateKek: true });
      await collectKekPlaintexts();
      remember(`dek ${keyId} v3`, (await dataKeys.generateDataKey({ tenantId: "leak", keyId })).plaintext);
      remember(`dek ${keyId} v1 again`, (await dataKeys.decrypt({ tenantId: "leak", keyId, reference: first.reference })).plaintext);
      const tampered = Buffer.from(first.reference);
      tampered[tampered.length - 1]! ^= 0xff;
      await dataKeys.decrypt({ tenantId: "leak", keyId, reference: tampered }).catch(() => undefined);
    }
    // An internal fault: a wrapped DEK corrupted in the database fails to unwrap, and the fault is logged.
    await kms.database.db
      .updateTable("dek_versions")
      .set({ wrapped_material: Buffer.alloc(60, 7) })
      .where("tenant_id", "=", "leak")
      .where("key_id", "=", "aes")
      .where("version", "=", 3)
      .execute();
    await dataKeys.generateDataKey({ tenantId: "leak", keyId: "aes" }).catch(() => undefined);
    await keys.revokeKey({ tenantId: "leak", keyId: "aes" });
    await dataKeys.generateDataKey({ tenantId: "leak", keyId: "aes" }).catch(() => undefined);
    remember("master key", await readFile(join(kms.dataDir, MASTER_KEY_FILE)));
  }

  /** Every secret found in any row of any table or in any log line, as "label where". */
  async function findLeaks(): Promise<{ leaks: string[]; rowsScanned: number; tables: string[] }> {
    // Only this test's schema: introspection lists every schema's tables, other tests' included.
    const { rows: schemaRows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(kms.database.db);
    const schema = schemaRows[0]?.schema;
    const tables = (await kms.database.db.introspection.getTables()).filter((t) => t.schema === schema).map((t) => t.name);
    const haystackBytes: Buffer[] = [];
    const haystackText: string[] = [...logLines];
    let rowsScanned = 0;
    for (const table of tables) {
      const rows = await kms.database.db.selectFrom(table as "keys").selectAll().execute();
      for (const row of rows) {
        rowsScanned += 1;
        for (const value of Object.values(row)) {
          if (value instanceof Uint8Array) haystackBytes.push(Buffer.from(value));
          else if (value !== null && value !== undefined) haystackText.push(String(value));
        }
      }
    }
    const text = haystackText.join("\n");
    const leaks: string[] = [];
    for (const [label, secret] of secrets) {
      const forms = [secret.toString("hex"), secret.toString("base64"), secret.toString("base64url")];
      if (haystackBytes.some((bytes) => bytes.includes(secret))) leaks.push(`${label} as bytes in a row`);
      if (forms.some((form) => text.includes(form))) leaks.push(`${label} as text in a row or log line`);
    }
    return { leaks, rowsScanned, tables };
  }

  it("keeps every plaintext DEK and KEK out of every database row and every log line", async () => {
    await runScenario();
    expect(secrets.size).toBeGreaterThanOrEqual(13);
    expect(logLines.some((line) => line.includes('"level":"error"'))).toBe(true);
    const { leaks, rowsScanned, tables } = await findLeaks();
    expect(tables).toEqual(expect.arrayContaining(["keys", "kek_versions", "dek_versions", "tenants"]));
    expect(rowsScanned).toBeGreaterThan(10);
    expect(leaks).toEqual([]);
  });

  it("would catch a leak: a DEK planted in a row or a log line is reported", async () => {
    const [label, secret] = [...secrets].find(([name]) => name.startsWith("dek"))!;
    await kms.database.db.updateTable("keys").set({ description: secret.toString("base64") }).where("key_id", "=", "rsa").execute();
    logLines.push(JSON.stringify({ msg: "oops", value: secret.toString("hex") }));
    expect((await findLeaks()).leaks).toContain(`${label} as text in a row or log line`);
  });
});

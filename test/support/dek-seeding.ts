/**
 * Gives a key many DEK versions quickly, for re-wrap tests: each is a real
 * random DEK wrapped under the key's primary KEK version with its own context
 * (exactly what RotateKey would store), inserted in bulk instead of through
 * thousands of rotations. The newest becomes PRIMARY, the others
 * DECRYPT_ONLY. Returns each version's plaintext and a DEK reference for it.
 */
import { sql } from "kysely";
import { encodeDekReference } from "../../server/src/crypto/dek-reference.js";
import { generateAes256Key } from "../../server/src/crypto/random.js";
import type { KekAlgorithm } from "../../server/src/domain/key-model.js";
import type { RootKeyProvider } from "../../server/src/domain/root-key-provider.js";
import { dekWrapContext, kekForWrappingFromPublicKey, wrapDek, type KekForWrapping } from "../../server/src/service/kek-material.js";
import type { Executor } from "../../server/src/storage/database.js";

export interface SeededDek {
  readonly version: number;
  readonly plaintext: Buffer;
  readonly reference: Buffer;
}

export async function seedDekVersions(
  db: Executor,
  rootProvider: RootKeyProvider,
  key: { readonly tenantId: string; readonly keyId: string },
  count: number,
  now = new Date(),
): Promise<SeededDek[]> {
  const { tenantId, keyId } = key;
  return db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom("keys").selectAll().where("tenant_id", "=", tenantId).where("key_id", "=", keyId).forUpdate().executeTakeFirstOrThrow();
    const kek = await tx
      .selectFrom("kek_versions")
      .selectAll()
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .where("version", "=", row.primary_kek_version)
      .executeTakeFirstOrThrow();
    const algorithm = row.kek_algorithm as KekAlgorithm;
    const wrapping: KekForWrapping =
      algorithm === "RSA_4096"
        ? kekForWrappingFromPublicKey(kek.public_key!)
        : {
            algorithm,
            key: await rootProvider.unwrap(kek.wrapped_material!, { tenantId, keyId, kekVersion: kek.version }, kek.root_key_id),
          };
    const max = await tx
      .selectFrom("dek_versions")
      .select((eb) => eb.fn.max("version").as("max"))
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .executeTakeFirstOrThrow();
    const first = Number(max.max) + 1;
    const seeded: SeededDek[] = [];
    for (let i = 0; i < count; i++) {
      const version = first + i;
      const plaintext = generateAes256Key();
      seeded.push({ version, plaintext, reference: encodeDekReference({ tenantId, keyId, keyUid: row.key_uid, dekVersion: version }, plaintext) });
    }
    const newest = first + count - 1;
    await tx
      .updateTable("dek_versions")
      .set({ state: "DECRYPT_ONLY", rotate_time: now })
      .where("tenant_id", "=", tenantId)
      .where("key_id", "=", keyId)
      .where("state", "=", "PRIMARY")
      .execute();
    for (let start = 0; start < seeded.length; start += 1_000) {
      const chunk = seeded.slice(start, start + 1_000);
      const versions = chunk.map((d) => d.version);
      const blobs = chunk.map((d) => wrapDek(wrapping, d.plaintext, dekWrapContext(tenantId, keyId, d.version)));
      await sql`
        insert into dek_versions (tenant_id, key_id, version, state, kek_version, wrapped_material, create_time, rotate_time)
        select ${tenantId}, ${keyId}, v.version, case when v.version = ${newest} then 'PRIMARY' else 'DECRYPT_ONLY' end,
               ${kek.version}, v.wrapped, ${now}, case when v.version = ${newest} then null else ${now}::timestamptz end
        from unnest(${versions}::integer[], ${blobs}::bytea[]) as v (version, wrapped)`.execute(tx);
    }
    await tx.updateTable("keys").set({ primary_dek_version: newest }).where("tenant_id", "=", tenantId).where("key_id", "=", keyId).execute();
    if (wrapping.algorithm === "AES_256") wrapping.key.fill(0);
    return seeded;
  });
}

/**
 * The master-key versions the database knows (root_keys) and the one the
 * provider wraps under, kept in step.
 *
 * The database decides which version is CURRENT: the first server to start
 * registers its provider's key, a rotation records the new one. A server whose
 * provider wraps under another version (it started with an older view, or a
 * crash left an unrecorded newer file behind) switches to the recorded one,
 * if its provider can.
 */
import type { Selectable } from "kysely";
import type { RootKeysTable } from "../storage/database.js";
import { CUSTOMER_KEY_PROVIDERS } from "./customer-keys.js";
import type { KmsContext } from "./kms-context.js";

export type RootKeyRow = Selectable<RootKeysTable>;

/** Registers the provider's key when none is CURRENT yet; aligns the provider with the CURRENT one; returns it. */
export async function syncRootKey(context: KmsContext): Promise<RootKeyRow> {
  const provider = context.rootProvider;
  // ON CONFLICT DO NOTHING covers both a known id and an existing CURRENT row (one-current index).
  await context.db
    .insertInto("root_keys")
    .values({ root_key_id: provider.currentKeyId, provider: provider.name, state: "CURRENT", create_time: context.clock.now(), retire_time: null })
    .onConflict((conflict) => conflict.doNothing())
    .execute();
  const current = await readCurrentRootKey(context);
  if (current.root_key_id !== provider.currentKeyId && provider.useKeyVersion !== undefined) {
    await provider.useKeyVersion(current.root_key_id);
  }
  return current;
}

export async function readCurrentRootKey(context: Pick<KmsContext, "db">): Promise<RootKeyRow> {
  const row = await context.db.selectFrom("root_keys").selectAll().where("state", "=", "CURRENT").executeTakeFirst();
  if (row === undefined) throw new Error("no master key is registered as CURRENT");
  return row;
}

/** When the master key `current` is due to be replaced; undefined when scheduled rotation is off (0 days). */
export function nextRootKeyRotationTime(current: RootKeyRow, rotationDays: number): Date | undefined {
  return rotationDays > 0 ? new Date(current.create_time.getTime() + rotationDays * 86_400_000) : undefined;
}

/**
 * KEK versions with material under the master key (customer-managed ones are
 * wrapped by the tenant's own key), and how many of them are still under
 * another master key version than `currentKeyId`.
 */
export async function countKeksByRootKey(context: Pick<KmsContext, "db">, currentKeyId: string): Promise<{ total: number; pending: number }> {
  const row = await context.db
    .selectFrom("kek_versions")
    .select((eb) => [
      eb.fn.countAll<number | string | bigint>().as("total"),
      eb.fn.countAll<number | string | bigint>().filterWhere("root_key_id", "<>", currentKeyId).as("pending"),
    ])
    .where("wrapped_material", "is not", null)
    .where("root_provider", "not in", CUSTOMER_KEY_PROVIDERS)
    .executeTakeFirstOrThrow();
  return { total: Number(row.total), pending: Number(row.pending) };
}

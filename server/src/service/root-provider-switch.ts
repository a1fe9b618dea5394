/**
 * SwitchRootProvider: the master key moves to another provider (local ->
 * pkcs11, aws-kms -> gcp-kms, one AWS key -> another). The configured root
 * provider's key becomes CURRENT (new KEKs are wrapped under it at once), the
 * previous provider's key RETIRING, and a ROOT_REWRAP job re-wraps every KEK
 * still under another master key in the background (jobs/root-rewrap.ts):
 * recorded in one transaction holding the CURRENT row's lock, as a rotation
 * is (root-key-rotation.ts). Calling it again once switched changes nothing.
 *
 * The previous provider stays configured, read-only, until no KEK is under
 * it: `previousRootProviderUsage` says when it may be removed.
 */
import { KmsError } from "../domain/kms-error.js";
import { holdsRootKey, type RootKeyProvider } from "../domain/root-key-provider.js";
import { enqueueJob } from "../jobs/job-store.js";
import type { Executor } from "../storage/database.js";
import { CUSTOMER_KEY_PROVIDERS } from "./customer-keys.js";
import type { KmsContext } from "./kms-context.js";
import { countKeksByRootKey, syncRootKey } from "./root-key-registry.js";

export interface RootKeyTarget {
  readonly provider: string;
  readonly keyId: string;
}

/** The provider and key this server is configured to wrap under (KMS_ROOT_PROVIDER). */
export function configuredRootKey(provider: RootKeyProvider): RootKeyTarget {
  const target = provider.providerSwitch?.to;
  return target === undefined ? { provider: provider.name, keyId: provider.currentKeyId } : { provider: target.name, keyId: target.keyId };
}

/**
 * Makes the configured root provider's key CURRENT. `expected`, when given,
 * must name it: an operator's request reaching a replica configured otherwise
 * is refused rather than switching to a key nobody meant. Returns the job id
 * of the re-wrap, or undefined when the key was CURRENT already.
 */
export async function switchRootProvider(context: KmsContext, expected?: Partial<RootKeyTarget>): Promise<number | undefined> {
  const provider = context.rootProvider;
  const target = configuredRootKey(provider);
  if ((expected?.provider ?? "") !== "" && expected?.provider !== target.provider) {
    throw new KmsError("INVALID_FIELD", `this server's root provider is ${target.provider}, not ${expected?.provider ?? ""}`, { field: "provider" });
  }
  if ((expected?.keyId ?? "") !== "" && expected?.keyId !== target.keyId) {
    throw new KmsError("INVALID_FIELD", `this server's root provider wraps under ${target.keyId}, not ${expected?.keyId ?? ""}`, { field: "key_id" });
  }
  const current = await syncRootKey(context);
  if (current.root_key_id === target.keyId) return undefined;
  if (provider.providerSwitch === undefined) {
    throw new KmsError(
      "INVALID_STATE_TRANSITION",
      `the current master key ${current.root_key_id} (${current.provider}) is not held by this server: configure it as KMS_ROOT_PROVIDER_PREVIOUS before switching`,
    );
  }
  // Nothing may be wrapped under the new key before it has shown it opens what it wraps.
  try {
    await provider.providerSwitch.prove();
  } catch (error) {
    throw new KmsError(
      "PROVIDER_UNAVAILABLE",
      `the ${target.provider} master key ${target.keyId} failed a wrap-and-unwrap probe, so nothing was switched: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error, metadata: { provider: target.provider } },
    );
  }
  const jobId = await recordSwitch(context, target);
  // Align with what the database now records, whichever replica's switch won.
  await syncRootKey(context);
  return jobId;
}

/**
 * At start-up, when no KEK needs the recorded CURRENT master key and this
 * server's provider does not hold it (a root provider reconfigured before any
 * key was made): records the configured key as CURRENT, with nothing to
 * re-wrap.
 */
export async function adoptConfiguredRootKey(context: KmsContext): Promise<void> {
  const target = configuredRootKey(context.rootProvider);
  await recordSwitch(context, target);
  await context.rootProvider.useKeyVersion?.(target.keyId);
}

/** The transaction: previous CURRENT -> RETIRING, target -> CURRENT, a ROOT_REWRAP job over every KEK not under it. */
async function recordSwitch(context: KmsContext, target: RootKeyTarget): Promise<number | undefined> {
  return context.db.transaction().execute(async (tx) => {
    const current = await tx.selectFrom("root_keys").selectAll().where("state", "=", "CURRENT").forUpdate().executeTakeFirst();
    if (current === undefined) throw new Error("no master key is registered as CURRENT");
    if (current.root_key_id === target.keyId) return undefined; // another replica switched first
    const now = context.clock.now();
    await tx.updateTable("root_keys").set({ state: "RETIRING", retire_time: now }).where("root_key_id", "=", current.root_key_id).execute();
    // A key switched away from and back to (its row RETIRED) becomes CURRENT again.
    await tx
      .insertInto("root_keys")
      .values({ root_key_id: target.keyId, provider: target.provider, state: "CURRENT", create_time: now, retire_time: null })
      .onConflict((conflict) => conflict.column("root_key_id").doUpdateSet({ state: "CURRENT", retire_time: null }))
      .execute();
    await tx
      .updateTable("jobs")
      .set({ state: "DONE", finish_time: now, update_time: now, lease_owner: null, lease_until: null, last_error: `superseded by the switch to the ${target.provider} master key ${target.keyId}` })
      .where("kind", "=", "ROOT_REWRAP")
      .where("state", "=", "PENDING")
      .execute();
    const { pending } = await countKeksByRootKey({ db: tx }, target.keyId);
    return enqueueJob(tx, { kind: "ROOT_REWRAP", rootKeyId: target.keyId, total: pending, now });
  });
}

export interface PreviousRootProviderUsage {
  readonly provider: string;
  /** KEK versions still wrapped under a master key only the previous provider holds. */
  readonly keks: number;
  /** Nothing needs the previous provider any more: it may be removed from the configuration. */
  readonly removable: boolean;
}

/** How much still needs the previous root provider; undefined when none is configured. */
export async function previousRootProviderUsage(context: Pick<KmsContext, "db" | "rootProvider">): Promise<PreviousRootProviderUsage | undefined> {
  const from = context.rootProvider.providerSwitch?.from;
  if (from === undefined) return undefined;
  const target = configuredRootKey(context.rootProvider);
  const current = await context.db.selectFrom("root_keys").select("root_key_id").where("state", "=", "CURRENT").executeTakeFirst();
  const keks = (await keksByRootKey(context.db)).filter((group) => from.holds(group.rootKeyId)).reduce((sum, group) => sum + group.keks, 0);
  // Removable only once switched: before, new KEKs are still being wrapped under it.
  return { provider: from.name, keks, removable: keks === 0 && current?.root_key_id === target.keyId };
}

export interface UnheldRootKey {
  readonly rootKeyId: string;
  readonly provider: string;
  readonly keks: number;
}

/** The master keys KEKs are wrapped under that this server's configuration cannot unwrap with. */
export async function unheldRootKeys(context: Pick<KmsContext, "db" | "rootProvider">): Promise<UnheldRootKey[]> {
  return (await keksByRootKey(context.db))
    .filter((group) => !holdsRootKey(context.rootProvider, group.rootKeyId))
    .map((group) => ({ rootKeyId: group.rootKeyId, provider: group.provider, keks: group.keks }));
}

/** KEK versions with material under the master key, by master key (a handful of groups: one per master key ever used). */
async function keksByRootKey(db: Executor): Promise<{ rootKeyId: string; provider: string; keks: number }[]> {
  const rows = await db
    .selectFrom("kek_versions")
    .select((eb) => ["root_key_id", "root_provider", eb.fn.countAll<number | string | bigint>().as("keks")])
    .where("wrapped_material", "is not", null)
    .where("root_provider", "not in", CUSTOMER_KEY_PROVIDERS)
    .groupBy(["root_key_id", "root_provider"])
    .execute();
  return rows.map((row) => ({ rootKeyId: row.root_key_id, provider: row.root_provider, keks: Number(row.keks) }));
}

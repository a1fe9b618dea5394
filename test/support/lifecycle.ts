/**
 * Helpers for the key-lifecycle tests: reading rows and events straight from
 * the database (what was really stored), a root provider that fails for
 * chosen keys, and a database handle that counts the queries sent through it.
 */
import type { Kysely, KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import { KmsError } from "../../server/src/domain/kms-error.js";
import type { RootKeyProvider } from "../../server/src/domain/root-key-provider.js";
import type { Database } from "../../server/src/storage/database.js";
import type { KmsContext } from "../../server/src/service/kms-context.js";

export const DAY_MS = 86_400_000;
export const DAY_S = 86_400;

export async function keyRow(db: Kysely<Database>, tenantId: string, keyId: string) {
  return db.selectFrom("keys").selectAll().where("tenant_id", "=", tenantId).where("key_id", "=", keyId).executeTakeFirstOrThrow();
}

export async function dekRows(db: Kysely<Database>, tenantId: string, keyId: string) {
  return db.selectFrom("dek_versions").selectAll().where("tenant_id", "=", tenantId).where("key_id", "=", keyId).orderBy("version").execute();
}

export async function kekRows(db: Kysely<Database>, tenantId: string, keyId: string) {
  return db.selectFrom("kek_versions").selectAll().where("tenant_id", "=", tenantId).where("key_id", "=", keyId).orderBy("version").execute();
}

/** [version, state] of every DEK version, oldest first. */
export async function dekStates(db: Kysely<Database>, tenantId: string, keyId: string): Promise<[number, string][]> {
  return (await dekRows(db, tenantId, keyId)).map((row) => [row.version, row.state]);
}

/** The key's events in commit order, as "TYPE" or "TYPE:dekVersion". */
export async function eventsOf(db: Kysely<Database>, tenantId: string, keyId: string): Promise<string[]> {
  const rows = await db
    .selectFrom("key_events")
    .select(["type", "dek_version"])
    .where("tenant_id", "=", tenantId)
    .where("key_id", "=", keyId)
    .orderBy("event_id")
    .execute();
  return rows.map((row) => (row.dek_version === null ? row.type : `${row.type}:${row.dek_version}`));
}

/** A root provider that refuses every wrap and unwrap for the given key ids (as an unreachable HSM would). */
export function failingFor(provider: RootKeyProvider, keyIds: ReadonlySet<string>): RootKeyProvider {
  const refuse = (keyId: string) => new KmsError("PROVIDER_UNAVAILABLE", `root key provider unreachable (test fault for key ${keyId})`);
  return new Proxy(provider, {
    get(target, property, receiver) {
      if (property === "wrap") {
        return async (plaintext: Uint8Array, context: { keyId: string; tenantId: string; kekVersion: number }) => {
          if (keyIds.has(context.keyId)) throw refuse(context.keyId);
          return target.wrap(plaintext, context);
        };
      }
      if (property === "unwrap") {
        return async (wrapped: Uint8Array, context: { keyId: string; tenantId: string; kekVersion: number }, rootKeyId: string) => {
          if (keyIds.has(context.keyId)) throw refuse(context.keyId);
          return target.unwrap(wrapped, context, rootKeyId);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A context whose database counts the queries it sends (same connection, same data). */
export function withQueryCounter(context: KmsContext): { context: KmsContext; queries: () => number } {
  let count = 0;
  const plugin: KyselyPlugin = {
    transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
      count++;
      return args.node;
    },
    async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      return args.result;
    },
  };
  return { context: { ...context, db: context.db.withPlugin(plugin) }, queries: () => count };
}

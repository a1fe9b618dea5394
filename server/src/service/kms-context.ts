import type { Kysely } from "kysely";
import type { Clock } from "../domain/clock.js";
import type { RootKeyProvider } from "../domain/root-key-provider.js";
import type { Database } from "../storage/database.js";
import type { CustomerKeys } from "./customer-keys.js";
import type { KekCache } from "./kek-cache.js";

/** What every key operation needs; built once in main.ts. */
export interface KmsContext {
  readonly db: Kysely<Database>;
  readonly rootProvider: RootKeyProvider;
  readonly clock: Clock;
  readonly kekCache: KekCache;
  /** BYOK: customer-key providers and the plan gate; absent, customer-managed keys are refused. */
  readonly customerKeys?: CustomerKeys | undefined;
}

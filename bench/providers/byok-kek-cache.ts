/**
 * The BYOK phase of `npm run bench:providers`: how often a Decrypt on a
 * customer-managed key reaches the customer's KMS. A key whose KEK is wrapped
 * by a key in the local AWS KMS server (in this process, so its request
 * counter can be read), a few DEK versions, the KEK cache emptied, then N
 * Decrypts with C in flight through the service (decryptDataKey: reference
 * parsing, the PGlite read, the KEK cache, the DEK unwrap). Target: one
 * customer-KMS call per KEK per cache lifetime, however many Decrypts.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { systemClock } from "../../server/src/domain/clock.js";
import { openLocalRootProvider } from "../../server/src/providers/local/local-root-provider.js";
import { createKey } from "../../server/src/service/create-key.js";
import { createCustomerKeys } from "../../server/src/service/customer-keys.js";
import { decryptDataKey } from "../../server/src/service/decrypt-data-key.js";
import { generateDataKey } from "../../server/src/service/generate-data-key.js";
import { createKekCache } from "../../server/src/service/kek-cache.js";
import type { KmsContext } from "../../server/src/service/kms-context.js";
import { rotateKey } from "../../server/src/service/rotate-key.js";
import { migrateToLatest } from "../../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase } from "../../server/src/storage/open-database.js";
import { startLocalAwsKms } from "../../test/providers/targets/aws-kms.js";

export interface ByokKekCacheResult {
  readonly decrypts: number;
  readonly concurrency: number;
  readonly dekVersions: number;
  /** KEK versions the Decrypts needed (one: DEK rotation keeps the KEK). */
  readonly kekVersions: number;
  readonly errors: number;
  /** Every request the customer's KMS received during the Decrypts, and its Decrypt calls among them. */
  readonly customerKmsCalls: number;
  readonly customerKmsDecryptCalls: number;
  /** Decrypts answered without a customer-KMS call. */
  readonly kekCacheHitRate: number;
  readonly decryptsPerSecond: number;
  /** The server's KEK-cache settings (KMS_KEK_CACHE_TTL_SECONDS, KMS_KEK_CACHE_MAX_ENTRIES defaults). */
  readonly cacheMaxAgeSeconds: number;
  readonly cacheMaxEntries: number;
}

const TENANT = "bench-enterprise";
const DEK_VERSIONS = 4;

export async function measureByokKekCache(options: { readonly decrypts: number; readonly concurrency: number }): Promise<ByokKekCacheResult> {
  const aws = await startLocalAwsKms();
  const dataDir = await mkdtemp(join(tmpdir(), "bench-byok-"));
  const database = await openDatabase({});
  const root = await openLocalRootProvider(dataDir);
  const customerKeys = createCustomerKeys({ enterpriseTenants: [TENANT], open: (_provider, keyUri) => aws.open(keyUri) });
  const cache = { maxEntries: 10_000, maxAgeMs: 300_000 };
  const context: KmsContext = { db: database.db, rootProvider: root, clock: systemClock, kekCache: createKekCache(cache), customerKeys };
  try {
    await migrateToLatest(database.db);
    await createKey(context, { tenantId: TENANT, keyId: "byok", customerKey: { provider: "AWS_KMS", keyUri: aws.keyB } });
    const references: Uint8Array[] = [];
    for (let version = 1; version <= DEK_VERSIONS; version++) {
      if (version > 1) await rotateKey(context, { tenantId: TENANT, keyId: "byok", rotateKek: false });
      references.push((await generateDataKey(context, { tenantId: TENANT, keyId: "byok" })).reference);
    }
    const kekVersions = await database.db.selectFrom("kek_versions").select("version").where("tenant_id", "=", TENANT).execute();

    // From a cold cache: the first Decrypt must reach the customer's KMS.
    context.kekCache.clear();
    const before = aws.server.requestCounts();
    let next = 0;
    let errors = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: options.concurrency }, async () => {
        while (next < options.decrypts) {
          const reference = references[next++ % references.length] as Uint8Array;
          try {
            await decryptDataKey(context, { tenantId: TENANT, keyId: "byok", reference });
          } catch {
            errors++;
          }
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = aws.server.requestCounts();
    const delta = (name: string) => (after[name] ?? 0) - (before[name] ?? 0);
    const customerKmsCalls = Object.keys(after).reduce((sum, name) => sum + delta(name), 0);
    const customerKmsDecryptCalls = delta("Decrypt");
    return {
      decrypts: options.decrypts,
      concurrency: options.concurrency,
      dekVersions: DEK_VERSIONS,
      kekVersions: kekVersions.length,
      errors,
      customerKmsCalls,
      customerKmsDecryptCalls,
      kekCacheHitRate: (options.decrypts - customerKmsDecryptCalls) / options.decrypts,
      decryptsPerSecond: options.decrypts / seconds,
      cacheMaxAgeSeconds: cache.maxAgeMs / 1000,
      cacheMaxEntries: cache.maxEntries,
    };
  } finally {
    context.kekCache.clear();
    await customerKeys.close();
    await root.close();
    await database.close();
    await aws.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * npm run bench:rewrap — the KEK re-wrap at scale, on PostgreSQL.
 *
 * 1. A fresh database; `--keys` keys sharing `--rows` DEK rows, each row a
 *    real DEK wrapped under its key's KEK with its own context (seeded in
 *    bulk with SQL: a pool of distinct DEKs, every row sealed separately).
 * 2. A KEK rotation of every key (RotateKey with rotateKek: the jobs are
 *    enqueued), then the re-wrap through the real job engine (claims,
 *    leases, batches of one transaction, `--lanes` of them at once), timed.
 *    A sample of DEKs is then decrypted through the service to prove it.
 * 3. The limit: one bulk UPDATE of the same rows (the same columns changed,
 *    the same indexes maintained), timed.
 * The process holds a hot-path lease as a server does: every batch's commit
 * notifies and waits for the replicas' acknowledgement (decision 0008).
 * Both phases start from a compacted table after a checkpoint. Prints DEKs/s
 * and the ratio; writes JSON to bench/results/.
 *
 * Options: --rows 1000000 --keys 10 --batch 1000 --lanes 2 (the server defaults on PostgreSQL)
 *          --keep (keep the database and data directory) --no-bulk (skip the bulk UPDATE)
 * Database: KMS_BENCH_DATABASE_URL, else KMS_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test
 * (a new database is created beside it and dropped at the end).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { sql } from "kysely";
import { silentLogger } from "../server/src/api/logger.js";
import { encodeDekReference } from "../server/src/crypto/dek-reference.js";
import { generateAes256Key } from "../server/src/crypto/random.js";
import { systemClock } from "../server/src/domain/clock.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { openLocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { createKey } from "../server/src/service/create-key.js";
import { decryptDataKey } from "../server/src/service/decrypt-data-key.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import { dekWrapContext, wrapDek } from "../server/src/service/kek-material.js";
import type { KmsContext } from "../server/src/service/kms-context.js";
import { rotateKey } from "../server/src/service/rotate-key.js";
import { migrateToLatest } from "../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase, type OpenedDatabase } from "../server/src/storage/open-database.js";
import { adminQuery } from "./lib/admin-query.js";

const TENANT = "bench";
const DEK_POOL = 256;
const SEED_CHUNK = 20_000;
const SAMPLE = 2_000;

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive whole number`);
  return value;
}

const rows = option("rows", 1_000_000);
const keyCount = option("keys", 10);
const batchSize = option("batch", 1_000);
const lanes = option("lanes", 2);
const keep = process.argv.includes("--keep");
const skipBulk = process.argv.includes("--no-bulk");
const baseUrl = process.env["KMS_BENCH_DATABASE_URL"] ?? process.env["KMS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

const say = (line: string) => process.stdout.write(`${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const perSecond = (count: number, ms: number) => Math.round((count * 1000) / ms);
const thousands = (value: number) => value.toLocaleString("en-US");

async function main(): Promise<void> {
  const dbName = `kms_bench_rewrap_${Date.now()}`;
  const admin = new URL(baseUrl);
  const url = new URL(baseUrl);
  url.pathname = `/${dbName}`;
  await adminQuery(admin.toString(), `create database ${dbName}`);
  const dataDir = await mkdtemp(join(tmpdir(), "kms-bench-rewrap-"));
  let opened: OpenedDatabase | undefined;
  try {
    opened = await openDatabase({ databaseUrl: url.toString(), poolSize: lanes + 2 });
    await migrateToLatest(opened.db);
    // As a server runs it: holding a hot-path lease, so each batch's commit waits for replicas (here: itself).
    await opened.startHotPathLease?.({ leaseMs: 3_000 });
    const rootProvider = await openLocalRootProvider(dataDir);
    const context: KmsContext = { db: opened.db, rootProvider, clock: systemClock, kekCache: createKekCache({ maxEntries: 1_000, maxAgeMs: 600_000 }) };
    try {
      await run(context, opened);
    } finally {
      await rootProvider.close();
    }
  } finally {
    await opened?.close();
    if (!keep) await rm(dataDir, { recursive: true, force: true });
    if (!keep) await adminQuery(admin.toString(), `drop database if exists ${dbName} with (force)`);
    else say(`kept database ${dbName} and data directory ${dataDir}`);
  }
}

async function run(context: KmsContext, opened: OpenedDatabase): Promise<void> {
  const db = context.db;
  const perKey = Math.ceil(rows / keyCount);
  say(`matih-kms re-wrap benchmark: ${thousands(perKey * keyCount)} DEK rows over ${keyCount} keys; batches of ${batchSize}, ${lanes} lanes`);
  say(`machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);

  // Seed: per key, versions 2..perKey+1 under KEK version 1; the pool's DEKs cycle, each row sealed with its own context.
  const pool = Array.from({ length: DEK_POOL }, () => generateAes256Key());
  const seedStart = performance.now();
  const keyUids = new Map<string, Buffer>();
  for (let k = 0; k < keyCount; k++) {
    const keyId = `key-${k}`;
    await createKey(context, { tenantId: TENANT, keyId });
    const kekRow = await db.selectFrom("kek_versions").selectAll().where("key_id", "=", keyId).executeTakeFirstOrThrow();
    const kek = await context.rootProvider.unwrap(kekRow.wrapped_material!, { tenantId: TENANT, keyId, kekVersion: 1 }, kekRow.root_key_id);
    for (let start = 0; start < perKey; start += SEED_CHUNK) {
      const versions: number[] = [];
      const blobs: Buffer[] = [];
      for (let i = start; i < Math.min(perKey, start + SEED_CHUNK); i++) {
        const version = i + 2;
        versions.push(version);
        blobs.push(wrapDek({ algorithm: "AES_256", key: kek }, pool[version % DEK_POOL]!, dekWrapContext(TENANT, keyId, version)));
      }
      await sql`
        insert into dek_versions (tenant_id, key_id, version, state, kek_version, wrapped_material, create_time, rotate_time)
        select ${TENANT}, ${keyId}, v.version, 'DECRYPT_ONLY', 1, v.wrapped, now(), now()
        from unnest(${versions}::integer[], ${blobs}::bytea[]) as v (version, wrapped)`.execute(db);
    }
    kek.fill(0);
    const row = await db.selectFrom("keys").select("key_uid").where("key_id", "=", keyId).executeTakeFirstOrThrow();
    keyUids.set(keyId, row.key_uid);
  }
  const total = Number((await db.selectFrom("dek_versions").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
  say(`seeded ${thousands(total)} DEK rows in ${seconds(performance.now() - seedStart)}`);

  await compact(opened);
  // The rotations: every key's KEK version 1 RETIRING, one KEK_REWRAP job each.
  for (let k = 0; k < keyCount; k++) await rotateKey(context, { tenantId: TENANT, keyId: `key-${k}`, rotateKek: true });
  const toRewrap = Number((await db.selectFrom("jobs").select((eb) => eb.fn.sum<number>("total").as("n")).executeTakeFirstOrThrow()).n);

  const rewrapStart = performance.now();
  const outcome = await drainJobs(context, { workerId: "bench", batchSize, leaseMs: 300_000, concurrency: lanes }, { logger: silentLogger });
  const rewrapMs = performance.now() - rewrapStart;
  const jobs = await db.selectFrom("jobs").select(["state", "done", "total"]).execute();
  if (outcome.failures > 0 || jobs.some((job) => job.state !== "DONE" || job.done !== job.total)) {
    throw new Error(`the re-wrap did not complete: ${JSON.stringify(outcome)} ${JSON.stringify(jobs)}`);
  }
  const rewrapRate = perSecond(toRewrap, rewrapMs);
  say(`re-wrap: ${thousands(toRewrap)} DEKs in ${seconds(rewrapMs)} = ${thousands(rewrapRate)} DEKs/s (${outcome.batches} batches)`);

  // Proof: a sample of DEKs decrypts, through the service, to the DEK it was seeded with.
  for (let i = 0; i < SAMPLE; i++) {
    const keyId = `key-${i % keyCount}`;
    const version = 2 + Math.floor(Math.random() * perKey);
    const expected = pool[version % DEK_POOL]!;
    const reference = encodeDekReference({ tenantId: TENANT, keyId, keyUid: keyUids.get(keyId)!, dekVersion: version }, expected);
    const answer = await decryptDataKey(context, { tenantId: TENANT, keyId, reference });
    if (!answer.plaintext.equals(expected)) throw new Error(`DEK ${keyId} v${version} decrypted to another key`);
  }
  const under = await db.selectFrom("dek_versions").select("kek_version").distinct().execute();
  if (under.length !== 1 || under[0]?.kek_version !== 2) throw new Error(`DEKs left under KEK versions ${JSON.stringify(under)}`);
  say(`verified: ${thousands(SAMPLE)} random DEKs decrypt; every row is under KEK version 2`);

  if (skipBulk) return;
  await compact(opened);
  // The limit: the same rows, the same columns changed, in one statement.
  const bulkStart = performance.now();
  const bulk = await sql`
    update dek_versions set kek_version = 1, wrapped_material = wrapped_material
    where tenant_id = ${TENANT} and version <= ${perKey + 1}`.execute(db);
  const bulkMs = performance.now() - bulkStart;
  const bulkRows = Number(bulk.numAffectedRows ?? 0n);
  const bulkRate = perSecond(bulkRows, bulkMs);
  say(`bulk UPDATE (the limit): ${thousands(bulkRows)} rows in ${seconds(bulkMs)} = ${thousands(bulkRate)} rows/s`);

  const ratio = rewrapRate / bulkRate;
  const targets = { fullRewrapUnderSeconds: 120, minRatio: 0.3 };
  const met = rewrapMs < targets.fullRewrapUnderSeconds * 1000 && ratio >= targets.minRatio;
  say(`ratio: ${ratio.toFixed(2)}x the bulk-UPDATE rate (target >= ${targets.minRatio}x; full re-wrap target < ${targets.fullRewrapUnderSeconds} s): ${met ? "met" : "NOT met"}`);

  const results = join(import.meta.dirname, "results");
  await mkdir(results, { recursive: true });
  const file = join(results, `rewrap-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  await writeFile(
    file,
    JSON.stringify(
      {
        benchmark: "rewrap",
        time: new Date().toISOString(),
        machine: { cpus: cpus().length, model: cpus()[0]?.model, loadAverage: loadavg() },
        settings: { rows: toRewrap, keys: keyCount, batchSize, lanes },
        rewrap: { deks: toRewrap, seconds: rewrapMs / 1000, deksPerSecond: rewrapRate, batches: outcome.batches },
        bulkUpdate: { rows: bulkRows, seconds: bulkMs / 1000, rowsPerSecond: bulkRate },
        ratio,
        targets,
        met,
      },
      null,
      2,
    ) + "\n",
  );
  say(`results: ${file}`);
}

/** Both phases start alike: the table rewritten without dead rows, statistics fresh, a checkpoint behind. */
async function compact(opened: OpenedDatabase): Promise<void> {
  await sql`vacuum (full, analyze) dek_versions`.execute(opened.db);
  await sql`checkpoint`.execute(opened.db);
}


main().catch((error: unknown) => {
  process.stderr.write(`bench:rewrap failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

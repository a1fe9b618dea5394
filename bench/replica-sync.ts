/**
 * npm run bench:replica-sync — what hot-path leases cost the writers
 * (docs/decisions/0008-hot-path-leases.md), on PostgreSQL.
 *
 * Every commit that wrote key rows now notifies, then waits in
 * `call hot_path_await_replicas()` until each replica holding a lease has
 * acknowledged. This times RotateKey (one write transaction: a new DEK
 * version, wrapped under the cached KEK; fresh keys for every window) through
 * the service, in one process:
 *
 *   baseline   the same service over a plain kysely PostgresDialect: no wait
 *   1 replica  the service's own database, holding a lease (as one server)
 *   4 replicas the same, plus three more leased pools in this process
 *
 * Each configuration runs `--seconds` one call at a time (latency), then with
 * `--concurrency` calls in flight (throughput), in rounds A-B-C-C-B-A so that
 * drift of the machine shows up as a difference between the halves. Prints
 * calls/s, p50 and p99, and writes JSON to bench/results/.
 *
 * Options: --seconds 4 --concurrency 8 --rounds 2
 * Database: KMS_BENCH_DATABASE_URL, else KMS_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test
 * (a new database is created beside it and dropped at the end).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { systemClock } from "../server/src/domain/clock.js";
import { openLocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { createKey } from "../server/src/service/create-key.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import type { KmsContext } from "../server/src/service/kms-context.js";
import { rotateKey } from "../server/src/service/rotate-key.js";
import type { Database } from "../server/src/storage/database.js";
import { migrateToLatest } from "../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase, type OpenedDatabase } from "../server/src/storage/open-database.js";
import { adminQuery } from "./lib/admin-query.js";
import { argValue } from "./lib/args.js";
import { fixed, table, thousands } from "./lib/report.js";
import { LatencyRecorder } from "./lib/stats.js";

const LEASE_MS = 3_000;
const seconds = Number(argValue("seconds") ?? 4);
const concurrency = Number(argValue("concurrency") ?? 8);
const rounds = Number(argValue("rounds") ?? 2);
const baseUrl = process.env["KMS_BENCH_DATABASE_URL"] ?? process.env["KMS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";
const say = (line: string) => process.stdout.write(`${line}\n`);

type ConfigurationName = "baseline (no wait)" | "1 leased replica" | "4 leased replicas";

interface Measurement {
  readonly configuration: ConfigurationName;
  readonly round: number;
  readonly inFlight: number;
  readonly callsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

async function main(): Promise<void> {
  for (const [name, value] of [["seconds", seconds], ["concurrency", concurrency], ["rounds", rounds]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive whole number`);
  }
  say(`matih-kms replica-sync benchmark: RotateKey, ${seconds} s per window, 1 and ${concurrency} in flight, ${rounds} rounds A-B-C-C-B-A`);
  say(`machine: ${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? "?"}), load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const dbName = `kms_bench_sync_${process.pid}`;
  const url = new URL(baseUrl);
  url.pathname = `/${dbName}`;
  await adminQuery(baseUrl, `create database ${dbName}`);
  const dataDir = await mkdtemp(join(tmpdir(), "kms-bench-sync-"));
  const opened: OpenedDatabase[] = [];
  let plainPool: pg.Pool | undefined;
  try {
    const server = await openDatabase({ databaseUrl: url.toString(), poolSize: concurrency + 2 });
    opened.push(server);
    await migrateToLatest(server.db);
    await server.startHotPathLease!({ leaseMs: LEASE_MS });
    plainPool = new pg.Pool({ connectionString: url.toString(), max: concurrency + 2 });
    const plain = new Kysely<Database>({ dialect: new PostgresDialect({ pool: plainPool }) });
    const rootProvider = await openLocalRootProvider(dataDir);
    const kekCache = createKekCache({ maxEntries: 1_000, maxAgeMs: 600_000 });
    const synced: KmsContext = { db: server.db, rootProvider, clock: systemClock, kekCache };
    const baseline: KmsContext = { ...synced, db: plain };
    // Fresh keys for every window: a key's versions pile up with each rotation, and RotateKey slows with them.
    const freshKeys = async (window: number): Promise<string[]> => {
      const keys = Array.from({ length: concurrency }, (_, index) => `w${window}-k${index}`);
      for (const keyId of keys) await createKey(synced, { tenantId: "bench", keyId });
      return keys;
    };

    const others: OpenedDatabase[] = [];
    const setReplicas = async (count: number): Promise<void> => {
      while (others.length < count) {
        const replica = await openDatabase({ databaseUrl: url.toString(), poolSize: 1 });
        await replica.startHotPathLease!({ leaseMs: LEASE_MS });
        others.push(replica);
        opened.push(replica);
      }
      while (others.length > count) await others.pop()!.close();
    };

    const order: ConfigurationName[] = [];
    const forward: ConfigurationName[] = ["baseline (no wait)", "1 leased replica", "4 leased replicas"];
    for (let round = 0; round < rounds; round++) order.push(...(round % 2 === 0 ? forward : [...forward].reverse()));

    const measurements: Measurement[] = [];
    for (const [index, configuration] of order.entries()) {
      await setReplicas(configuration === "4 leased replicas" ? 3 : 0);
      const context = configuration === "baseline (no wait)" ? baseline : synced;
      for (const inFlight of [1, concurrency]) {
        const keys = await freshKeys(index * 2 + (inFlight === 1 ? 0 : 1));
        const measured = await measure(context, keys.slice(0, inFlight));
        measurements.push({ configuration, round: index + 1, inFlight, ...measured });
        say(`window ${index + 1}: ${configuration}, ${inFlight} in flight: ${thousands(measured.callsPerSecond)} calls/s, p50 ${fixed(measured.p50Ms, 2)} ms, p99 ${fixed(measured.p99Ms, 2)} ms`);
      }
    }
    await setReplicas(0);
    await plain.destroy();
    plainPool = undefined;
    await rootProvider.close();

    say("");
    say("RotateKey, median over the windows of each configuration:");
    const rows: string[][] = [];
    const summary: Record<string, unknown>[] = [];
    const baselineOf = (inFlight: number) => median(measurements.filter((m) => m.configuration === "baseline (no wait)" && m.inFlight === inFlight).map((m) => m.callsPerSecond));
    for (const configuration of forward) {
      for (const inFlight of [1, concurrency]) {
        const own = measurements.filter((m) => m.configuration === configuration && m.inFlight === inFlight);
        const callsPerSecond = median(own.map((m) => m.callsPerSecond));
        const p50Ms = median(own.map((m) => m.p50Ms));
        const p99Ms = median(own.map((m) => m.p99Ms));
        const ratio = callsPerSecond / baselineOf(inFlight);
        rows.push([configuration, String(inFlight), thousands(callsPerSecond), fixed(p50Ms, 2), fixed(p99Ms, 2), `${fixed(ratio, 2)}×`]);
        summary.push({ configuration, inFlight, callsPerSecond, p50Ms, p99Ms, ratioToBaseline: ratio });
      }
    }
    say(table(["configuration", "in flight", "calls/s", "p50 ms", "p99 ms", "vs baseline"], rows, new Set([1, 2, 3, 4, 5])));
    const resultsDir = join(import.meta.dirname, "results");
    await mkdir(resultsDir, { recursive: true });
    const file = join(resultsDir, `replica-sync-${new Date().toISOString().replaceAll(":", "-").replace(".", "-")}.json`);
    await writeFile(file, `${JSON.stringify({ leaseMs: LEASE_MS, seconds, concurrency, rounds, measurements, summary }, null, 2)}\n`);
    say(`results: ${file}`);
  } finally {
    await plainPool?.end();
    for (const database of opened.reverse()) await database.close().catch(() => {});
    await rm(dataDir, { recursive: true, force: true });
    await adminQuery(baseUrl, `drop database if exists ${dbName} with (force)`);
  }
}

async function measure(context: KmsContext, keys: readonly string[]): Promise<{ callsPerSecond: number; p50Ms: number; p99Ms: number }> {
  const latencies = new LatencyRecorder();
  const started = performance.now();
  const until = started + seconds * 1000;
  let calls = 0;
  await Promise.all(
    keys.map(async (keyId) => {
      while (performance.now() < until) {
        const callStarted = performance.now();
        await rotateKey(context, { tenantId: "bench", keyId, rotateKek: false });
        latencies.record(performance.now() - callStarted);
        calls += 1;
      }
    }),
  );
  const elapsed = performance.now() - started;
  const summary = latencies.summary();
  return { callsPerSecond: (calls * 1000) / elapsed, p50Ms: summary.p50Ms, p99Ms: summary.p99Ms };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}


await main();

/**
 * npm run bench:providers [-- options]
 *
 * Wrap and unwrap throughput (ops/s) and latency (p50, p99) of every root
 * provider through the service's RootKeyProvider port, in one run:
 *   local           the master key file (the embedded default), in process;
 *   pkcs11          SoftHSM2, a token initialised for the run (skipped, saying
 *                   why, where SoftHSM2 is not installed);
 *   aws-kms         the local AWS KMS server (JSON 1.1, SigV4 verified);
 *   azure-keyvault  the local Key Vault (HTTPS, bearer challenge);
 *   gcp-kms         the local Cloud KMS (gRPC, CRC32C).
 * The three servers run in child processes, so the figures are the client's
 * own cost (SDK, signing, protocol, TLS) plus a loopback round trip, not a
 * cloud's latency: a real KMS adds its network time (typically 5-30 ms) and
 * enforces request quotas.
 *
 * Each phase: warm-up, then a measuring window with N calls in flight
 * (closed loop). Also reported: the event loop's p99 delay during the window
 * (PKCS#11 calls run on worker threads and must not stall it).
 *
 * Then the BYOK phase (bench/providers/byok-kek-cache.ts): N Decrypts on a key
 * whose KEK is held in the local AWS KMS server, from a cold KEK cache; it
 * reports how many reached the customer's KMS and the KEK cache's hit rate.
 *
 * Options (environment variable in brackets):
 *   --seconds N        measuring window per phase, default 3 [BENCH_SECONDS]
 *   --warmup N         warm-up per phase in seconds, default 1 [BENCH_WARMUP_SECONDS]
 *   --concurrency L    comma-separated calls in flight, default 1,16
 *   --providers L      comma-separated subset, default all
 *   --size N           bytes wrapped, default 32 (a DEK; an RSA-4096 KEK is ~2400)
 *   --byok-decrypts N  Decrypts in the BYOK phase, default 5000; 0 skips it
 *   --byok-concurrency N  Decrypts in flight in the BYOK phase, default 16
 * Results: a table on stdout, JSON in bench/results/providers-<time>.json.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent } from "node:https";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import type { RootKeyProvider } from "../server/src/domain/root-key-provider.js";
import { createRootProvider, type RootProviderOptions } from "../server/src/providers/create-root-provider.js";
import { AWS_TEST_CREDENTIALS } from "../test/providers/targets/aws-kms.js";
import { createSoftHsmToken, softHsmAvailability, type SoftHsmToken } from "../test/providers/pkcs11/softhsm-token.js";
import { cpuMsOf, REPO_ROOT, spawnChild, type Child } from "./lib/processes.js";
import { measureByokKekCache, type ByokKekCacheResult } from "./providers/byok-kek-cache.js";
import { fixed, table, thousands } from "./lib/report.js";
import { LatencyRecorder } from "./lib/stats.js";
import type { LocalServerReady } from "./providers/local-server-child.js";

const KINDS = ["local", "pkcs11", "aws-kms", "azure-keyvault", "gcp-kms"] as const;
type Kind = (typeof KINDS)[number];

const { values: flags } = parseArgs({
  options: {
    seconds: { type: "string" },
    warmup: { type: "string" },
    concurrency: { type: "string" },
    providers: { type: "string" },
    size: { type: "string" },
    "byok-decrypts": { type: "string" },
    "byok-concurrency": { type: "string" },
  },
  strict: true,
});

function positive(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${value}`);
  return n;
}

const seconds = positive(flags.seconds ?? process.env["BENCH_SECONDS"], 3, "seconds");
const warmup = positive(flags.warmup ?? process.env["BENCH_WARMUP_SECONDS"], 1, "warmup");
const concurrencies = (flags.concurrency ?? "1,16").split(",").map((c) => positive(c, 1, "concurrency"));
const size = positive(flags.size, 32, "size");
const byokDecrypts = flags["byok-decrypts"] === "0" ? 0 : positive(flags["byok-decrypts"], 5_000, "byok-decrypts");
const byokConcurrency = positive(flags["byok-concurrency"], 16, "byok-concurrency");
const chosen = (flags.providers ?? KINDS.join(",")).split(",") as Kind[];
for (const kind of chosen) if (!KINDS.includes(kind)) throw new Error(`--providers: unknown provider ${kind}; choose from ${KINDS.join(", ")}`);

interface PhaseResult {
  readonly provider: Kind;
  readonly operation: "wrap" | "unwrap";
  readonly concurrency: number;
  readonly ops: number;
  readonly opsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
  readonly maxMs: number;
  readonly errors: number;
  readonly eventLoopDelayP99Ms: number;
  /** CPU time of this process (the provider's client side; for pkcs11 the token too) per operation: steadier than ops/s on a busy machine. */
  readonly clientCpuUsPerOp: number;
  /** CPU time of the local server's process per operation, where there is one. */
  readonly serverCpuUsPerOp: number | undefined;
}

const context = { tenantId: "bench", keyId: "pii", kekVersion: 1 };

async function measure(
  provider: Kind,
  root: RootKeyProvider,
  operation: "wrap" | "unwrap",
  concurrency: number,
  blobs: readonly Buffer[],
  server: Child | undefined,
): Promise<PhaseResult> {
  const plaintext = Buffer.alloc(size, 0x5a);
  let next = 0;
  const call =
    operation === "wrap"
      ? () => root.wrap(plaintext, context)
      : () => root.unwrap(blobs[next++ % blobs.length] as Buffer, context, root.currentKeyId);
  const run = async (untilMs: number, recorder?: LatencyRecorder): Promise<number> => {
    let errors = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < untilMs) {
          const started = performance.now();
          try {
            await call();
            recorder?.record(performance.now() - started);
          } catch {
            errors += 1;
          }
        }
      }),
    );
    return errors;
  };
  await run(performance.now() + warmup * 1000);
  const recorder = new LatencyRecorder();
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const serverCpuBefore = server === undefined ? 0 : cpuMsOf(server.pid);
  loop.enable();
  const clientCpuBefore = process.cpuUsage();
  const started = performance.now();
  const errors = await run(started + seconds * 1000, recorder);
  const elapsed = (performance.now() - started) / 1000;
  const clientCpu = process.cpuUsage(clientCpuBefore);
  loop.disable();
  const serverCpuMs = server === undefined ? undefined : cpuMsOf(server.pid) - serverCpuBefore;
  const summary = recorder.summary();
  return {
    provider,
    operation,
    concurrency,
    ops: summary.count,
    opsPerSecond: summary.count / elapsed,
    p50Ms: summary.p50Ms,
    p99Ms: summary.p99Ms,
    meanMs: summary.meanMs,
    maxMs: summary.maxMs,
    errors,
    eventLoopDelayP99Ms: loop.percentile(99) / 1e6,
    clientCpuUsPerOp: summary.count === 0 ? 0 : (clientCpu.user + clientCpu.system) / summary.count,
    serverCpuUsPerOp: serverCpuMs === undefined || summary.count === 0 ? undefined : (serverCpuMs * 1000) / summary.count,
  };
}

const loadAtStart = loadavg();

async function main(): Promise<void> {
  const resultsDir = join(REPO_ROOT, "bench", "results");
  await mkdir(resultsDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const children = new Map<Kind, Child>();
  const skipped: Record<string, string> = {};
  let token: SoftHsmToken | undefined;
  const dataDir = await mkdtemp(join(tmpdir(), "bench-providers-"));
  const results: PhaseResult[] = [];
  const agents: Agent[] = [];
  let byok: ByokKekCacheResult | undefined;

  try {
    // Start the local servers first, in parallel.
    const ready = new Map<Kind, LocalServerReady>();
    await Promise.all(
      chosen
        .filter((kind) => kind === "aws-kms" || kind === "azure-keyvault" || kind === "gcp-kms")
        .map(async (kind) => {
          const child = spawnChild({ script: "bench/providers/local-server-child.ts", args: [kind], logFile: join(resultsDir, `providers-${stamp}-${kind}.log`) });
          children.set(kind, child);
          ready.set(kind, await child.next<LocalServerReady>("ready", 60_000));
        }),
    );

    const optionsFor = async (kind: Kind): Promise<RootProviderOptions | string> => {
      const info = ready.get(kind);
      switch (kind) {
        case "local":
          return { kind, dataDir };
        case "pkcs11": {
          const missing = softHsmAvailability().missing;
          if (missing !== undefined) return missing;
          token = await createSoftHsmToken("matih-bench");
          await token.createKey("bench");
          return { kind, library: token.library, tokenLabel: token.tokenLabel, pin: token.pin, keyLabel: "bench", sessions: 4 };
        }
        case "aws-kms":
          if (info?.kind !== "aws-kms") throw new Error("aws-kms server not ready");
          return { kind, keyId: info.keyId, region: info.region, endpoint: info.endpoint, credentials: AWS_TEST_CREDENTIALS };
        case "azure-keyvault": {
          if (info?.kind !== "azure-keyvault") throw new Error("azure-keyvault server not ready");
          const agent = new Agent({
            ca: info.caPem,
            keepAlive: true,
            maxSockets: 64,
            lookup: (_host, lookupOptions, callback) => {
              if ((lookupOptions as { all?: boolean }).all) (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: "127.0.0.1", family: 4 }]);
              else (callback as (e: null, a: string, f: number) => void)(null, "127.0.0.1", 4);
            },
          });
          agents.push(agent);
          return { kind, keyId: info.keyId, credential: { tenantId: info.tenantId, clientId: info.clientId, clientSecret: info.clientSecret, authorityHost: info.authorityHost, agent } };
        }
        case "gcp-kms":
          if (info?.kind !== "gcp-kms") throw new Error("gcp-kms server not ready");
          return { kind, keyName: info.keyName, apiEndpoint: info.host, port: info.port, tls: "insecure" };
      }
    };

    for (const kind of chosen) {
      const options = await optionsFor(kind);
      if (typeof options === "string") {
        skipped[kind] = options;
        console.log(`${kind}: skipped — ${options}`);
        continue;
      }
      const root = await createRootProvider(options);
      try {
        const blobs = await Promise.all(Array.from({ length: 256 }, () => root.wrap(Buffer.alloc(size, 0x5a), context)));
        for (const operation of ["wrap", "unwrap"] as const) {
          for (const concurrency of concurrencies) {
            const result = await measure(kind, root, operation, concurrency, blobs, children.get(kind));
            results.push(result);
            console.log(`${kind} ${operation} x${concurrency}: ${thousands(result.opsPerSecond)} ops/s, p99 ${fixed(result.p99Ms, 2)} ms${result.errors > 0 ? `, ${result.errors} errors` : ""}`);
          }
        }
      } finally {
        await root.close();
      }
    }
    if (byokDecrypts > 0) {
      byok = await measureByokKekCache({ decrypts: byokDecrypts, concurrency: byokConcurrency });
      console.log(`BYOK Decrypt x${byok.decrypts} (${byok.concurrency} in flight): ${byok.customerKmsDecryptCalls} customer-KMS Decrypt calls, hit rate ${(byok.kekCacheHitRate * 100).toFixed(2)}%`);
    }
  } finally {
    await Promise.all([...children.values()].map((child) => child.stop()));
    for (const agent of agents) agent.destroy();
    await token?.cleanup();
    await rm(dataDir, { recursive: true, force: true });
  }

  console.log(
    `\nRoot providers through the RootKeyProvider port: ${size}-byte plaintext, ${seconds} s windows after ${warmup} s warm-up, local servers in child processes` +
      ` (load average at start ${loadAtStart.map((l) => l.toFixed(1)).join(" ")} on ${cpus().length} CPUs)\n`,
  );
  console.log(
    table(
      ["provider", "op", "in flight", "ops/s", "p50 ms", "p99 ms", "max ms", "errors", "loop p99 ms", "client CPU µs/op", "server CPU µs/op"],
      results.map((r) => [
        r.provider,
        r.operation,
        String(r.concurrency),
        thousands(r.opsPerSecond),
        fixed(r.p50Ms, 3),
        fixed(r.p99Ms, 3),
        fixed(r.maxMs, 1),
        String(r.errors),
        fixed(r.eventLoopDelayP99Ms, 2),
        fixed(r.clientCpuUsPerOp, 0),
        r.serverCpuUsPerOp === undefined ? "-" : fixed(r.serverCpuUsPerOp, 0),
      ]),
      new Set([2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ),
  );
  for (const [kind, why] of Object.entries(skipped)) console.log(`\n${kind} skipped: ${why}`);
  if (byok !== undefined) {
    console.log(
      `\nKEK cache under a Decrypt load on a BYOK key (KEK in the local AWS KMS server; cache ${byok.cacheMaxAgeSeconds} s, ${thousands(byok.cacheMaxEntries)} entries; ` +
        `${byok.dekVersions} DEK versions under ${byok.kekVersions} KEK version, cold cache at start)\n`,
    );
    console.log(
      table(
        ["Decrypts", "in flight", "errors", "customer-KMS calls", "of which Decrypt", "KEK-cache hit rate", "Decrypts/s"],
        [[thousands(byok.decrypts), String(byok.concurrency), String(byok.errors), String(byok.customerKmsCalls), String(byok.customerKmsDecryptCalls), `${(byok.kekCacheHitRate * 100).toFixed(2)}%`, thousands(byok.decryptsPerSecond)]],
        new Set([0, 1, 2, 3, 4, 5, 6]),
      ),
    );
  }

  const file = join(REPO_ROOT, "bench", "results", `providers-${stamp}.json`);
  await writeFile(
    file,
    `${JSON.stringify(
      {
        benchmark: "providers",
        date: new Date().toISOString(),
        machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", node: process.version, loadAverageAtStart: loadAtStart },
        settings: { seconds, warmup, concurrencies, size, providers: chosen, byokDecrypts, byokConcurrency },
        skipped,
        results,
        byokKekCache: byok ?? null,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nJSON: ${file}`);
}

await main();

/**
 * npm run bench:hot-path [-- options]
 *
 * The hot-path benchmark (issue 2, "Benchmark"). Every server runs in its own
 * child process and the load generator in another, so the two share the
 * machine's cores as a co-located caller and the KMS would; this process only
 * orchestrates and waits while a phase runs.
 *
 * Phases (each: warm-up, then a measuring window; 64 calls in flight over one
 * HTTP/2 connection; the same @grpc/grpc-js client, protos loaded with
 * @grpc/proto-loader, for every server):
 *   (c) no-op on the project's own stack: createKmsServer (connect-node, TLS,
 *       mTLS, RPC guard, tenant check) with constant stub implementations;
 *   (d) the same no-op on a plain @grpc/grpc-js server with mTLS;
 *   (a) GenerateDataKey against the real server (startKms), 1,000 keys stored
 *       (made through the API with CreateKey);
 *   (b) Decrypt of references GenerateDataKey returned in (a);
 *   then 99,000 more keys are seeded through the storage layer (see
 *   seed/seed-keys.ts) and Decrypt (and GenerateDataKey) run again with
 *   100,000 keys stored.
 *
 * Options (environment variable in brackets):
 *   --seconds N        measuring window per phase, default 10 [BENCH_SECONDS]
 *   --warmup N         warm-up per phase in seconds, default 3 [BENCH_WARMUP_SECONDS]
 *   --concurrency N    calls in flight, default 64
 *   --database D       pglite (default) | postgres | both [BENCH_DATABASE]
 *   --postgres-url U   server to create the throw-away database on,
 *                      default postgres://postgres@127.0.0.1:5432/postgres
 *   --keys N           keys for (a) and (b), default 1000
 *   --large-keys N     keys for the large Decrypt phase, default 100000 (0: skip)
 *   --connect-client   also run the no-ops and GenerateDataKey with the Connect client
 *   --breakdown        also run the experiments that locate the cost: no-ops on
 *                      connect-node alone and on Node http2 (compat and stream
 *                      API, gRPC framed by hand), and the real service behind two
 *                      prototype transports in the same process (a grpc-js
 *                      listener, a hand-written gRPC fast path; more ports)
 *   --instrument       count SQL statements and PGlite time per call
 *   --profile          CPU-profile every server during its measuring windows
 *                      (summaries printed; .cpuprofile files kept in bench/results/)
 *   --server-node-flags=<flags>  extra Node flags for the server children
 *                      (use the = form: the value starts with --)
 *   --node-defaults    run the project's servers (the KMS, the own-stack no-op)
 *                      without the Node flags `npm start` ships them with;
 *                      by default they get those flags, the plain grpc-js no-op
 *                      (and the --breakdown no-ops) Node's defaults
 *   --rounds N         interleaved rounds per database, default 3 (0: none): the
 *                      two no-ops and (a) and (b) again, one window each, in
 *                      A-B-B-A order with all three servers up, so the ratio of
 *                      each round compares windows seconds apart; the verdict
 *                      uses the median round (a shared machine drifts by more
 *                      than the difference being measured within a few minutes)
 *   --no-op-only       run the no-op phases only (quick transport experiments)
 *   --keep             keep the temporary data directories
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import pg from "pg";
import { ensureDevelopmentPki } from "../server/src/tls/dev-pki.js";
import type { ClientLibrary, RpcMethod, RunCommand, RunFailed, RunResult, ServerReady, ServerStats, WindowEdge, WorkItem } from "./lib/messages.js";
import { cpuMsOf, machineBusyMs, memoryOf, REPO_ROOT, spawnChild, type Child } from "./lib/processes.js";
import { shippedNodeFlags } from "./lib/shipped-node-flags.js";
import { formatProfileSummary, summarizeProfile, type ProfileSummary } from "./lib/profile-summary.js";
import { createKeysThroughApi } from "./lib/create-keys.js";
import { fixed, table, thousands } from "./lib/report.js";

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

type DatabaseChoice = "pglite" | "postgres";

const { values: flags } = parseArgs({
  options: {
    seconds: { type: "string" },
    warmup: { type: "string" },
    concurrency: { type: "string" },
    database: { type: "string" },
    "postgres-url": { type: "string" },
    keys: { type: "string" },
    "large-keys": { type: "string" },
    "connect-client": { type: "boolean" },
    breakdown: { type: "boolean" },
    instrument: { type: "boolean" },
    profile: { type: "boolean" },
    "server-node-flags": { type: "string" },
    "node-defaults": { type: "boolean" },
    "no-op-only": { type: "boolean" },
    rounds: { type: "string" },
    keep: { type: "boolean" },
  },
  strict: true,
});

function numberOption(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number, got ${value}`);
  return n;
}

const options = {
  seconds: numberOption(flags.seconds ?? process.env["BENCH_SECONDS"], 10, "seconds"),
  warmupSeconds: numberOption(flags.warmup ?? process.env["BENCH_WARMUP_SECONDS"], 3, "warmup"),
  concurrency: numberOption(flags.concurrency, 64, "concurrency"),
  databases: databaseList(flags.database ?? process.env["BENCH_DATABASE"] ?? "pglite"),
  postgresUrl: flags["postgres-url"] ?? "postgres://postgres@127.0.0.1:5432/postgres",
  keys: numberOption(flags.keys, 1_000, "keys"),
  largeKeys: numberOption(flags["large-keys"], 100_000, "large-keys"),
  connectClient: flags["connect-client"] === true,
  breakdown: flags.breakdown === true,
  instrument: flags.instrument === true,
  profile: flags.profile === true,
  serverNodeFlags: (flags["server-node-flags"] ?? "").split(/\s+/).filter((f) => f !== ""),
  /** What `npm start` gives the server; for the project's own servers only (the KMS, the own-stack no-op). */
  shippedNodeFlags: flags["node-defaults"] === true ? [] : shippedNodeFlags(),
  keep: flags.keep === true,
  noOpOnly: flags["no-op-only"] === true,
  rounds: numberOption(flags.rounds, 3, "rounds"),
};

function databaseList(value: string): DatabaseChoice[] {
  if (value === "pglite" || value === "postgres") return [value];
  if (value === "both") return ["pglite", "postgres"];
  throw new Error(`--database must be pglite, postgres or both, got ${value}`);
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

interface PhaseRecord {
  readonly id: string;
  readonly label: string;
  readonly database: DatabaseChoice | undefined;
  readonly keysStored: number | undefined;
  readonly server: string;
  readonly serverDescription: string;
  readonly client: ClientLibrary;
  readonly method: RpcMethod;
  readonly reqPerSec: number;
  readonly latency: RunResult["latency"];
  readonly completed: number;
  readonly errors: number;
  readonly wrongAnswers: number;
  readonly errorSamples: readonly string[];
  readonly windowMs: number;
  readonly warmupCalls: number;
  /** CPU of the server process over the window: % of one core, and per completed call. */
  readonly serverCpuPercent: number;
  readonly serverCpuUsPerCall: number;
  readonly clientCpuPercent: number;
  readonly clientCpuUsPerCall: number;
  /** PostgreSQL runs: the CPU of this database's backends. */
  readonly databaseCpuPercent?: number;
  readonly databaseCpuUsPerCall?: number;
  /**
   * CPU the rest of the machine used during the window (% of one core): other
   * processes competing for the same cores. High values mean a disturbed phase.
   */
  readonly otherCpuPercent: number;
  /** --instrument: per completed call. */
  readonly statementsPerCall?: number;
  readonly pgliteQueryUsPerCall?: number;
  readonly profile?: ProfileSummary;
  /** Set for the interleaved rounds' windows (reported apart from the phase table). */
  readonly round?: number;
}

interface ServerRecord {
  readonly name: string;
  readonly description: string;
  readonly database: DatabaseChoice | undefined;
  readonly keysStored: number | undefined;
  readonly peakRssMiB: number | undefined;
}

const phases: PhaseRecord[] = [];
const servers: ServerRecord[] = [];
const seeding: Array<{ database: DatabaseChoice; keys: number; ms: number; method: string }> = [];

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

const startedAt = new Date();
const stamp = startedAt.toISOString().replace(/[:.]/g, "-");
const resultsDir = join(REPO_ROOT, "bench", "results");
const workDir = await mkdtemp(join(tmpdir(), "kms-bench-"));
const logsDir = join(workDir, "logs");
await mkdir(logsDir, { recursive: true });
await mkdir(resultsDir, { recursive: true });
const profilesDir = join(resultsDir, `profiles-${stamp}`);
if (options.profile) await mkdir(profilesDir, { recursive: true });

function progress(message: string): void {
  const seconds = ((performance.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stderr.write(`[${seconds}s] ${message}\n`);
}
const t0 = performance.now();

const loadGenerator = spawnChild({ script: "bench/load/load-generator.ts", logFile: join(logsDir, "load-generator.log") });
await loadGenerator.next("ready", 60_000);

interface RunningServer {
  readonly child: Child;
  readonly name: string;
  readonly port: number;
  readonly description: string;
  readonly tlsDir: string;
  readonly database: DatabaseChoice | undefined;
  readonly keysStored: number | undefined;
  /** --breakdown on the KMS: the prototype listeners' ports (grpcJs, fastPath). */
  readonly extraPorts: Readonly<Record<string, number>>;
  /** PostgreSQL: the database name, to find its backends. */
  readonly pgDatabase?: string;
  /** Answers "stats" requests (the KMS child with --instrument). */
  readonly counters: boolean;
}

async function startServer(args: {
  name: string;
  script: string;
  /** The project's own server stack: runs with the Node flags it ships with. */
  shipped: boolean;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  tlsDir: string;
  database?: DatabaseChoice;
  keysStored?: number;
  pgDatabase?: string;
}): Promise<RunningServer> {
  const child = spawnChild({
    script: args.script,
    args: args.args ?? [],
    env: args.env ?? process.env,
    nodeFlags: [...(args.shipped ? options.shippedNodeFlags : []), ...options.serverNodeFlags],
    logFile: join(logsDir, `${args.name.replace(/[^a-z0-9-]+/gi, "_")}.log`),
  });
  const ready = await child.next<ServerReady>("ready", 180_000);
  const extraPorts = args.script.endsWith("kms-server.ts")
    ? (await child.next<{ type: "extra-ports"; ports: Record<string, number> }>("extra-ports")).ports
    : {};
  return {
    child,
    name: args.name,
    port: ready.port,
    description: ready.description,
    tlsDir: args.tlsDir,
    database: args.database,
    keysStored: args.keysStored,
    counters: options.instrument && args.script.endsWith("kms-server.ts"),
    extraPorts,
    ...(args.pgDatabase === undefined ? {} : { pgDatabase: args.pgDatabase }),
  };
}

async function stopServer(server: RunningServer): Promise<void> {
  const memory = memoryOf(server.child.pid);
  servers.push({
    name: server.name,
    description: server.description,
    database: server.database,
    keysStored: server.keysStored,
    peakRssMiB: memory?.peakRssMiB,
  });
  const code = await server.child.stop();
  if (code !== 0) progress(`warning: ${server.name} exited with code ${code} (log: ${server.child.logFile})`);
}

/** Backend processes of one PostgreSQL database (not this connection's). */
async function backendPids(database: string): Promise<number[]> {
  const client = new pg.Client({ connectionString: options.postgresUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      "select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
      [database],
    );
    return rows.map((r) => r.pid);
  } finally {
    await client.end();
  }
}

async function runPhase(spec: {
  id: string;
  label: string;
  server: RunningServer;
  port?: number;
  client: ClientLibrary;
  method: RpcMethod;
  work: readonly WorkItem[];
  collectReferencesTo?: string;
  round?: number;
}): Promise<PhaseRecord> {
  const workFile = join(workDir, `work-${spec.id.replace(/[^a-z0-9-]+/gi, "_")}.json`);
  await writeFile(workFile, JSON.stringify(spec.work));
  const command: RunCommand = {
    type: "run",
    phase: spec.id,
    port: spec.port ?? spec.server.port,
    tlsDir: spec.server.tlsDir,
    client: spec.client,
    method: spec.method,
    workFile,
    concurrency: options.concurrency,
    warmupMs: options.warmupSeconds * 1000,
    durationMs: options.seconds * 1000,
    ...(spec.collectReferencesTo === undefined ? {} : { collectReferencesTo: spec.collectReferencesTo }),
  };
  progress(`${spec.label} …`);
  const serverPid = spec.server.child.pid;
  const clientPid = loadGenerator.pid;
  loadGenerator.send(command);

  const budgetMs = (options.seconds + options.warmupSeconds) * 1000 + 120_000;
  const failed = (message: RunFailed) => new Error(`phase ${message.phase} failed in the load generator: ${message.message}`);
  const opened = await loadGenerator.next<WindowEdge | RunFailed>(["window-start", "failed"], budgetMs);
  if (opened.type === "failed") throw failed(opened);
  const dbPids = spec.server.pgDatabase === undefined ? [] : await backendPids(spec.server.pgDatabase);
  const dbStart = dbPids.map(cpuMsOf);
  const start = { server: cpuMsOf(serverPid), client: cpuMsOf(clientPid), machine: machineBusyMs() };
  if (spec.server.counters) spec.server.child.send({ type: "stats", reset: true });
  if (options.profile) spec.server.child.send({ type: "profile-start" });
  if (spec.server.counters) await spec.server.child.next<ServerStats>("stats");

  const closed = await loadGenerator.next<WindowEdge | RunFailed>(["window-end", "failed"], budgetMs);
  if (closed.type === "failed") throw failed(closed);
  const dbEnd = dbPids.map(cpuMsOf);
  const end = { server: cpuMsOf(serverPid), client: cpuMsOf(clientPid), machine: machineBusyMs() };
  // A pooled connection closed when idle (the batched read needs few) leaves the sum: its CPU in the window is lost, a few ms at most.
  const dbMs = sum(dbPids.map((_, i) => (Number.isFinite(dbStart[i]) && Number.isFinite(dbEnd[i]) ? (dbEnd[i] as number) - (dbStart[i] as number) : 0)));
  let counters: Readonly<Record<string, number>> | undefined;
  if (spec.server.counters) {
    spec.server.child.send({ type: "stats", reset: false });
    counters = (await spec.server.child.next<ServerStats>("stats")).counters;
  }
  let profile: ProfileSummary | undefined;
  if (options.profile) {
    const file = join(profilesDir, `${spec.id.replace(/[^a-z0-9-]+/gi, "_")}.cpuprofile`);
    spec.server.child.send({ type: "profile-stop", file });
    const written = await spec.server.child.next<{ type: "profile-written"; file?: string }>("profile-written", 60_000);
    if (written.file !== undefined) profile = summarizeProfile(written.file);
  }
  const outcome = await loadGenerator.next<RunResult | RunFailed>(["result", "failed"], budgetMs);
  if (outcome.type === "failed") throw failed(outcome);
  const result = outcome;

  const perCallUs = (ms: number) => (result.completed === 0 ? NaN : (ms * 1000) / result.completed);
  const percentOfCore = (ms: number) => (ms / result.windowMs) * 100;
  const record: PhaseRecord = {
    id: spec.id,
    label: spec.label,
    database: spec.server.database,
    keysStored: spec.server.keysStored,
    server: spec.server.name,
    serverDescription: spec.server.description,
    client: spec.client,
    method: spec.method,
    reqPerSec: result.reqPerSec,
    latency: result.latency,
    completed: result.completed,
    errors: result.errors,
    wrongAnswers: result.wrongAnswers,
    errorSamples: result.errorSamples,
    windowMs: result.windowMs,
    warmupCalls: result.warmupCalls,
    serverCpuPercent: percentOfCore(end.server - start.server),
    serverCpuUsPerCall: perCallUs(end.server - start.server),
    clientCpuPercent: percentOfCore(end.client - start.client),
    clientCpuUsPerCall: perCallUs(end.client - start.client),
    otherCpuPercent: percentOfCore(end.machine - start.machine - (end.server - start.server) - (end.client - start.client) - dbMs),
    ...(dbPids.length === 0 ? {} : { databaseCpuPercent: percentOfCore(dbMs), databaseCpuUsPerCall: perCallUs(dbMs) }),
    ...(counters === undefined
      ? {}
      : {
          statementsPerCall: (counters["statements"] ?? 0) / Math.max(1, result.completed),
          pgliteQueryUsPerCall: ((counters["pgliteQueryMs"] ?? 0) * 1000) / Math.max(1, result.completed),
        }),
    ...(profile === undefined ? {} : { profile }),
    ...(spec.round === undefined ? {} : { round: spec.round }),
  };
  phases.push(record);
  progress(
    `  ${thousands(record.reqPerSec)} req/s, p50 ${fixed(record.latency.p50Ms)} ms, p99 ${fixed(record.latency.p99Ms)} ms` +
      (record.errors > 0 ? `, ${record.errors} errors: ${record.errorSamples.join("; ")}` : ""),
  );
  return record;
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** A deterministic shuffle (so two runs send the same sequence). */
function shuffled<T>(items: readonly T[], seed = 0x5eed): T[] {
  const out = [...items];
  let state = seed >>> 0;
  const random = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function seed(
  database: DatabaseChoice,
  dataDir: string,
  databaseUrl: string | undefined,
  template: string,
  from: number,
  count: number,
): Promise<WorkItem[]> {
  const out = join(workDir, `seed-${database}-${from}-${count}.json`);
  progress(`seeding ${thousands(count)} keys (${database}; storage layer, clones of ${template}, 5,000 rows per INSERT) …`);
  const child = spawnChild({
    script: "bench/seed/seed-keys.ts",
    args: [
      "--data-dir",
      dataDir,
      ...(databaseUrl === undefined ? [] : ["--database-url", databaseUrl]),
      "--template",
      template,
      "--tenants",
      String(TENANTS),
      "--from",
      String(from),
      "--count",
      String(count),
      "--out",
      out,
    ],
    logFile: join(logsDir, `seed-${database}.log`),
  });
  const done = await child.next<{ type: "seeded"; count: number; ms: number }>("seeded", 600_000);
  await child.exited;
  seeding.push({ database, keys: done.count, ms: done.ms, method: "storage layer: clones of a CreateKey-made template, fresh material, 5,000 rows per INSERT" });
  progress(`  seeded ${thousands(done.count)} keys in ${(done.ms / 1000).toFixed(1)} s`);
  return JSON.parse(await readFile(out, "utf8")) as WorkItem[];
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

const TENANTS = 100;
const noopWork: WorkItem[] = [{ tenantId: "bench-t000", keyId: "key-000000" }];
const clients: ClientLibrary[] = options.connectClient ? ["grpc-js", "connect"] : ["grpc-js"];
const clientSuffix = (client: ClientLibrary) => (client === "grpc-js" ? "" : " [Connect client]");
const pgAdminDatabases: string[] = [];
const roundNoops: Array<{ id: string; server: RunningServer }> = [];

try {
  const noopPki = await ensureDevelopmentPki(join(workDir, "noop-pki"));

  // (c) and (d): the no-ops, plus the breakdown's no-ops.
  const noopKinds: Array<{ kind: string; id: string; label: string }> = [
    { kind: "own", id: "noop-own", label: "(c) no-op, own stack (createKmsServer)" },
    { kind: "grpc-js", id: "noop-grpc-js", label: "(d) no-op, plain grpc-js server" },
  ];
  if (options.breakdown) {
    noopKinds.push(
      { kind: "connect-plain", id: "noop-connect-plain", label: "(x) no-op, connectNodeAdapter alone" },
      { kind: "http2-compat", id: "noop-http2-compat", label: "(x) no-op, Node http2 compat API, hand-framed" },
      { kind: "http2-stream", id: "noop-http2-stream", label: "(x) no-op, Node http2 stream API, hand-framed" },
    );
  }
  for (const noop of noopKinds) {
    const server = await startServer({
      name: noop.id,
      script: "bench/servers/noop-server.ts",
      shipped: noop.kind === "own",
      args: ["--kind", noop.kind, "--tls-dir", noopPki.dir],
      tlsDir: noopPki.dir,
    });
    for (const client of noop.kind === "own" || noop.kind === "grpc-js" ? clients : (["grpc-js"] as const)) {
      await runPhase({ id: `${noop.id}${client === "grpc-js" ? "" : "+connect"}`, label: noop.label + clientSuffix(client), server, client, method: "generateDataKey", work: noopWork });
    }
    // The two no-ops the targets name stay up (idle) for the interleaved rounds.
    if (options.rounds > 0 && !options.noOpOnly && (noop.kind === "own" || noop.kind === "grpc-js")) roundNoops.push({ id: noop.id, server });
    else await stopServer(server);
  }

  for (const database of options.noOpOnly ? [] : options.databases) {
    const dataDir = join(workDir, `kms-${database}`);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    let databaseUrl: string | undefined;
    let pgDatabase: string | undefined;
    if (database === "postgres") {
      pgDatabase = `kms_bench_${process.pid}_${Date.now().toString(36)}`;
      const admin = new pg.Client({ connectionString: options.postgresUrl });
      await admin.connect();
      await admin.query(`create database ${pgDatabase}`);
      await admin.end();
      pgAdminDatabases.push(pgDatabase);
      const url = new URL(options.postgresUrl);
      url.pathname = `/${pgDatabase}`;
      databaseUrl = url.toString();
    }
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KMS_MODE: "development",
      KMS_DATA_DIR: dataDir,
      KMS_PORT: "0",
      KMS_HOST: "127.0.0.1",
    };
    if (databaseUrl === undefined) delete env["DATABASE_URL"];
    else env["DATABASE_URL"] = databaseUrl;
    const kmsArgs = [...(options.instrument ? ["--instrument"] : []), ...(options.breakdown ? ["--hot-path-listeners"] : [])];
    const startKmsChild = (keysStored: number) =>
      startServer({
        name: `kms-${database}-${keysStored}-keys`,
        script: "bench/servers/kms-server.ts",
        shipped: true,
        args: kmsArgs,
        env,
        tlsDir: join(dataDir, "tls"),
        database,
        keysStored,
        ...(pgDatabase === undefined ? {} : { pgDatabase }),
      });
    const tag = (label: string) => (options.databases.length > 1 || database !== "pglite" ? `${label} [${database}]` : label);

    // (a) and (b) with the small key set, made through the API.
    let kms = await startKmsChild(options.keys);
    progress(`creating ${thousands(options.keys)} keys through the API (CreateKey over gRPC, 16 in flight) …`);
    const created = await createKeysThroughApi({ port: kms.port, tlsDir: kms.tlsDir, count: options.keys, tenants: TENANTS, concurrency: 16 });
    seeding.push({ database, keys: created.keys.length, ms: created.ms, method: "CreateKey over gRPC+mTLS, 16 in flight" });
    progress(`  created ${thousands(created.keys.length)} keys in ${(created.ms / 1000).toFixed(1)} s (${thousands((created.keys.length * 1000) / created.ms)} keys/s)`);
    const collected = join(workDir, `references-${database}.json`);
    const keyCount = thousands(options.keys);
    await runPhase({
      id: `${database}/generate-data-key`,
      label: tag(`(a) GenerateDataKey, ${keyCount} keys`),
      server: kms,
      client: "grpc-js",
      method: "generateDataKey",
      work: shuffled(created.keys),
      collectReferencesTo: collected,
    });
    const references = JSON.parse(await readFile(collected, "utf8")) as WorkItem[];
    await runPhase({
      id: `${database}/decrypt`,
      label: tag(`(b) Decrypt, ${keyCount} keys (${thousands(references.length)} references from (a))`),
      server: kms,
      client: "grpc-js",
      method: "decrypt",
      work: shuffled(references),
    });
    if (options.connectClient) {
      await runPhase({
        id: `${database}/generate-data-key+connect`,
        label: tag(`(a) GenerateDataKey, ${keyCount} keys [Connect client]`),
        server: kms,
        client: "connect",
        method: "generateDataKey",
        work: shuffled(created.keys),
      });
    }
    // Interleaved rounds: each no-op and hot-path window next to the others, A-B-B-A so a steady drift cancels.
    for (let round = 1; round <= options.rounds; round++) {
      const windows = [
        ...roundNoops.map(({ id, server }) => ({ id, server, method: "generateDataKey" as const, work: noopWork })),
        { id: "generate-data-key", server: kms, method: "generateDataKey" as const, work: shuffled(created.keys, round) },
        { id: "decrypt", server: kms, method: "decrypt" as const, work: shuffled(references, round) },
      ];
      for (const window of round % 2 === 1 ? windows : windows.reverse()) {
        await runPhase({
          id: `${database}/round-${round}/${window.id}`,
          label: tag(`round ${round}: ${window.id}`),
          server: window.server,
          client: "grpc-js",
          method: window.method,
          work: window.work,
          round,
        });
      }
    }
    if (options.breakdown) {
      for (const [name, port] of Object.entries(kms.extraPorts)) {
        const listener = name === "grpcJs" ? "grpc-js listener (2nd port)" : "hand-written gRPC fast path on http2";
        await runPhase({
          id: `${database}/generate-data-key@${name}`,
          label: tag(`(x) GenerateDataKey, ${keyCount} keys, ${listener}`),
          server: kms,
          port,
          client: "grpc-js",
          method: "generateDataKey",
          work: shuffled(created.keys),
        });
        await runPhase({
          id: `${database}/decrypt@${name}`,
          label: tag(`(x) Decrypt, ${keyCount} keys, ${listener}`),
          server: kms,
          port,
          client: "grpc-js",
          method: "decrypt",
          work: shuffled(references),
        });
      }
    }
    await stopServer(kms);

    // Decrypt (and GenerateDataKey) with the large key set.
    if (options.largeKeys > options.keys) {
      const large = await seed(database, dataDir, databaseUrl, `${created.keys[0]!.tenantId}/${created.keys[0]!.keyId}`, options.keys, options.largeKeys - options.keys);
      const all = [...references, ...large];
      const keysStored = options.keys + large.length;
      kms = await startKmsChild(keysStored);
      const count = thousands(keysStored);
      await runPhase({
        id: `${database}/decrypt-large`,
        label: tag(`Decrypt, ${count} keys (references to ${thousands(all.length)} keys)`),
        server: kms,
        client: "grpc-js",
        method: "decrypt",
        work: shuffled(all),
      });
      await runPhase({
        id: `${database}/generate-data-key-large`,
        label: tag(`GenerateDataKey, ${count} keys`),
        server: kms,
        client: "grpc-js",
        method: "generateDataKey",
        work: shuffled(all.map((w) => ({ tenantId: w.tenantId, keyId: w.keyId, ...(w.plaintext === undefined ? {} : { plaintext: w.plaintext }) }))),
      });
      await stopServer(kms);
    }
  }
} finally {
  for (const { server } of roundNoops) await stopServer(server);
  await loadGenerator.stop();
  for (const name of pgAdminDatabases) {
    try {
      const admin = new pg.Client({ connectionString: options.postgresUrl });
      await admin.connect();
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    } catch (error) {
      progress(`could not drop database ${name}: ${String(error)}`);
    }
  }
  if (!options.keep) await rm(workDir, { recursive: true, force: true });
  else progress(`kept ${workDir}`);
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

const byId = (id: string) => phases.find((p) => p.id === id);
const phaseRows = phases.filter((p) => p.round === undefined);
const ownNoop = byId("noop-own");
const grpcNoop = byId("noop-grpc-js");
const TARGET = 0.9;

interface Ratio {
  readonly database: DatabaseChoice;
  readonly hotPath: string;
  readonly versus: string;
  /** req/s ÷ req/s: the target's measure. */
  readonly ratio: number;
  /**
   * No-op server CPU per call ÷ hot-path server CPU per call: what the ratio
   * would be with the server as the bottleneck; steadier on a shared machine.
   */
  readonly serverCpuRatio: number;
  readonly target: number;
  readonly met: boolean;
}
const ratios: Ratio[] = [];
for (const database of options.databases) {
  for (const [hotId, hotName] of [
    [`${database}/generate-data-key`, "GenerateDataKey"],
    [`${database}/decrypt`, "Decrypt"],
  ] as const) {
    const hot = byId(hotId);
    if (hot === undefined) continue;
    for (const [noop, noopName] of [
      [ownNoop, "own-stack no-op"],
      [grpcNoop, "grpc-js no-op"],
    ] as const) {
      if (noop === undefined) continue;
      const ratio = hot.reqPerSec / noop.reqPerSec;
      const serverCpuRatio = noop.serverCpuUsPerCall / hot.serverCpuUsPerCall;
      ratios.push({ database, hotPath: hotName, versus: noopName, ratio, serverCpuRatio, target: TARGET, met: ratio >= TARGET });
    }
  }
}

/** The interleaved rounds: each round's ratios from windows seconds apart, and their median. */
interface RoundRatio {
  readonly database: DatabaseChoice;
  readonly hotPath: string;
  readonly versus: string;
  readonly perRound: readonly number[];
  readonly median: number;
  readonly target: number;
  readonly met: boolean;
}
const roundRatios: RoundRatio[] = [];
for (const database of options.rounds > 0 ? options.databases : []) {
  const inRound = (round: number, id: string) => byId(`${database}/round-${round}/${id}`);
  for (const [hotId, hotName] of [
    ["generate-data-key", "GenerateDataKey"],
    ["decrypt", "Decrypt"],
  ] as const) {
    for (const [noopId, noopName] of [
      ["noop-own", "own-stack no-op"],
      ["noop-grpc-js", "grpc-js no-op"],
    ] as const) {
      const perRound: number[] = [];
      for (let round = 1; round <= options.rounds; round++) {
        const hot = inRound(round, hotId);
        const noop = inRound(round, noopId);
        if (hot !== undefined && noop !== undefined) perRound.push(hot.reqPerSec / noop.reqPerSec);
      }
      if (perRound.length === 0) continue;
      const median = medianOf(perRound);
      roundRatios.push({ database, hotPath: hotName, versus: noopName, perRound, median, target: TARGET, met: median >= TARGET });
    }
  }
}

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const machine = {
  node: process.version,
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? "unknown",
  platform: `${process.platform} ${process.arch}`,
};

const lines: string[] = [];
lines.push("");
lines.push(`matih-kms hot-path benchmark — ${startedAt.toISOString()}`);
lines.push(
  `machine: ${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}; server and load generator in separate child processes sharing these cores`,
);
lines.push(
  `load: ${options.concurrency} unary calls in flight over one HTTP/2 connection; warm-up ${options.warmupSeconds} s, window ${options.seconds} s per phase; ` +
    `client: @grpc/grpc-js (protos via @grpc/proto-loader)${options.connectClient ? ", plus Connect gRPC transport where marked" : ""}; TLS 1.3 + mTLS everywhere`,
);
lines.push(
  `Node flags: the KMS and the own-stack no-op ${options.shippedNodeFlags.length === 0 ? "Node's defaults (--node-defaults)" : `as shipped (npm start): ${options.shippedNodeFlags.join(" ")}`}; ` +
    `the grpc-js no-op Node's defaults${options.serverNodeFlags.length === 0 ? "" : `; every server also ${options.serverNodeFlags.join(" ")}`}`,
);
lines.push("");
lines.push(
  table(
    ["phase", "req/s", "p50 ms", "p99 ms", "server CPU", "server µs/call", "client µs/call", "other CPU", "errors"],
    phaseRows.map((p) => [
      p.label,
      thousands(p.reqPerSec),
      fixed(p.latency.p50Ms),
      fixed(p.latency.p99Ms),
      `${fixed(p.serverCpuPercent, 0)} %`,
      fixed(p.serverCpuUsPerCall, 0) + (p.databaseCpuUsPerCall === undefined ? "" : ` (+${fixed(p.databaseCpuUsPerCall, 0)} db)`),
      fixed(p.clientCpuUsPerCall, 0),
      `${fixed(Math.max(0, p.otherCpuPercent), 0)} %`,
      String(p.errors),
    ]),
    new Set([1, 2, 3, 4, 5, 6, 7, 8]),
  ),
);
lines.push(
  "server CPU: % of one core used by the server process in the window; µs/call: its CPU per completed call; other CPU: every other process on the machine (a disturbed phase shows here)",
);
lines.push("");
lines.push("ratios of the phases above (req/s of the hot path ÷ req/s of the no-op, windows minutes apart; target ≥ 0.9×; in brackets the same from server CPU per call):");
for (const r of ratios) {
  lines.push(
    `  ${r.database.padEnd(8)} ${r.hotPath.padEnd(15)} / ${r.versus.padEnd(16)} ${r.ratio.toFixed(2)}×  (${r.serverCpuRatio.toFixed(2)}×)  ${r.met ? "meets target" : "BELOW target"}`,
  );
}
if (ownNoop !== undefined && grpcNoop !== undefined) {
  lines.push(`  (own-stack no-op / grpc-js no-op: ${(ownNoop.reqPerSec / grpcNoop.reqPerSec).toFixed(2)}×)`);
}
if (roundRatios.length > 0) {
  lines.push("");
  lines.push(
    `interleaved rounds (${options.rounds} per database; one ${options.seconds} s window per server per round, A-B-B-A order, all servers up): req/s and server µs/call`,
  );
  const roundPhases = phases.filter((p) => p.round !== undefined);
  lines.push(
    table(
      ["window", "req/s", "p50 ms", "p99 ms", "server µs/call", "client µs/call", "other CPU"],
      roundPhases.map((p) => [
        p.label,
        thousands(p.reqPerSec),
        fixed(p.latency.p50Ms),
        fixed(p.latency.p99Ms),
        fixed(p.serverCpuUsPerCall, 0) + (p.databaseCpuUsPerCall === undefined ? "" : ` (+${fixed(p.databaseCpuUsPerCall, 0)} db)`),
        fixed(p.clientCpuUsPerCall, 0),
        `${fixed(Math.max(0, p.otherCpuPercent), 0)} %`,
      ]),
      new Set([1, 2, 3, 4, 5, 6]),
    ),
  );
  lines.push("ratios per round (hot-path req/s ÷ no-op req/s of the same round), the median deciding (target ≥ 0.9×):");
  for (const r of roundRatios) {
    lines.push(
      `  ${r.database.padEnd(8)} ${r.hotPath.padEnd(15)} / ${r.versus.padEnd(16)} ${r.perRound.map((x) => x.toFixed(2)).join("  ")}   median ${r.median.toFixed(2)}×  ${r.met ? "meets target" : "BELOW target"}`,
    );
  }
}
lines.push("");
lines.push("Decrypt latency by keys stored:");
for (const database of options.databases) {
  for (const id of [`${database}/decrypt`, `${database}/decrypt-large`]) {
    const p = byId(id);
    if (p === undefined) continue;
    lines.push(
      `  ${database.padEnd(8)} ${thousands(p.keysStored ?? 0).padStart(7)} keys: p50 ${fixed(p.latency.p50Ms)} ms, p99 ${fixed(p.latency.p99Ms)} ms (${thousands(p.reqPerSec)} req/s)`,
    );
  }
}
lines.push("");
lines.push("server peak RSS (VmHWM of the server child):");
for (const s of servers) lines.push(`  ${s.name.padEnd(28)} ${fixed(s.peakRssMiB, 0).padStart(6)} MiB`);
if (seeding.length > 0) {
  lines.push("");
  lines.push("keys stored:");
  for (const s of seeding) {
    lines.push(`  ${s.database.padEnd(8)} ${thousands(s.keys).padStart(7)} keys in ${(s.ms / 1000).toFixed(1).padStart(5)} s (${thousands((s.keys * 1000) / s.ms)}/s): ${s.method}`);
  }
}
if (options.instrument) {
  lines.push("");
  lines.push("instrumentation (per completed call; statements include the background workers' own, a few per second):");
  for (const p of phases.filter((q) => q.statementsPerCall !== undefined)) {
    const pglite = p.database === "pglite" ? `, ${fixed(p.pgliteQueryUsPerCall, 0)} µs (wall) inside PGlite query()` : "";
    lines.push(`  ${p.label.padEnd(72)} ${fixed(p.statementsPerCall, 2)} SQL statements${pglite}`);
  }
}
if (options.profile) {
  lines.push("");
  lines.push(`server CPU profiles of the measuring windows (self time by layer; files in ${profilesDir}):`);
  for (const p of phases) if (p.profile !== undefined) lines.push(formatProfileSummary(p.label, p.profile, p.completed));
}
const errored = phases.filter((p) => p.errors > 0);
if (errored.length > 0) {
  lines.push("");
  lines.push("ERRORS:");
  for (const p of errored) lines.push(`  ${p.label}: ${p.errors} (${p.wrongAnswers} wrong answers): ${p.errorSamples.join("; ")}`);
}
const resultFile = join(resultsDir, `hot-path-${stamp}.json`);
lines.push("");
lines.push(`total time ${((performance.now() - t0) / 1000).toFixed(0)} s; results written to ${resultFile.slice(REPO_ROOT.length)}`);
process.stdout.write(lines.join("\n") + "\n");

await writeFile(
  resultFile,
  JSON.stringify(
    {
      startedAt: startedAt.toISOString(),
      machine,
      options: { ...options },
      method: {
        processes: "server child, load-generator child, orchestrator idle during windows",
        client: "@grpc/grpc-js with @grpc/proto-loader (Connect gRPC transport where client = connect)",
        connection: "one HTTP/2 connection per phase, TLS 1.3, mutual TLS with the development PKI",
        noopMethod: "DataKeyService/GenerateDataKey with a constant 32-byte plaintext and 59-byte reference",
        keys: "the first --keys through the API (CreateKey); the rest through the storage layer as clones of an API-made key with fresh material (local master key → AES-256 KEK → DEK), 5,000 rows per INSERT",
      },
      phases,
      ratios,
      roundRatios,
      servers,
      seeding,
    },
    null,
    2,
  ) + "\n",
);
if (errored.length > 0) process.exitCode = 1;

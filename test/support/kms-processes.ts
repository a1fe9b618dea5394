/**
 * Real server processes on one PostgreSQL, for the replica and crash tests:
 * a fresh database per test, data directories sharing one master key,
 * `tsx server/src/main.ts` started with its own port, awaited until healthy,
 * and gRPC clients with each server's development client certificate.
 */
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import pg from "pg";
import { AdminService } from "../../gen/matih/kms/v1/admin_service_pb.js";
import { DataKeyService } from "../../gen/matih/kms/v1/data_key_service_pb.js";
import { KeyManagementService } from "../../gen/matih/kms/v1/key_management_service_pb.js";
import { MASTER_KEY_FILE } from "../../server/src/providers/local/local-root-provider.js";
import { postgresTestUrl } from "./databases.js";
import { connectGrpcTransport, type Endpoint } from "./e2e-clients.js";
import { childEnv, findFreePort, healthz, spawnTsx, waitUntil, withTimeout, type ChildUnderTest } from "./e2e-process.js";

export const START_TIMEOUT_MS = 120_000;

/** A fresh PostgreSQL database on the test server; `drop()` removes it (ending its sessions). */
export async function createTestDatabase(prefix: string): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `${prefix}_${Date.now()}_${randomBytes(3).toString("hex")}`;
  await adminQuery(`create database ${name}`);
  const url = new URL(postgresTestUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      await adminQuery(`drop database if exists ${name} with (force)`);
    },
  };
}

async function adminQuery(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresTestUrl, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/** A data directory holding a copy of `masterKeyFile` (mode 0600), or a new master key when none is given. */
export async function createDataDir(masterKeyFile?: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kms-process-"));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (masterKeyFile === undefined) await writeFile(join(dir, MASTER_KEY_FILE), randomBytes(32), { mode: 0o600 });
  else await copyFile(masterKeyFile, join(dir, MASTER_KEY_FILE));
  return dir;
}

export interface KmsProcess {
  readonly child: ChildUnderTest;
  readonly dataDir: string;
  readonly port: number;
  readonly endpoint: Endpoint;
  readonly clients: {
    readonly keys: Client<typeof KeyManagementService>;
    readonly dataKeys: Client<typeof DataKeyService>;
    readonly admin: Client<typeof AdminService>;
  };
  /** The background worker's id, from its "background workers started" log line. */
  readonly workerId: string;
  /** The JSON log lines written so far. */
  log(): Record<string, unknown>[];
  describe(): string;
}

/** Starts `tsx server/src/main.ts` on `dataDir` with `env` (KMS_DATA_DIR and KMS_PORT are set here); waits until it is healthy. */
export async function startKmsProcess(dataDir: string, env: Readonly<Record<string, string>>): Promise<KmsProcess> {
  const port = await findFreePort();
  const child = spawnTsx("server/src/main.ts", [], childEnv({ ...env, KMS_DATA_DIR: dataDir, KMS_PORT: String(port) }));
  const log = () =>
    child
      .stdout()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const describe = () => `\n--- stdout (port ${port}) ---\n${child.stdout().slice(-4_000)}\n--- stderr ---\n${child.stderr().slice(-4_000)}`;
  try {
    const ca = await waitUntil(`the server on port ${port} to be healthy`, START_TIMEOUT_MS, async () => {
      if (child.hasExited()) throw new Error(`the server exited during start-up: ${JSON.stringify(await child.exited)}`);
      const pem = await readFile(join(dataDir, "tls", "ca.pem"), "utf8").catch(() => undefined);
      if (pem === undefined) return undefined;
      const answer = await healthz(port, pem);
      return answer !== "refused" && answer.status === 200 ? pem : undefined;
    });
    const endpoint = { url: `https://127.0.0.1:${port}`, ca };
    const cert = {
      cert: await readFile(join(dataDir, "tls", "client.pem"), "utf8"),
      key: await readFile(join(dataDir, "tls", "client-key.pem"), "utf8"),
    };
    const transport = connectGrpcTransport(endpoint, cert);
    const workerId = await waitUntil("the background workers' start line", 10_000, async () => {
      const line = log().find((entry) => entry["msg"] === "background workers started");
      return typeof line?.["worker"] === "string" ? line["worker"] : undefined;
    }, 50);
    return {
      child,
      dataDir,
      port,
      endpoint,
      clients: {
        keys: createClient(KeyManagementService, transport),
        dataKeys: createClient(DataKeyService, transport),
        admin: createClient(AdminService, transport),
      },
      workerId,
      log,
      describe,
    };
  } catch (error) {
    child.killGroup();
    throw new Error(`${(error as Error).message}${describe()}`);
  }
}

/** SIGKILL to the whole process group (tsx and the server), then waits for the exit. */
export async function killHard(server: KmsProcess): Promise<void> {
  server.child.killGroup();
  await withTimeout(server.child.exited, 10_000, "the killed server to exit");
  // tsx exits first; the server (its child, same group) may linger a moment as a zombie holding its pid.
  await waitUntil("the killed server's process group to be gone", 10_000, async () => {
    try {
      process.kill(-server.child.pid, 0);
      return undefined;
    } catch {
      return true;
    }
  }, 20);
}

/** SIGTERM (drain), then waits for the exit; SIGKILL if it does not come. */
export async function stopGracefully(server: KmsProcess): Promise<void> {
  if (server.child.hasExited()) return;
  server.child.child.kill("SIGTERM");
  await withTimeout(server.child.exited, 30_000, "the server to exit after SIGTERM").catch(() => server.child.killGroup());
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Runs `fn` over `items` with at most `parallelism` calls in flight. */
export async function forEachLimited<T>(items: readonly T[], parallelism: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallelism, items.length) }, worker));
}

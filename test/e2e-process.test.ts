/**
 * End to end over the real PROCESS: `tsx server/src/main.ts` started the way
 * `npm start` starts it (development mode, PGlite in the data directory, a
 * free port), called over its socket, stopped with SIGTERM while calls are in
 * flight; plus the start-up refusals (a master key readable by others, a
 * production configuration that lacks required settings).
 */
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { KeyManagementService } from "../gen/matih/kms/v1/key_management_service_pb.js";
import { KekAlgorithm } from "../gen/matih/kms/v1/resources_pb.js";
import { shippedNodeFlags } from "../bench/lib/shipped-node-flags.js";
import { connectGrpcTransport, restCall, type Endpoint, type RestResult, type TlsIdentity } from "./support/e2e-clients.js";
import {
  childEnv,
  findFreePort,
  healthz,
  runTsx,
  spawnTsx,
  waitUntil,
  withTimeout,
  type ChildUnderTest,
} from "./support/e2e-process.js";

const MAIN = "server/src/main.ts";
const DEV_TOKEN = "server/src/dev-token.ts";
const START_TIMEOUT_MS = 90_000;
const EXIT_TIMEOUT_MS = 30_000;

const started: ChildUnderTest[] = [];
const tempDirs: string[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kms-e2e-process-"));
  tempDirs.push(dir);
  return dir;
}

function startServer(env: NodeJS.ProcessEnv): ChildUnderTest {
  const child = spawnTsx(MAIN, [], env);
  started.push(child);
  return child;
}

function describeOutput(child: ChildUnderTest): string {
  return `\n--- stdout ---\n${child.stdout()}\n--- stderr ---\n${child.stderr()}`;
}

/** Waits for the generated CA and then for GET /healthz to answer 200; fails early if the process exits. */
async function waitHealthy(child: ChildUnderTest, dataDir: string, port: number): Promise<string> {
  return waitUntil(`GET /healthz on port ${port} to answer 200`, START_TIMEOUT_MS, async () => {
    if (child.hasExited()) throw new Error(`the server exited during start-up: ${JSON.stringify(await child.exited)}${describeOutput(child)}`);
    const ca = await readFile(join(dataDir, "tls", "ca.pem"), "utf8").catch(() => undefined);
    if (ca === undefined) return undefined;
    const answer = await healthz(port, ca);
    return answer !== "refused" && answer.status === 200 ? ca : undefined;
  }).catch((error: Error) => {
    throw new Error(`${error.message}${describeOutput(child)}`);
  });
}

afterAll(async () => {
  for (const child of started) child.killGroup();
  await Promise.all(started.map((child) => withTimeout(child.exited, 10_000, "a killed child to exit").catch(() => undefined)));
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe("the server process (tsx server/src/main.ts, development mode, PGlite)", () => {
  let dataDir: string;
  let port: number;
  let env: NodeJS.ProcessEnv;
  let server: ChildUnderTest;
  let endpoint: Endpoint;
  let devClient: TlsIdentity;
  let devTokenRun: ReturnType<typeof runTsx> | undefined;
  /** `tsx server/src/dev-token.ts acme`, run once with the server's environment. */
  const devToken = () => (devTokenRun ??= runTsx(DEV_TOKEN, ["acme"], env, 60_000));

  beforeAll(async () => {
    dataDir = await tempDir();
    port = await findFreePort();
    // A grace period well above the drain test's four RSA-4096 CreateKeys, which take over 10 s (the default) when the whole suite shares 2 cores.
    env = childEnv({ KMS_DATA_DIR: dataDir, KMS_PORT: String(port), KMS_SHUTDOWN_GRACE_SECONDS: "60" });
    server = startServer(env);
    const ca = await waitHealthy(server, dataDir, port);
    endpoint = { url: `https://127.0.0.1:${port}`, ca };
    devClient = {
      cert: await readFile(join(dataDir, "tls", "client.pem"), "utf8"),
      key: await readFile(join(dataDir, "tls", "client-key.pem"), "utf8"),
    };
  }, START_TIMEOUT_MS + 10_000);

  it("answers GET /healthz with 200 over HTTPS with the generated CA, without credentials, on 127.0.0.1", async () => {
    const answer = await healthz(port, endpoint.ca);
    expect(answer).toEqual({ status: 200, body: JSON.stringify({ status: "ok" }) });
    expect(server.stdout()).toContain(`https://127.0.0.1:${port}`);
  });

  // Reads /proc to see the node process tsx started.
  it.skipIf(process.platform !== "linux")("runs under the Node flags npm start gives it: allocation-site pretenuring off (docs/decisions/0003)", async () => {
    expect(shippedNodeFlags()).toContain("--no-allocation-site-pretenuring");
    // tsx runs the script in a child node process: find it by its parent.
    const commandLines: string[] = [];
    for (const entry of await readdir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const status = await readFile(join("/proc", entry, "status"), "utf8").catch(() => "");
      if (new RegExp(`^PPid:\\s+${server.pid}$`, "m").test(status)) {
        commandLines.push((await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "")).split("\0").join(" "));
      }
    }
    const node = commandLines.find((line) => line.includes(MAIN));
    expect(node, commandLines.join("\n")).toBeDefined();
    for (const flag of shippedNodeFlags()) expect(node!.split(" ")).toContain(flag);
  });

  it("created the master key with mode 0600 and the development PKI, private keys 0600", async () => {
    expect((await stat(join(dataDir, "master.key"))).mode & 0o777).toBe(0o600);
    expect((await readFile(join(dataDir, "master.key"))).length).toBe(32);
    for (const file of ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"]) {
      const info = await stat(join(dataDir, "tls", file));
      expect(info.isFile(), file).toBe(true);
      expect(info.size, file).toBeGreaterThan(0);
      if (file.endsWith("-key.pem")) expect(info.mode & 0o077, `${file} is readable by group or others`).toBe(0);
    }
    expect((await stat(join(dataDir, "pglite"))).isDirectory()).toBe(true);
  });

  it("`tsx server/src/dev-token.ts acme` prints a token the server accepts for REST CreateKey of tenant acme (and for no other tenant)", async () => {
    const run = await devToken();
    expect(run.code, run.stderr).toBe(0);
    const token = run.stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);

    const created = await restCall(endpoint, { method: "POST", path: "/api/v1/tenants/acme/encryption/keys", token, json: { keyId: "pii" } });
    expect(created.status, created.text).toBe(200);
    expect(created.json.key).toMatchObject({ tenantId: "acme", keyId: "pii", state: "KEY_STATE_ENABLED" });

    const generated = await restCall(endpoint, { method: "POST", path: "/api/v1/tenants/acme/encryption/keys/pii:generateDataKey", token, json: {} });
    expect(generated.status, generated.text).toBe(200);
    expect(Buffer.from(generated.json.plaintext, "base64").length).toBe(32);

    const forbidden = await restCall(endpoint, { method: "GET", path: "/api/v1/tenants/globex/encryption/keys", token });
    expect(forbidden.status).toBe(403);
    expect(forbidden.json.reason).toBe("ERROR_REASON_TENANT_FORBIDDEN");
  });

  it("on SIGTERM drains: calls in flight (REST over HTTP/2 and HTTP/1.1, gRPC) complete, new connections are refused, the process exits 0, and what they wrote survives a restart", async () => {
    const token = (await devToken()).stdout.trim();
    expect(token).not.toBe("");
    // RSA-4096 key generation takes about a second per key: these calls are
    // still running on the server when the signal arrives.
    const slowCreate = (keyId: string, http1: boolean): Promise<RestResult> =>
      restCall(endpoint, {
        method: "POST",
        path: "/api/v1/tenants/acme/encryption/keys",
        token,
        json: { keyId, kekAlgorithm: "KEK_ALGORITHM_RSA_4096" },
        http1,
        timeoutMs: 60_000,
      });
    const keys = createClient(KeyManagementService, connectGrpcTransport(endpoint, devClient));
    const inFlight = {
      restHttp2a: slowCreate("drain-1", false),
      restHttp2b: slowCreate("drain-2", false),
      restHttp1: slowCreate("drain-3", true),
      grpc: keys.createKey({ tenantId: "acme", keyId: "drain-4", kekAlgorithm: KekAlgorithm.RSA_4096 }).then((res) => ({ res, completedAt: Date.now() })),
    };
    await new Promise((resolve) => setTimeout(resolve, 300));

    const signalledAt = Date.now();
    expect(server.child.kill("SIGTERM")).toBe(true);

    await waitUntil("the listener to close", 10_000, async () => {
      const answer = await healthz(port, endpoint.ca);
      return answer === "refused" || answer.status === 503 ? answer : undefined;
    }, 50);

    const [a, b, c, d] = await withTimeout(
      Promise.all([inFlight.restHttp2a, inFlight.restHttp2b, inFlight.restHttp1, inFlight.grpc]),
      EXIT_TIMEOUT_MS,
      "the in-flight calls to complete",
    );
    for (const [name, res] of [["REST HTTP/2", a], ["REST HTTP/2", b], ["REST HTTP/1.1", c]] as const) {
      expect(res.status, `${name}: ${res.text}`).toBe(200);
      expect(res.json.key.kekAlgorithm).toBe("KEK_ALGORITHM_RSA_4096");
    }
    expect(d.res.key?.keyId).toBe("drain-4");
    // They were in flight: they finished after the signal was sent (an RSA-4096
    // key takes 0.3-3 s), and the server counted them when it began draining.
    const finishedAfterSignal = [a, b, c, d].filter((call) => call.completedAt > signalledAt).length;
    expect(finishedAfterSignal).toBeGreaterThanOrEqual(1);

    const status = await withTimeout(server.exited, EXIT_TIMEOUT_MS, "the server to exit after SIGTERM");
    expect(status, describeOutput(server)).toEqual({ code: 0, signal: null });
    const log = server.stdout()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(log.find((line) => line["msg"] === "draining" && line["signal"] === "SIGTERM")).toBeDefined();
    const drainStart = log.find((line) => line["msg"] === "draining" && typeof line["in_flight"] === "number");
    expect(drainStart?.["in_flight"], describeOutput(server)).toBeGreaterThanOrEqual(finishedAfterSignal);
    expect(log.find((line) => line["msg"] === "kms server stopped")).toMatchObject({ drained: true });
    expect(log.find((line) => line["msg"] === "grace period over; aborting in-flight calls")).toBeUndefined();
    expect(log.at(-1)).toMatchObject({ msg: "stopped" });

    // A restart on the same data directory reuses master key and PKI and finds the four keys.
    const restartPort = await findFreePort();
    const restarted = startServer(childEnv({ KMS_DATA_DIR: dataDir, KMS_PORT: String(restartPort) }));
    const ca = await waitHealthy(restarted, dataDir, restartPort);
    expect(ca).toBe(endpoint.ca);
    const listed = await restCall({ url: `https://127.0.0.1:${restartPort}`, ca }, { method: "GET", path: "/api/v1/tenants/acme/encryption/keys", token });
    expect(listed.status, listed.text).toBe(200);
    expect(listed.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(expect.arrayContaining(["drain-1", "drain-2", "drain-3", "drain-4"]));
    const generated = await restCall({ url: `https://127.0.0.1:${restartPort}`, ca }, {
      method: "POST",
      path: "/api/v1/tenants/acme/encryption/keys/drain-4:generateDataKey",
      cert: devClient,
      json: {},
    });
    expect(generated.status, generated.text).toBe(200);
    restarted.child.kill("SIGTERM");
    expect(await withTimeout(restarted.exited, EXIT_TIMEOUT_MS, "the restarted server to exit")).toEqual({ code: 0, signal: null });
  }, 150_000);
});

describe("start-up refusals of the server process", () => {
  it("refuses a master key file with mode 0644: non-zero exit, a message saying to chmod 600, never listening", async () => {
    const dataDir = await tempDir();
    await mkdir(dataDir, { recursive: true });
    const keyFile = join(dataDir, "master.key");
    await writeFile(keyFile, randomBytes(32), { mode: 0o600 });
    await chmod(keyFile, 0o644);
    const port = await findFreePort();
    const child = startServer(childEnv({ KMS_DATA_DIR: dataDir, KMS_PORT: String(port) }));
    const status = await withTimeout(child.exited, START_TIMEOUT_MS, "the server to refuse to start");
    expect(status.code, describeOutput(child)).not.toBe(0);
    expect(status.code).not.toBeNull();
    expect(`${child.stdout()}${child.stderr()}`).toMatch(/chmod 600/);
    expect(child.stdout()).not.toMatch(/"msg":"matih-kms listening"/);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o644); // left for the operator to fix, not "repaired"
  }, START_TIMEOUT_MS + 10_000);

  it("KMS_MODE=production without the required variables exits with code 2 naming every missing variable", async () => {
    const dataDir = await tempDir();
    const child = startServer(childEnv({ KMS_MODE: "production", KMS_DATA_DIR: dataDir, KMS_PORT: String(await findFreePort()) }));
    const status = await withTimeout(child.exited, 60_000, "the server to refuse production mode");
    expect(status, describeOutput(child)).toEqual({ code: 2, signal: null });
    const stderr = child.stderr();
    for (const variable of [
      "KMS_TLS_CERT_FILE",
      "KMS_TLS_KEY_FILE",
      "KMS_TLS_CLIENT_CA_FILE",
      "DATABASE_URL",
      "KMS_JWKS_FILE or KMS_JWKS_URL",
      "KMS_JWT_ISSUER",
      "KMS_JWT_AUDIENCE",
    ]) {
      expect(stderr, variable).toContain(variable);
    }
    // Nothing was created: no development keys, PKI or database in production mode.
    expect(await readFile(join(dataDir, "master.key")).catch(() => "absent")).toBe("absent");
    expect(await stat(join(dataDir, "tls")).catch(() => "absent")).toBe("absent");
  }, 70_000);
});

import * as http2 from "node:http2";
import * as tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DataKeyService } from "../gen/matih/kms/v1/data_key_service_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../gen/matih/kms/v1/errors_pb.js";
import { KeyManagementService } from "../gen/matih/kms/v1/key_management_service_pb.js";
import { authenticate, authorizeTenant } from "../server/src/api/authentication.js";
import { createKmsServer, type KmsServer } from "../server/src/api/kms-server.js";
import { silentLogger } from "../server/src/api/logger.js";
import { issueServerCertificate } from "../server/src/tls/dev-pki.js";
import { createTestPki, type TestPki } from "./support/pki.js";

/**
 * Stubs whose GetKey waits: "slow" until the test opens the gate, "hang"
 * until the server aborts the call's signal.
 */
let openGate: () => void = () => {};
let gate: Promise<void> = Promise.resolve();
let entered: () => void = () => {};
let enteredCount = 0;
let enteredWaiters: Array<{ count: number; resolve: () => void }> = [];

function resetGate(): void {
  gate = new Promise((resolve) => (openGate = resolve));
  enteredCount = 0;
  enteredWaiters = [];
  entered = () => {
    enteredCount++;
    enteredWaiters = enteredWaiters.filter((w) => (w.count <= enteredCount ? (w.resolve(), false) : true));
  };
}

function waitEntered(count: number): Promise<void> {
  return new Promise((resolve) => {
    if (enteredCount >= count) resolve();
    else enteredWaiters.push({ count, resolve });
  });
}

async function admit(ctx: HandlerContext, tenantId: string): Promise<void> {
  authorizeTenant(await authenticate(ctx), tenantId);
}

const keyManagement: Partial<ServiceImpl<typeof KeyManagementService>> = {
  async listKeys(req, ctx) {
    await admit(ctx, req.tenantId);
    return {};
  },
  async createKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return {};
  },
  async getKey(req, ctx) {
    await admit(ctx, req.tenantId);
    if (req.keyId === "slow") {
      entered();
      await gate;
    }
    if (req.keyId === "hang") {
      entered();
      await new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
    }
    return { key: { tenantId: req.tenantId, keyId: req.keyId } };
  },
  async rotateKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return {};
  },
  async revokeKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return {};
  },
  async getEncryptionStatus(req, ctx) {
    await admit(ctx, req.tenantId);
    return {};
  },
};

const dataKey: ServiceImpl<typeof DataKeyService> = {
  async generateDataKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return { plaintext: new Uint8Array(32), reference: new Uint8Array([1]), dekVersion: 1 };
  },
  async decrypt(req, ctx) {
    await admit(ctx, req.tenantId);
    return { plaintext: new Uint8Array(32), dekVersion: 1 };
  },
};

let pki: TestPki;
let server: KmsServer | undefined;

beforeAll(async () => {
  pki = await createTestPki();
});
afterAll(async () => {
  await pki?.cleanup();
});
afterEach(async () => {
  openGate();
  await server?.close(100);
  server = undefined;
});

async function startServer(): Promise<KmsServer> {
  resetGate();
  server = await createKmsServer({ services: { keyManagement, dataKey }, tls: pki.serverTls, port: 0, logger: silentLogger });
  return server;
}

function restGet(url: string, path: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey, servername: "localhost" });
    session.on("error", reject);
    const stream = session.request({ ":method": "GET", ":path": path });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", reject);
    stream.on("end", () => {
      session.close();
      resolve({ status, json: JSON.parse(Buffer.concat(chunks).toString() || "null") });
    });
  });
}

function grpcClient(url: string) {
  return createClient(
    KeyManagementService,
    createGrpcTransport({ baseUrl: url, nodeOptions: { ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey, servername: "localhost" } }),
  );
}

function connects(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca: pki.caCert, servername: "localhost" });
    socket.once("secureConnect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("close(graceMs) drains", () => {
  it("lets in-flight REST and gRPC calls finish, refuses new connections, then resolves", async () => {
    const s = await startServer();
    const restCall = restGet(s.url, "/api/v1/tenants/t1/encryption/keys/slow");
    const rpcCall = grpcClient(s.url).getKey({ tenantId: "t1", keyId: "slow" });
    await waitEntered(2);

    let closed = false;
    const closing = s.close(5_000).then(() => (closed = true));
    expect(s.isDraining()).toBe(true);
    expect(await connects(s.url)).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(closed).toBe(false); // still waiting for the two calls

    openGate();
    const [restResult, rpcResult] = await Promise.all([restCall, rpcCall]);
    expect(restResult.status).toBe(200);
    expect(restResult.json.key.keyId).toBe("slow");
    expect(rpcResult.key?.keyId).toBe("slow");
    await closing;
    expect(closed).toBe(true);
  });

  it("after the grace period aborts what is left with SHUTTING_DOWN and still closes", async () => {
    const s = await startServer();
    const rpcCall = grpcClient(s.url)
      .getKey({ tenantId: "t1", keyId: "hang" })
      .then(
        () => undefined,
        (err: unknown) => ConnectError.from(err),
      );
    const restCall = restGet(s.url, "/api/v1/tenants/t1/encryption/keys/hang");
    await waitEntered(2);
    const started = Date.now();
    await s.close(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    const err = await rpcCall;
    expect(err?.code).toBe(Code.Unavailable);
    expect(err?.findDetails(ErrorDetailSchema)[0]?.reason).toBe(ErrorReason.SHUTTING_DOWN);
    const rest = await restCall;
    expect(rest.status).toBe(503);
    expect(rest.json.reason).toBe("ERROR_REASON_SHUTTING_DOWN");
  });

  it("with nothing in flight closes at once, and a second close() is the same promise", async () => {
    const s = await startServer();
    expect((await restGet(s.url, "/healthz")).json).toEqual({ status: "ok" });
    const started = Date.now();
    const first = s.close(5_000);
    expect(s.close(5_000)).toBe(first);
    await first;
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});

describe("reloadTls", () => {
  function serverFingerprint(url: string): Promise<string> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: hostname, port: Number(port), ca: pki.caCert, servername: "localhost", ALPNProtocols: ["h2"] });
      socket.once("secureConnect", () => {
        const fingerprint = socket.getPeerX509Certificate()?.fingerprint256 ?? "";
        socket.destroy();
        resolve(fingerprint);
      });
      socket.once("error", reject);
    });
  }

  it("serves the new certificate on new connections without a restart", async () => {
    const s = await startServer();
    expect(await serverFingerprint(s.url)).toBe(new X509Certificate(pki.serverCert).fingerprint256);
    const renewed = await issueServerCertificate(pki.ca);
    s.reloadTls({ key: renewed.key, cert: renewed.cert, ca: pki.caCert });
    expect(await serverFingerprint(s.url)).toBe(new X509Certificate(renewed.cert).fingerprint256);
    const res = await restGet(s.url, "/api/v1/tenants/t1/encryption/keys/k1");
    expect(res.status).toBe(200);
  });

  it("refuses unusable material (key of another certificate) and keeps serving the old one", async () => {
    const s = await startServer();
    const other = await issueServerCertificate(pki.ca);
    expect(() => s.reloadTls({ key: other.key, cert: pki.serverCert, ca: pki.caCert })).toThrow();
    expect(await serverFingerprint(s.url)).toBe(new X509Certificate(pki.serverCert).fingerprint256);
  });
});

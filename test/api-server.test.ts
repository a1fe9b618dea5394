import * as http2 from "node:http2";
import * as https from "node:https";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { DataKeyService } from "../gen/matih/kms/v1/data_key_service_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../gen/matih/kms/v1/errors_pb.js";
import { KeyManagementService } from "../gen/matih/kms/v1/key_management_service_pb.js";
import { KeySchema, KeyState, type Key } from "../gen/matih/kms/v1/resources_pb.js";
import { requireValidId } from "../server/src/domain/identifiers.js";
import { KmsError } from "../server/src/domain/kms-error.js";
import { authenticate, authorizeTenant, type Caller } from "../server/src/api/authentication.js";
import { createKmsServer, type KmsServer } from "../server/src/api/kms-server.js";
import { createJsonLinesLogger } from "../server/src/api/logger.js";
import {
  createCertificateAuthority,
  createSelfSignedCertificate,
  issueClientCertificate,
  type CertificateAndKey,
} from "../server/src/tls/dev-pki.js";
import { createTestPki, createTestTokenIssuer, generateSigningKey, type TestPki, type TestTokenIssuer } from "./support/pki.js";

// ---------------------------------------------------------------------------
// Stub services: they authenticate and authorize exactly as the real ones
// must, echo what they received, and fail on purpose for some key ids.
// ---------------------------------------------------------------------------

interface SeenCall {
  readonly method: string;
  readonly caller: Caller;
  readonly protocol: string;
}
const seen: SeenCall[] = [];

async function admit(ctx: HandlerContext, tenantId: string): Promise<void> {
  const caller = await authenticate(ctx);
  authorizeTenant(caller, tenantId);
  seen.push({ method: ctx.method.name, caller, protocol: ctx.protocolName });
}

const SECRET_IN_FAULT = "db-password-hunter2";

function keyFor(tenantId: string, keyId: string, extra: Omit<MessageInitShape<typeof KeySchema>, "$typeName"> = {}): Key {
  return create(KeySchema, {
    tenantId,
    keyId,
    state: KeyState.ENABLED,
    primaryDekVersion: 1,
    primaryKekVersion: 1,
    createTime: timestampFromDate(new Date("2025-01-02T03:04:05Z")),
    ...extra,
  });
}

function failOnPurpose(keyId: string): void {
  if (keyId === "missing") throw new KmsError("KEY_NOT_FOUND", `key "${keyId}" not found`, { field: "key_id" });
  if (keyId === "revoked") throw new KmsError("KEY_REVOKED", "the key is revoked");
  if (keyId === "boom") throw new Error(`connection to db failed: ${SECRET_IN_FAULT}`);
}

const keyManagement: Partial<ServiceImpl<typeof KeyManagementService>> = {
  async listKeys(req, ctx) {
    await admit(ctx, req.tenantId);
    return {
      keys: [keyFor(req.tenantId, "k1", { description: JSON.stringify({ pageSize: req.pageSize, pageToken: req.pageToken, state: req.state }) })],
      nextPageToken: "next",
    };
  },
  async createKey(req, ctx) {
    await admit(ctx, req.tenantId);
    requireValidId("key_id", req.keyId);
    if (req.keyId === "exists") throw new KmsError("KEY_ALREADY_EXISTS", `key "${req.keyId}" already exists`, { field: "key_id" });
    return {
      key: keyFor(req.tenantId, req.keyId, {
        description: req.description,
        kekAlgorithm: req.kekAlgorithm,
        ...(req.rotationPolicy === undefined ? {} : { rotationPolicy: req.rotationPolicy }),
      }),
    };
  },
  async getKey(req, ctx) {
    await admit(ctx, req.tenantId);
    failOnPurpose(req.keyId);
    return { key: keyFor(req.tenantId, req.keyId) };
  },
  async rotateKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return { key: keyFor(req.tenantId, req.keyId, { primaryDekVersion: 2, primaryKekVersion: req.rotateKek ? 2 : 1 }) };
  },
  async revokeKey(req, ctx) {
    await admit(ctx, req.tenantId);
    return { key: keyFor(req.tenantId, req.keyId, { state: KeyState.REVOKED }) };
  },
  async getEncryptionStatus(req, ctx) {
    await admit(ctx, req.tenantId);
    return {
      tenantId: req.tenantId,
      keys: [{ keyId: "k1", state: KeyState.ENABLED, primaryDekAge: { seconds: 60n }, rotationOverdue: false }],
      reportTime: timestampFromDate(new Date("2025-06-01T00:00:00Z")),
    };
  },
};

const PLAINTEXT = new Uint8Array(32).map((_, i) => i);
const referenceFor = (tenantId: string, keyId: string): Uint8Array => new TextEncoder().encode(`ref:${tenantId}/${keyId}/1`);

const dataKey: ServiceImpl<typeof DataKeyService> = {
  async generateDataKey(req, ctx) {
    await admit(ctx, req.tenantId);
    failOnPurpose(req.keyId);
    return { plaintext: PLAINTEXT.slice(), reference: referenceFor(req.tenantId, req.keyId), dekVersion: 1 };
  },
  async decrypt(req, ctx) {
    await admit(ctx, req.tenantId);
    failOnPurpose(req.keyId);
    const text = new TextDecoder().decode(req.reference);
    if (!text.startsWith("ref:")) throw new KmsError("REFERENCE_MALFORMED", "reference: not a DEK reference", { field: "reference" });
    if (text !== `ref:${req.tenantId}/${req.keyId}/1`) {
      throw new KmsError("REFERENCE_KEY_MISMATCH", "reference: belongs to another tenant or key", { field: "reference" });
    }
    return { plaintext: PLAINTEXT.slice(), dekVersion: 1 };
  },
};

// ---------------------------------------------------------------------------
// Server and clients
// ---------------------------------------------------------------------------

let pki: TestPki;
let tokens: TestTokenIssuer;
let server: KmsServer;
let workDir: string;
const logLines: string[] = [];

let selfSigned: CertificateAndKey;
let expiredClient: CertificateAndKey;
let noSpiffeClient: CertificateAndKey;
let foreignCaClient: CertificateAndKey;

const MAX_BODY = 4096;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), "matih-kms-api-"));
  pki = await createTestPki();
  tokens = await createTestTokenIssuer(workDir);
  selfSigned = await createSelfSignedCertificate({ spiffeId: "spiffe://matih.local/dev" });
  expiredClient = await issueClientCertificate(pki.ca, {
    notBefore: new Date(Date.now() - 10 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  });
  noSpiffeClient = await issueClientCertificate(pki.ca, { spiffeId: null, commonName: "no-spiffe" });
  foreignCaClient = await issueClientCertificate(await createCertificateAuthority({ commonName: "foreign CA" }));
  server = await createKmsServer({
    services: { keyManagement, dataKey },
    tls: pki.serverTls,
    auth: { jwt: { jwks: { file: tokens.jwksPath }, issuer: tokens.issuer, audience: tokens.audience } },
    port: 0,
    maxBodyBytes: MAX_BODY,
    logger: createJsonLinesLogger({ write: (line) => void logLines.push(line) }),
  });
});

afterAll(async () => {
  await server?.close(1000);
  await pki?.cleanup();
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
});

interface RestResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

interface RestRequest {
  readonly method: string;
  readonly path: string;
  readonly body?: string | Buffer;
  readonly headers?: Record<string, string>;
  /** Client certificate; default none. */
  readonly cert?: CertificateAndKey;
  readonly token?: string;
  /** Send the body in chunks without a content-length. */
  readonly chunked?: boolean;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** One REST call over HTTP/2 on its own connection. */
function rest(request: RestRequest): Promise<RestResponse> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(server.url, {
      ca: pki.caCert,
      servername: "localhost",
      ...(request.cert === undefined ? {} : { cert: request.cert.cert, key: request.cert.key }),
    });
    session.on("error", reject);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": request.method,
      ":path": request.path,
      ...request.headers,
    };
    if (request.token !== undefined) headers["authorization"] = `Bearer ${request.token}`;
    if (request.body !== undefined) {
      headers["content-type"] ??= "application/json";
      if (request.chunked !== true) headers["content-length"] = String(Buffer.byteLength(request.body));
    }
    const stream = session.request(headers, { endStream: request.body === undefined });
    let status = 0;
    let responseHeaders: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      responseHeaders = h as Record<string, string | string[] | undefined>;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {}); // an RST after a complete response is fine
    stream.on("close", () => {
      session.close();
      const text = Buffer.concat(chunks).toString("utf8");
      if (status === 0) reject(new Error("no response"));
      else resolve({ status, headers: responseHeaders, text, json: parseJson(text) });
    });
    if (request.body === undefined) {
      stream.end();
    } else if (request.chunked === true) {
      const body = Buffer.from(request.body);
      const step = 1024;
      let offset = 0;
      const pump = (): void => {
        while (offset < body.length) {
          const piece = body.subarray(offset, offset + step);
          offset += step;
          if (stream.destroyed || stream.closed) return;
          if (!stream.write(piece)) {
            stream.once("drain", pump);
            return;
          }
        }
        stream.end();
      };
      pump();
    } else {
      stream.end(request.body);
    }
  });
}

/** One REST call over HTTP/1.1. */
function rest1(request: RestRequest): Promise<RestResponse & { readonly connectionClosed: boolean }> {
  return new Promise((resolve, reject) => {
    const url = new URL(server.url);
    const headers: Record<string, string> = { ...request.headers };
    if (request.token !== undefined) headers["authorization"] = `Bearer ${request.token}`;
    if (request.body !== undefined) headers["content-type"] ??= "application/json";
    const req = https.request({
      host: url.hostname,
      port: url.port,
      method: request.method,
      path: request.path,
      headers,
      ca: pki.caCert,
      servername: "localhost",
      ...(request.cert === undefined ? {} : { cert: request.cert.cert, key: request.cert.key }),
      agent: false,
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text,
          json: parseJson(text),
          connectionClosed: res.headers["connection"] === "close",
        });
      });
    });
    if (request.body !== undefined) req.write(request.body);
    req.end();
  });
}

const T1 = "/api/v1/tenants/t1/encryption";

async function tokenFor(tenantId: string): Promise<string> {
  return tokens.signToken({ tenantId });
}

function rpcTransports(cert: CertificateAndKey | undefined, headers: Record<string, string> = {}) {
  const tlsOptions = { ca: pki.caCert, servername: "localhost", ...(cert === undefined ? {} : { cert: cert.cert, key: cert.key }) };
  const interceptors = [
    (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) => async (req: Parameters<typeof next>[0]) => {
      for (const [name, value] of Object.entries(headers)) req.header.set(name, value);
      return next(req);
    },
  ];
  return {
    grpc: createGrpcTransport({ baseUrl: server.url, nodeOptions: tlsOptions, interceptors }),
    grpcWeb: createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1", nodeOptions: tlsOptions, interceptors }),
    connect: createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", nodeOptions: tlsOptions, interceptors }),
  };
}

async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded but should have failed");
}

function reasonOf(err: ConnectError): ErrorReason | undefined {
  return err.findDetails(ErrorDetailSchema)[0]?.reason;
}

// ---------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------

describe("REST routes come from the google.api.http annotations", () => {
  it("serves every annotated route of the services it was given, and no others", () => {
    const routes = server.routes.map((r) => `${r.httpMethod} ${r.path} -> ${r.procedure}`).sort();
    expect(routes).toEqual(
      [
        "GET /api/v1/tenants/{tenant_id}/encryption/keys -> matih.kms.v1.KeyManagementService/ListKeys",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys -> matih.kms.v1.KeyManagementService/CreateKey",
        "GET /api/v1/tenants/{tenant_id}/encryption/keys/{key_id} -> matih.kms.v1.KeyManagementService/GetKey",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/rotate -> matih.kms.v1.KeyManagementService/RotateKey",
        "DELETE /api/v1/tenants/{tenant_id}/encryption/keys/{key_id} -> matih.kms.v1.KeyManagementService/RevokeKey",
        "PATCH /api/v1/tenants/{tenant_id}/encryption/keys/{key_id} -> matih.kms.v1.KeyManagementService/UpdateKey",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:restore -> matih.kms.v1.KeyManagementService/RestoreKey",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/versions/{dek_version}:revoke -> matih.kms.v1.KeyManagementService/RevokeDekVersion",
        "GET /api/v1/tenants/{tenant_id}/encryption/status -> matih.kms.v1.KeyManagementService/GetEncryptionStatus",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:generateDataKey -> matih.kms.v1.DataKeyService/GenerateDataKey",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:decrypt -> matih.kms.v1.DataKeyService/Decrypt",
      ].sort(),
    );
  });

  it("ListKeys: GET with query parameters by proto name, JSON name and enum name", async () => {
    const res = await rest({
      method: "GET",
      path: `${T1}/keys?page_size=5&pageToken=abc&state=KEY_STATE_REVOKED`,
      token: await tokenFor("t1"),
    });
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json.nextPageToken).toBe("next");
    expect(res.json.keys[0].tenantId).toBe("t1");
    expect(JSON.parse(res.json.keys[0].description)).toEqual({ pageSize: 5, pageToken: "abc", state: KeyState.REVOKED });
  });

  it("ListKeys: an unknown query parameter is INVALID_FIELD naming it", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys?colour=red`, token: await tokenFor("t1") });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_INVALID_FIELD", field: "colour" });
  });

  it("ListKeys: a bad enum name or a non-number, or a repeated singular parameter, is INVALID_FIELD", async () => {
    const token = await tokenFor("t1");
    const badEnum = await rest({ method: "GET", path: `${T1}/keys?state=MELTED`, token });
    expect(badEnum.status).toBe(400);
    expect(badEnum.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "state" });
    const badNumber = await rest({ method: "GET", path: `${T1}/keys?page_size=ten`, token });
    expect(badNumber.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "page_size" });
    const twice = await rest({ method: "GET", path: `${T1}/keys?page_size=1&page_size=2`, token });
    expect(twice.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "page_size" });
  });

  it("a query parameter cannot override a path variable", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys?tenant_id=t2`, token: await tokenFor("t1") });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "tenant_id" });
  });

  it("CreateKey: POST body (proto3 JSON) merged with the path variables", async () => {
    const res = await rest({
      method: "POST",
      path: `${T1}/keys`,
      token: await tokenFor("t1"),
      body: JSON.stringify({
        keyId: "pii",
        kek_algorithm: "KEK_ALGORITHM_RSA_4096",
        description: "personal data",
        rotationPolicy: { dekRotationPeriod: "86400s" },
      }),
    });
    expect(res.status).toBe(200);
    expect(res.json.key).toMatchObject({
      tenantId: "t1",
      keyId: "pii",
      description: "personal data",
      kekAlgorithm: "KEK_ALGORITHM_RSA_4096",
      state: "KEY_STATE_ENABLED",
      rotationPolicy: { dekRotationPeriod: "86400s" },
      createTime: "2025-01-02T03:04:05Z",
    });
  });

  it("CreateKey: a body tenant_id equal to the path is accepted, a different one refused", async () => {
    const token = await tokenFor("t1");
    const same = await rest({ method: "POST", path: `${T1}/keys`, token, body: JSON.stringify({ tenantId: "t1", keyId: "a" }) });
    expect(same.status).toBe(200);
    const other = await rest({ method: "POST", path: `${T1}/keys`, token, body: JSON.stringify({ tenant_id: "t2", keyId: "a" }) });
    expect(other.status).toBe(400);
    expect(other.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "tenant_id" });
  });

  it("CreateKey: an invalid key id from the implementation is INVALID_FIELD naming key_id", async () => {
    const res = await rest({ method: "POST", path: `${T1}/keys`, token: await tokenFor("t1"), body: JSON.stringify({ keyId: "no spaces!" }) });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_INVALID_FIELD", field: "key_id" });
    expect(res.json.message).toContain("key_id");
  });

  it("GetKey: GET with two path variables; percent-encoded segments are decoded", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k%2D1`, token: await tokenFor("t1") });
    expect(res.status).toBe(200);
    expect(res.json.key).toMatchObject({ tenantId: "t1", keyId: "k-1" });
  });

  it("RotateKey: POST .../rotate with a body field", async () => {
    const res = await rest({ method: "POST", path: `${T1}/keys/k1/rotate`, token: await tokenFor("t1"), body: JSON.stringify({ rotateKek: true }) });
    expect(res.status).toBe(200);
    expect(res.json.key).toMatchObject({ keyId: "k1", primaryDekVersion: 2, primaryKekVersion: 2 });
  });

  it("RotateKey: an empty body is an empty message", async () => {
    const res = await rest({ method: "POST", path: `${T1}/keys/k1/rotate`, token: await tokenFor("t1") });
    expect(res.status).toBe(200);
    expect(res.json.key).toMatchObject({ primaryKekVersion: 1 });
  });

  it("RevokeKey: DELETE", async () => {
    const res = await rest({ method: "DELETE", path: `${T1}/keys/k1`, token: await tokenFor("t1") });
    expect(res.status).toBe(200);
    expect(res.json.key).toMatchObject({ keyId: "k1", state: "KEY_STATE_REVOKED" });
  });

  it("GetEncryptionStatus: GET .../status with durations and timestamps in proto3 JSON", async () => {
    const res = await rest({ method: "GET", path: `${T1}/status`, token: await tokenFor("t1") });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({
      tenantId: "t1",
      keys: [{ keyId: "k1", state: "KEY_STATE_ENABLED", primaryDekAge: "60s" }],
      reportTime: "2025-06-01T00:00:00Z",
    });
  });

  it("GenerateDataKey: POST ...:generateDataKey returns bytes as base64", async () => {
    const res = await rest({ method: "POST", path: `${T1}/keys/k1:generateDataKey`, token: await tokenFor("t1"), body: "{}" });
    expect(res.status).toBe(200);
    expect(new Uint8Array(Buffer.from(res.json.plaintext, "base64"))).toEqual(PLAINTEXT);
    expect(Buffer.from(res.json.reference, "base64").toString()).toBe("ref:t1/k1/1");
    expect(res.json.dekVersion).toBe(1);
  });

  it("Decrypt: POST ...:decrypt takes bytes as base64 (standard or URL-safe)", async () => {
    const token = await tokenFor("t1");
    const reference = Buffer.from(referenceFor("t1", "k1"));
    for (const encoded of [reference.toString("base64"), reference.toString("base64url")]) {
      const res = await rest({ method: "POST", path: `${T1}/keys/k1:decrypt`, token, body: JSON.stringify({ reference: encoded }) });
      expect(res.status).toBe(200);
      expect(new Uint8Array(Buffer.from(res.json.plaintext, "base64"))).toEqual(PLAINTEXT);
    }
    const mismatch = await rest({
      method: "POST",
      path: `${T1}/keys/k2:decrypt`,
      token,
      body: JSON.stringify({ reference: reference.toString("base64") }),
    });
    expect(mismatch.status).toBe(400);
    expect(mismatch.json).toMatchObject({ reason: "ERROR_REASON_REFERENCE_KEY_MISMATCH", field: "reference" });
  });

  it("works over HTTP/1.1 as well as HTTP/2", async () => {
    const res = await rest1({ method: "GET", path: `${T1}/keys/k1`, token: await tokenFor("t1") });
    expect(res.status).toBe(200);
    expect(res.json.key.keyId).toBe("k1");
  });
});

describe("REST bad input", () => {
  it("an unknown JSON field is 400 MALFORMED_BODY naming the field", async () => {
    const token = await tokenFor("t1");
    const top = await rest({ method: "POST", path: `${T1}/keys`, token, body: JSON.stringify({ keyId: "a", colour: "red" }) });
    expect(top.status).toBe(400);
    expect(top.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_MALFORMED_BODY", field: "colour" });
    expect(top.json.message).toContain("colour");
    const nested = await rest({
      method: "POST",
      path: `${T1}/keys`,
      token,
      body: JSON.stringify({ keyId: "a", rotationPolicy: { dekRotationPeriod: "60s", speed: 1 } }),
    });
    expect(nested.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY", field: "rotation_policy.speed" });
  });

  it("a value of the wrong type is 400 MALFORMED_BODY naming the field", async () => {
    const token = await tokenFor("t1");
    const badEnum = await rest({ method: "POST", path: `${T1}/keys`, token, body: JSON.stringify({ keyId: "a", kekAlgorithm: "AES" }) });
    expect(badEnum.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY", field: "kek_algorithm" });
    const badBool = await rest({ method: "POST", path: `${T1}/keys/k1/rotate`, token, body: JSON.stringify({ rotateKek: "yes" }) });
    expect(badBool.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY", field: "rotate_kek" });
    const badBytes = await rest({ method: "POST", path: `${T1}/keys/k1:decrypt`, token, body: JSON.stringify({ reference: "!!!" }) });
    expect(badBytes.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY", field: "reference" });
  });

  it("bad JSON is 400 MALFORMED_BODY", async () => {
    const res = await rest({ method: "POST", path: `${T1}/keys`, token: await tokenFor("t1"), body: '{"keyId": "a",' });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_MALFORMED_BODY" });
    const notObject = await rest({ method: "POST", path: `${T1}/keys`, token: await tokenFor("t1"), body: "[1,2]" });
    expect(notObject.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY" });
  });

  it("a body on a route without one is 400 MALFORMED_BODY", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k1`, token: await tokenFor("t1"), body: "{}" });
    expect(res.status).toBe(400);
    expect(res.json.reason).toBe("ERROR_REASON_MALFORMED_BODY");
  });

  it("an oversized body is 413 BODY_TOO_LARGE (declared length, streamed over HTTP/2, and over HTTP/1.1)", async () => {
    const token = await tokenFor("t1");
    const big = JSON.stringify({ keyId: "a", description: "x".repeat(MAX_BODY * 4) });
    const declared = await rest({ method: "POST", path: `${T1}/keys`, token, body: big });
    expect(declared.status).toBe(413);
    expect(declared.json).toMatchObject({
      code: "resource_exhausted",
      reason: "ERROR_REASON_BODY_TOO_LARGE",
      metadata: { limit: String(MAX_BODY) },
    });
    const streamed = await rest({ method: "POST", path: `${T1}/keys`, token, body: big, chunked: true });
    expect(streamed.status).toBe(413);
    expect(streamed.json.reason).toBe("ERROR_REASON_BODY_TOO_LARGE");
    const overHttp1 = await rest1({ method: "POST", path: `${T1}/keys`, token, body: big });
    expect(overHttp1.status).toBe(413);
    expect(overHttp1.connectionClosed).toBe(true);
  });

  it("an unknown route is 404 ROUTE_NOT_FOUND as JSON", async () => {
    const res = await rest({ method: "GET", path: "/api/v1/nothing/here", token: await tokenFor("t1") });
    expect(res.status).toBe(404);
    expect(res.json).toMatchObject({ code: "not_found", reason: "ERROR_REASON_ROUTE_NOT_FOUND" });
    const trailingSlash = await rest({ method: "GET", path: `${T1}/keys/`, token: await tokenFor("t1") });
    expect(trailingSlash.status).toBe(404);
  });

  it("a known path with the wrong method is 405 with Allow and a JSON body", async () => {
    const res = await rest({ method: "PUT", path: `${T1}/keys/k1`, token: await tokenFor("t1"), body: "{}" });
    expect(res.status).toBe(405);
    expect(String(res.headers["allow"]).split(", ").sort()).toEqual(["DELETE", "GET", "PATCH"]);
    expect(res.json).toMatchObject({ reason: "ERROR_REASON_ROUTE_NOT_FOUND" });
  });

  it("domain errors keep their reason, status and field", async () => {
    const token = await tokenFor("t1");
    const missing = await rest({ method: "GET", path: `${T1}/keys/missing`, token });
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ code: "not_found", reason: "ERROR_REASON_KEY_NOT_FOUND", message: 'key "missing" not found', field: "key_id" });
    const exists = await rest({ method: "POST", path: `${T1}/keys`, token, body: JSON.stringify({ keyId: "exists" }) });
    expect(exists.status).toBe(409);
    expect(exists.json.reason).toBe("ERROR_REASON_KEY_ALREADY_EXISTS");
    const revoked = await rest({ method: "POST", path: `${T1}/keys/revoked:generateDataKey`, token, body: "{}" });
    expect(revoked.status).toBe(400);
    expect(revoked.json).toMatchObject({ code: "failed_precondition", reason: "ERROR_REASON_KEY_REVOKED" });
  });

  it("an unexpected fault is 500 with a generic message; the cause is only in the log", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/boom`, token: await tokenFor("t1") });
    expect(res.status).toBe(500);
    expect(res.json).toMatchObject({ code: "internal", reason: "ERROR_REASON_INTERNAL", message: "internal error" });
    expect(res.text).not.toContain(SECRET_IN_FAULT);
    const errorId = res.json.metadata.error_id as string;
    const logged = logLines.map((l) => JSON.parse(l)).find((l) => l.error_id === errorId);
    expect(logged).toMatchObject({ level: "error", msg: "internal error" });
    expect(JSON.stringify(logged)).toContain(SECRET_IN_FAULT);
  });

  it("GET /healthz answers 200 without any credentials", async () => {
    const res = await rest({ method: "GET", path: "/healthz" });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ status: "ok" });
  });
});

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

describe("REST authentication: client certificate or bearer token", () => {
  it("no credentials → 401 CREDENTIALS_MISSING with WWW-Authenticate", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k1` });
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ code: "unauthenticated", reason: "ERROR_REASON_CREDENTIALS_MISSING" });
    expect(res.headers["www-authenticate"]).toContain("Bearer");
  });

  it("a token for the tenant → 200 as a tenant caller", async () => {
    const before = seen.length;
    const res = await rest({ method: "GET", path: `${T1}/keys/k1`, token: await tokens.signToken({ tenantId: "t1", subject: "alice" }) });
    expect(res.status).toBe(200);
    expect(seen.slice(before)).toEqual([{ method: "GetKey", caller: { kind: "tenant", tenantId: "t1", subject: "alice" }, protocol: "rest" }]);
  });

  it("a token for another tenant → 403 TENANT_FORBIDDEN, and the implementation is never reached", async () => {
    const before = seen.length;
    for (const path of [`/api/v1/tenants/t2/encryption/keys/k1`, `/api/v1/tenants/t2/encryption/keys?page_size=1`]) {
      const res = await rest({ method: "GET", path, token: await tokenFor("t1") });
      expect(res.status).toBe(403);
      expect(res.json).toMatchObject({ code: "permission_denied", reason: "ERROR_REASON_TENANT_FORBIDDEN" });
    }
    const generate = await rest({ method: "POST", path: `/api/v1/tenants/t2/encryption/keys/k1:generateDataKey`, token: await tokenFor("t1"), body: "{}" });
    expect(generate.status).toBe(403);
    expect(seen.length).toBe(before);
  });

  it("an expired token → 401 TOKEN_EXPIRED; a not-yet-valid one too", async () => {
    const expired = await rest({ method: "GET", path: `${T1}/keys/k1`, token: await tokens.signToken({ tenantId: "t1", expiresIn: -3600 }) });
    expect(expired.status).toBe(401);
    expect(expired.json).toMatchObject({ reason: "ERROR_REASON_TOKEN_EXPIRED" });
    expect(expired.headers["www-authenticate"]).toContain('error="invalid_token"');
    const early = await rest({ method: "GET", path: `${T1}/keys/k1`, token: await tokens.signToken({ tenantId: "t1", notBefore: 3600 }) });
    expect(early.json).toMatchObject({ reason: "ERROR_REASON_TOKEN_EXPIRED" });
  });

  it("a tampered token → 401 TOKEN_INVALID", async () => {
    const token = await tokenFor("t1");
    const [header, payload, signature] = token.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...claims, tenant_id: "t2" })).toString("base64url");
    const res = await rest({ method: "GET", path: "/api/v1/tenants/t2/encryption/keys/k1", token: `${header}.${forged}.${signature}` });
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ reason: "ERROR_REASON_TOKEN_INVALID" });
  });

  it("tokens signed by an unknown key, for another audience or issuer, without a tenant claim, or not Bearer → 401 TOKEN_INVALID", async () => {
    const { privateKey } = await generateSigningKey();
    const cases = [
      `Bearer ${await tokens.signToken({ tenantId: "t1", key: privateKey })}`,
      `Bearer ${await tokens.signToken({ tenantId: "t1", audience: "someone-else" })}`,
      `Bearer ${await tokens.signToken({ tenantId: "t1", issuer: "https://evil.example" })}`,
      `Bearer ${await tokens.signToken({})}`,
      `Bearer ${await tokens.signToken({ tenantId: "../t2" })}`,
      "Bearer not-a-jwt",
      `Basic ${Buffer.from("u:p").toString("base64")}`,
    ];
    for (const authorization of cases) {
      const res = await rest({ method: "GET", path: `${T1}/keys/k1`, headers: { authorization } });
      expect(res.status, authorization).toBe(401);
      expect(res.json.reason, authorization).toBe("ERROR_REASON_TOKEN_INVALID");
    }
  });

  it("a trusted client certificate → 200 for any tenant, as the certificate's SPIFFE id", async () => {
    const before = seen.length;
    const res = await rest({ method: "GET", path: "/api/v1/tenants/t9/encryption/keys/k1", cert: pki.client });
    expect(res.status).toBe(200);
    expect(seen.slice(before)[0]?.caller).toEqual({ kind: "service", spiffeId: "spiffe://matih.local/dev" });
  });

  it("a self-signed certificate carrying the right SPIFFE id → 401 CLIENT_CERTIFICATE_UNTRUSTED, even with a valid token", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k1`, cert: selfSigned, token: await tokenFor("t1") });
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ reason: "ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED", metadata: { tls_error: "DEPTH_ZERO_SELF_SIGNED_CERT" } });
  });

  it("a certificate from another CA → 401 CLIENT_CERTIFICATE_UNTRUSTED", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k1`, cert: foreignCaClient });
    expect(res.status).toBe(401);
    expect(res.json.reason).toBe("ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED");
  });

  it("an expired certificate from the trusted CA → 401 CLIENT_CERTIFICATE_UNTRUSTED naming CERT_HAS_EXPIRED", async () => {
    const res = await rest1({ method: "GET", path: `${T1}/keys/k1`, cert: expiredClient });
    expect(res.status).toBe(401);
    expect(res.json.reason).toBe("ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED");
    expect(res.json.message).toContain("CERT_HAS_EXPIRED");
  });

  it("a trusted certificate without a SPIFFE URI SAN → 401 CLIENT_CERTIFICATE_UNTRUSTED saying so", async () => {
    const res = await rest({ method: "GET", path: `${T1}/keys/k1`, cert: noSpiffeClient });
    expect(res.status).toBe(401);
    expect(res.json.reason).toBe("ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED");
    expect(res.json.message).toContain("SPIFFE");
  });
});

// ---------------------------------------------------------------------------
// RPC
// ---------------------------------------------------------------------------

describe("RPC routes (gRPC, gRPC-Web, Connect) require a trusted client certificate", () => {
  it("a Connect client with a trusted certificate succeeds over gRPC, gRPC-Web and the Connect protocol", async () => {
    const transports = rpcTransports(pki.client);
    for (const [name, transport] of Object.entries(transports)) {
      const before = seen.length;
      const client = createClient(DataKeyService, transport);
      const res = await client.generateDataKey({ tenantId: "t1", keyId: "k1" });
      expect(res.plaintext, name).toEqual(PLAINTEXT);
      expect(new TextDecoder().decode(res.reference)).toBe("ref:t1/k1/1");
      expect(seen.slice(before)[0]?.caller).toEqual({ kind: "service", spiffeId: "spiffe://matih.local/dev" });
      const decrypted = await client.decrypt({ tenantId: "t1", keyId: "k1", reference: res.reference });
      expect(decrypted.plaintext).toEqual(PLAINTEXT);
    }
    const keys = createClient(KeyManagementService, transports.grpc);
    expect((await keys.getKey({ tenantId: "t1", keyId: "k1" })).key?.keyId).toBe("k1");
  });

  it("gRPC without a certificate → Unauthenticated CREDENTIALS_MISSING", async () => {
    const client = createClient(DataKeyService, rpcTransports(undefined).grpc);
    const err = await rpcError(client.generateDataKey({ tenantId: "t1", keyId: "k1" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(reasonOf(err)).toBe(ErrorReason.CREDENTIALS_MISSING);
  });

  it("gRPC with only a bearer token → PermissionDenied CLIENT_CERTIFICATE_REQUIRED", async () => {
    const token = await tokenFor("t1");
    for (const transport of Object.values(rpcTransports(undefined, { authorization: `Bearer ${token}` }))) {
      const client = createClient(DataKeyService, transport);
      const err = await rpcError(client.generateDataKey({ tenantId: "t1", keyId: "k1" }));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(reasonOf(err)).toBe(ErrorReason.CLIENT_CERTIFICATE_REQUIRED);
    }
  });

  it("gRPC with a self-signed certificate carrying the right SPIFFE id → Unauthenticated CLIENT_CERTIFICATE_UNTRUSTED", async () => {
    const client = createClient(DataKeyService, rpcTransports(selfSigned).grpc);
    const err = await rpcError(client.generateDataKey({ tenantId: "t1", keyId: "k1" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(reasonOf(err)).toBe(ErrorReason.CLIENT_CERTIFICATE_UNTRUSTED);
  });

  it("gRPC with an expired certificate → Unauthenticated naming CERT_HAS_EXPIRED", async () => {
    const client = createClient(DataKeyService, rpcTransports(expiredClient).grpc);
    const err = await rpcError(client.generateDataKey({ tenantId: "t1", keyId: "k1" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(reasonOf(err)).toBe(ErrorReason.CLIENT_CERTIFICATE_UNTRUSTED);
    expect(err.rawMessage).toContain("CERT_HAS_EXPIRED");
  });

  it("REST and gRPC report the same code, reason, message and field for the same fault", async () => {
    const client = createClient(KeyManagementService, rpcTransports(pki.client).grpc);
    const err = await rpcError(client.getKey({ tenantId: "t1", keyId: "missing" }));
    const res = await rest({ method: "GET", path: `${T1}/keys/missing`, cert: pki.client });
    const detail = err.findDetails(ErrorDetailSchema)[0];
    expect(err.code).toBe(Code.NotFound);
    expect(detail?.reason).toBe(ErrorReason.KEY_NOT_FOUND);
    expect(res.json.reason).toBe("ERROR_REASON_KEY_NOT_FOUND");
    expect(res.json.message).toBe(err.rawMessage);
    expect(res.json.field).toBe(detail?.field);

    const internal = await rpcError(client.getKey({ tenantId: "t1", keyId: "boom" }));
    expect(internal.code).toBe(Code.Internal);
    expect(internal.rawMessage).toBe("internal error");
    expect(internal.rawMessage).not.toContain(SECRET_IN_FAULT);
    expect(reasonOf(internal)).toBe(ErrorReason.INTERNAL);
  });

  it("a plain @grpc/grpc-js client using @grpc/proto-loader on proto/ succeeds; without a certificate it gets UNAUTHENTICATED", async () => {
    const root = fileURLToPath(new URL("..", import.meta.url));
    const definition = protoLoader.loadSync(["matih/kms/v1/data_key_service.proto", "matih/kms/v1/key_management_service.proto"], {
      includeDirs: [join(root, "proto"), join(root, "node_modules/google-proto-files")],
      longs: String,
      enums: String,
      defaults: true,
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const pkg = grpc.loadPackageDefinition(definition) as any;
    const target = `127.0.0.1:${server.port}`;
    const withCert = grpc.credentials.createSsl(Buffer.from(pki.caCert), Buffer.from(pki.clientKey), Buffer.from(pki.clientCert));
    const withoutCert = grpc.credentials.createSsl(Buffer.from(pki.caCert));
    const call = (credentials: grpc.ChannelCredentials, service: string, method: string, request: object) =>
      new Promise<{ err: grpc.ServiceError | null; res: any }>((resolve) => {
        const client = new pkg.matih.kms.v1[service](target, credentials, { "grpc.ssl_target_name_override": "localhost" });
        client[method](request, (err: grpc.ServiceError | null, res: unknown) => {
          client.close();
          resolve({ err, res });
        });
      });

    const ok = await call(withCert, "DataKeyService", "generateDataKey", { tenantId: "t1", keyId: "k1" });
    expect(ok.err).toBeNull();
    expect(new Uint8Array(ok.res.plaintext)).toEqual(PLAINTEXT);
    expect(ok.res.dekVersion).toBe(1);

    const key = await call(withCert, "KeyManagementService", "getKey", { tenantId: "t1", keyId: "k1" });
    expect(key.err).toBeNull();
    expect(key.res.key.state).toBe("KEY_STATE_ENABLED");

    const refused = await call(withoutCert, "DataKeyService", "generateDataKey", { tenantId: "t1", keyId: "k1" });
    expect(refused.err?.code).toBe(grpc.status.UNAUTHENTICATED);

    const notFound = await call(withCert, "KeyManagementService", "getKey", { tenantId: "t1", keyId: "missing" });
    expect(notFound.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(notFound.err?.details).toBe('key "missing" not found');
  });

  it("the Connect protocol's JSON is strict too: an unknown field is InvalidArgument", async () => {
    const res = await rest({
      method: "POST",
      path: "/matih.kms.v1.DataKeyService/GenerateDataKey",
      cert: pki.client,
      body: JSON.stringify({ tenantId: "t1", keyId: "k1", colour: "red" }),
    });
    expect(res.status).toBe(400);
    expect(res.json.code).toBe("invalid_argument");
  });
});

/**
 * The gRPC fast path (server/src/api/grpc-fast-path.ts) serves unary
 * DataKeyService calls without connect-node. These tests send the same raw
 * HTTP/2 requests to two servers built from the same stub services — one with
 * the fast path, one without — and require the caller to see the same status,
 * message, ErrorDetail and response message from both, for successes and for
 * every kind of refusal. They also prove the fast path really served the call
 * (it wipes the plaintext it was handed) and that anything it does not expect
 * still reaches connect-node.
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  DataKeyService,
  DecryptRequestSchema,
  GenerateDataKeyRequestSchema,
  GenerateDataKeyResponseSchema,
} from "../gen/matih/kms/v1/data_key_service_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../gen/matih/kms/v1/errors_pb.js";
import { authenticate, authorizeTenant } from "../server/src/api/authentication.js";
import { createAuthenticator } from "../server/src/api/authentication.js";
import { createGrpcFastPath } from "../server/src/api/grpc-fast-path.js";
import { createKmsServer, type KmsServer } from "../server/src/api/kms-server.js";
import { createJsonLinesLogger } from "../server/src/api/logger.js";
import { KmsError } from "../server/src/domain/kms-error.js";
import { issueClientCertificate, type CertificateAndKey } from "../server/src/tls/dev-pki.js";
import { createTestPki, type TestPki } from "./support/pki.js";

const MAX_BODY = 1024;
const handedOut: Uint8Array[] = [];
const signals: AbortSignal[] = [];
let slowCallsFinished = 0;
const slowFinished = new Set<string>();

async function admit(ctx: HandlerContext, tenantId: string): Promise<void> {
  authorizeTenant(await authenticate(ctx), tenantId);
}

const dataKey: ServiceImpl<typeof DataKeyService> = {
  async generateDataKey(req, ctx) {
    await admit(ctx, req.tenantId);
    signals.push(ctx.signal);
    if (req.keyId === "revoked") throw new KmsError("KEY_REVOKED", `key ${req.keyId} is revoked: uses refused`, { field: "key_id" });
    if (req.keyId === "boom") throw new Error("socket hang up talking to db-host-7 with password hunter2");
    if (req.keyId.startsWith("slow")) {
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      slowCallsFinished++;
      slowFinished.add(req.keyId);
    }
    if (req.keyId === "headers") {
      ctx.responseTrailer.set("x-served-by", "stub");
      ctx.responseTrailer.set("x-seen-tag", ctx.requestHeader.get("x-tag") ?? "none");
      ctx.responseTrailer.set("x-deadline-set", String(ctx.timeoutMs() !== undefined && ctx.timeoutMs()! > 0));
      ctx.responseTrailer.set("x-procedure", `${ctx.service.typeName}/${ctx.method.name} ${ctx.protocolName} ${ctx.requestMethod}`);
    }
    const plaintext = Buffer.alloc(32, 0x5a);
    handedOut.push(plaintext);
    return { plaintext, reference: Buffer.from(`ref:${req.tenantId}/${req.keyId}`), dekVersion: 7 };
  },
  async decrypt(req, ctx) {
    await admit(ctx, req.tenantId);
    if (req.reference.length === 0) throw new KmsError("INVALID_FIELD", "reference: is required", { field: "reference" });
    return { plaintext: Buffer.alloc(32, 0x33), dekVersion: 1 };
  },
};

let pki: TestPki;
let noSpiffeClient: CertificateAndKey;
let fast: KmsServer;
let connect: KmsServer;
const logLines: string[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  noSpiffeClient = await issueClientCertificate(pki.ca, { spiffeId: null, commonName: "no-spiffe" });
  const start = (grpcFastPath: boolean) =>
    createKmsServer({
      services: { keyManagement: {}, dataKey },
      tls: pki.serverTls,
      port: 0,
      maxBodyBytes: MAX_BODY,
      grpcFastPath,
      logger: createJsonLinesLogger({ write: (line) => void logLines.push(line) }),
    });
  fast = await start(true);
  connect = await start(false);
});

afterAll(async () => {
  await fast?.close(1_000);
  await connect?.close(1_000);
  await pki?.cleanup();
});

// ---------------------------------------------------------------------------
// A raw gRPC client: what goes on the wire, and everything that comes back.
// ---------------------------------------------------------------------------

interface RawRequest {
  readonly method: "GenerateDataKey" | "Decrypt";
  /** The whole request body, envelope included. */
  readonly body: Buffer;
  readonly headers?: Record<string, string>;
  /** Default: the test PKI's client (spiffe://matih.local/dev); null: none. */
  readonly cert?: CertificateAndKey | null;
}

interface RawOutcome {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly grpcStatus: number;
  readonly grpcMessage: string;
  readonly reason: string | undefined;
  readonly field: string | undefined;
  readonly errorId: boolean;
  readonly messages: Buffer[];
  readonly extraTrailers: Record<string, string>;
}

function envelope(message: Uint8Array, flags = 0): Buffer {
  const frame = Buffer.alloc(5 + message.byteLength);
  frame[0] = flags;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  return frame;
}

function generateBody(tenantId: string, keyId: string): Buffer {
  return envelope(toBinary(GenerateDataKeyRequestSchema, create(GenerateDataKeyRequestSchema, { tenantId, keyId })));
}

function call(server: KmsServer, request: RawRequest): Promise<RawOutcome> {
  const cert = request.cert === undefined ? pki.client : request.cert;
  return new Promise((resolve, reject) => {
    const session = http2.connect(server.url, {
      ca: pki.caCert,
      ...(cert === null ? {} : { cert: cert.cert, key: cert.key }),
    });
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": `/matih.kms.v1.DataKeyService/${request.method}`,
      "content-type": "application/grpc",
      te: "trailers",
      ...request.headers,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      const status = { ...headers, ...trailers };
      const text = (name: string) => {
        const value = status[name];
        return Array.isArray(value) ? value[0] : value;
      };
      const error = findTrailerError(new Headers(Object.entries(status).filter(([k]) => !k.startsWith(":")) as [string, string][]));
      const detail = error?.findDetails(ErrorDetailSchema)[0];
      const extraTrailers: Record<string, string> = {};
      for (const [name, value] of Object.entries(trailers)) {
        if (name.startsWith("x-") && typeof value === "string") extraTrailers[name] = value;
      }
      resolve({
        status: Number(headers[":status"]),
        contentType: text("content-type"),
        grpcStatus: Number(text("grpc-status")),
        grpcMessage: decodeURIComponent(text("grpc-message") ?? ""),
        reason: detail === undefined ? undefined : ErrorReason[detail.reason],
        field: detail?.field === "" ? undefined : detail?.field,
        errorId: detail?.metadata["error_id"] !== undefined,
        messages: splitEnvelopes(Buffer.concat(chunks)),
        extraTrailers,
      });
    });
    stream.end(request.body);
  });
}

function splitEnvelopes(body: Buffer): Buffer[] {
  const messages: Buffer[] = [];
  for (let at = 0; at + 5 <= body.byteLength; ) {
    const length = body.readUInt32BE(at + 1);
    messages.push(body.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return messages;
}

async function bothRoutes(request: RawRequest): Promise<{ fast: RawOutcome; connect: RawOutcome }> {
  return { fast: await call(fast, request), connect: await call(connect, request) };
}

// ---------------------------------------------------------------------------

describe("the gRPC fast path answers exactly as connect-node does", () => {
  it("a successful GenerateDataKey: same response message, status 0", async () => {
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: generateBody("acme", "invoices") });
    expect(f.grpcStatus).toBe(0);
    expect(f.contentType).toBe("application/grpc");
    const response = fromBinary(GenerateDataKeyResponseSchema, f.messages[0] ?? Buffer.alloc(0));
    expect(Buffer.from(response.plaintext)).toEqual(Buffer.alloc(32, 0x5a));
    expect(Buffer.from(response.reference).toString()).toBe("ref:acme/invoices");
    expect(response.dekVersion).toBe(7);
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
  });

  it("a domain error keeps its code, message, reason and field", async () => {
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: generateBody("acme", "revoked") });
    expect(f).toMatchObject({ grpcStatus: 9, reason: "KEY_REVOKED", field: "key_id", grpcMessage: "key revoked is revoked: uses refused" });
    expect(f.messages).toEqual([]);
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
  });

  it("an unexpected fault is INTERNAL with a generic message and an error id; the cause stays in the log", async () => {
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: generateBody("acme", "boom") });
    expect(f).toMatchObject({ grpcStatus: 13, grpcMessage: "internal error", reason: "INTERNAL", errorId: true });
    expect(c).toMatchObject({ grpcStatus: 13, grpcMessage: "internal error", reason: "INTERNAL", errorId: true });
    expect(JSON.stringify(f)).not.toContain("hunter2");
    expect(logLines.some((line) => line.includes("hunter2") && line.includes("DataKeyService/GenerateDataKey"))).toBe(true);
  });

  it("no client certificate: UNAUTHENTICATED CREDENTIALS_MISSING, and the implementation is never reached", async () => {
    const before = handedOut.length;
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: generateBody("acme", "k"), cert: null });
    expect(f).toMatchObject({ grpcStatus: 16, reason: "CREDENTIALS_MISSING" });
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
    expect(handedOut.length).toBe(before);
  });

  it("a bearer token instead of a certificate: PERMISSION_DENIED CLIENT_CERTIFICATE_REQUIRED", async () => {
    const request: RawRequest = { method: "GenerateDataKey", body: generateBody("acme", "k"), cert: null, headers: { authorization: "Bearer abc" } };
    const { fast: f, connect: c } = await bothRoutes(request);
    expect(f).toMatchObject({ grpcStatus: 7, reason: "CLIENT_CERTIFICATE_REQUIRED" });
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
  });

  it("a trusted certificate without a SPIFFE id: UNAUTHENTICATED CLIENT_CERTIFICATE_UNTRUSTED", async () => {
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: generateBody("acme", "k"), cert: noSpiffeClient });
    expect(f).toMatchObject({ grpcStatus: 16, reason: "CLIENT_CERTIFICATE_UNTRUSTED" });
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
  });

  it("an invalid request field is INVALID_ARGUMENT naming it (Decrypt)", async () => {
    const body = envelope(toBinary(DecryptRequestSchema, create(DecryptRequestSchema, { tenantId: "acme", keyId: "k" })));
    const { fast: f, connect: c } = await bothRoutes({ method: "Decrypt", body });
    expect(f).toMatchObject({ grpcStatus: 3, reason: "INVALID_FIELD", field: "reference" });
    expect({ ...f, contentType: undefined }).toEqual({ ...c, contentType: undefined });
  });

  it("a message over the size limit is RESOURCE_EXHAUSTED, and nothing is served", async () => {
    const before = handedOut.length;
    const big = generateBody("acme", "k".repeat(MAX_BODY + 10));
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: big });
    expect(f.grpcStatus).toBe(8);
    expect(c.grpcStatus).toBe(8);
    expect(f.grpcMessage).toContain(`readMaxBytes ${MAX_BODY}`);
    expect(handedOut.length).toBe(before);
  });

  it("bytes that are not the request message are refused with the same code as connect-node", async () => {
    const garbage = envelope(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]));
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: garbage });
    expect(f.grpcStatus).not.toBe(0);
    expect(f.grpcStatus).toBe(c.grpcStatus);
  });

  it("a compressed frame without grpc-encoding is refused with the same code as connect-node", async () => {
    const compressed = envelope(toBinary(GenerateDataKeyRequestSchema, create(GenerateDataKeyRequestSchema, { tenantId: "acme", keyId: "k" })), 1);
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: compressed });
    expect(f.grpcStatus).not.toBe(0);
    expect(f.grpcStatus).toBe(c.grpcStatus);
  });

  it("two messages on a unary call are refused with the same code as connect-node", async () => {
    const twice = Buffer.concat([generateBody("acme", "k"), generateBody("acme", "k")]);
    const { fast: f, connect: c } = await bothRoutes({ method: "GenerateDataKey", body: twice });
    expect(f.grpcStatus).not.toBe(0);
    expect(f.grpcStatus).toBe(c.grpcStatus);
  });

  // One deliberate difference: connect-node aborts the handler's signal at the deadline but still sends
  // what a handler that ignores it returns late; the fast path answers DEADLINE_EXCEEDED at the deadline,
  // so a DEK is never sent to a caller that has given up on it.
  it("a deadline that passes while the implementation works is DEADLINE_EXCEEDED at the deadline, with no message", async () => {
    const request: RawRequest = { method: "GenerateDataKey", body: generateBody("acme", "slow"), headers: { "grpc-timeout": "200m" } };
    const slowBefore = slowCallsFinished;
    const f = await call(fast, request);
    expect(f).toMatchObject({ grpcStatus: 4, messages: [] });
    expect(slowCallsFinished).toBe(slowBefore); // answered while the implementation was still at work
  });

  it("the implementation's context carries request headers, deadline, method and protocol; trailers it sets are sent", async () => {
    const request: RawRequest = { method: "GenerateDataKey", body: generateBody("acme", "headers"), headers: { "x-tag": "t-42", "grpc-timeout": "5S" } };
    const { fast: f, connect: c } = await bothRoutes(request);
    const expected = {
      "x-served-by": "stub",
      "x-seen-tag": "t-42",
      "x-deadline-set": "true",
      "x-procedure": "matih.kms.v1.DataKeyService/GenerateDataKey grpc POST",
    };
    expect(f.extraTrailers).toEqual(expected);
    expect(c.extraTrailers).toEqual(expected);
  });
});

describe("what the fast path takes and what it leaves to connect-node", () => {
  it("serves plain gRPC itself: the plaintext it was handed is wiped once encoded, and the handler's signal fires at the end", async () => {
    const at = handedOut.length;
    const signalsAt = signals.length;
    const outcome = await call(fast, { method: "GenerateDataKey", body: generateBody("acme", "wiped") });
    expect(outcome.grpcStatus).toBe(0);
    const response = fromBinary(GenerateDataKeyResponseSchema, outcome.messages[0] ?? Buffer.alloc(0));
    expect(Buffer.from(response.plaintext)).toEqual(Buffer.alloc(32, 0x5a));
    expect(handedOut[at]).toEqual(Buffer.alloc(32, 0));
    expect(signals[signalsAt]?.aborted).toBe(true);
  });

  it("leaves a gzip-encoded call to connect-node, which serves it (its buffer is not wiped)", async () => {
    const at = handedOut.length;
    const message = toBinary(GenerateDataKeyRequestSchema, create(GenerateDataKeyRequestSchema, { tenantId: "acme", keyId: "gz" }));
    const outcome = await call(fast, {
      method: "GenerateDataKey",
      body: envelope(gzipSync(message), 1),
      headers: { "grpc-encoding": "gzip", "grpc-accept-encoding": "identity" },
    });
    expect(outcome.grpcStatus).toBe(0);
    expect(handedOut[at]).toEqual(Buffer.alloc(32, 0x5a));
  });

  it("leaves the Connect protocol to connect-node", async () => {
    const at = handedOut.length;
    const outcome = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const session = http2.connect(fast.url, { ca: pki.caCert, cert: pki.client.cert, key: pki.client.key });
      session.on("error", reject);
      const stream = session.request({
        ":method": "POST",
        ":path": "/matih.kms.v1.DataKeyService/GenerateDataKey",
        "content-type": "application/json",
      });
      let status = 0;
      let body = "";
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => (body += chunk));
      stream.on("close", () => {
        session.close();
        resolve({ status, body });
      });
      stream.end(JSON.stringify({ tenantId: "acme", keyId: "json" }));
    });
    expect(outcome.status).toBe(200);
    expect(JSON.parse(outcome.body)).toMatchObject({ dekVersion: 7 });
    expect(handedOut[at]).toEqual(Buffer.alloc(32, 0x5a));
  });

  it("a grpc-timeout longer than a timer can hold sets no deadline (the call is served)", async () => {
    const outcome = await call(fast, { method: "GenerateDataKey", body: generateBody("acme", "far"), headers: { "grpc-timeout": "99999999H" } });
    expect(outcome.grpcStatus).toBe(0);
  });

  it("after answering at a deadline, a drain still waits for the implementation, whose late DEK is wiped", async () => {
    const server = await createKmsServer({
      services: { keyManagement: {}, dataKey },
      tls: pki.serverTls,
      port: 0,
      logger: createJsonLinesLogger({ write: () => undefined }),
    });
    const outcome = await call(server, { method: "GenerateDataKey", body: generateBody("acme", "slow-drain"), headers: { "grpc-timeout": "100m" } });
    expect(outcome.grpcStatus).toBe(4);
    expect(slowFinished.has("slow-drain")).toBe(false);
    const handedBefore = handedOut.length;
    await server.close(5_000);
    expect(slowFinished.has("slow-drain")).toBe(true);
    // The implementation handed its DEK over after the answer had left: wiped, never sent.
    const late = handedOut.slice(handedBefore);
    expect(late.length).toBeGreaterThan(0);
    for (const plaintext of late) expect(plaintext).toEqual(Buffer.alloc(32, 0));
  });

  it("refuses a call with UNAVAILABLE SHUTTING_DOWN while the server drains, before the implementation runs", async () => {
    const before = handedOut.length;
    const tryServe = createGrpcFastPath({
      services: { keyManagement: {}, dataKey },
      authenticator: createAuthenticator(),
      log: createJsonLinesLogger({ write: () => undefined }),
      maxBodyBytes: MAX_BODY,
      isDraining: () => true,
      shutdownSignal: new AbortController().signal,
    });
    let served = false;
    const server = http2.createSecureServer({ ...pki.serverTls, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      served = tryServe(req, res) !== undefined;
      if (!served) res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const outcome = await call({ url: `https://localhost:${port}` } as KmsServer, { method: "GenerateDataKey", body: generateBody("acme", "k") });
      expect(served).toBe(true);
      expect(outcome).toMatchObject({ grpcStatus: 14, reason: "SHUTTING_DOWN" });
      expect(handedOut.length).toBe(before);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

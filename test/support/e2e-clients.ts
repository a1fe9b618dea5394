/**
 * Clients for the end-to-end tests: they talk to a real listening matih-kms
 * over its socket, the way callers outside the process do.
 *
 * - `restCall`: one REST/JSON call over HTTP/2 (or HTTP/1.1), with a bearer
 *   token and/or a client certificate, bounded by a timeout;
 * - `connectGrpcTransport`: the Connect gRPC transport (HTTP/2, mTLS);
 * - `loadGrpcJsPackage` / `grpcJsCall`: a plain @grpc/grpc-js client built
 *   from the .proto files by @grpc/proto-loader, and `grpcJsErrorDetail` to
 *   read the ErrorDetail the server puts in `grpc-status-details-bin`;
 * - `createCapturingLogger`: the server's JSON-lines logger, kept in memory.
 */
import * as http2 from "node:http2";
import * as https from "node:https";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ErrorDetailSchema, ErrorReason } from "../../gen/matih/kms/v1/errors_pb.js";
import { createJsonLinesLogger, type Logger } from "../../server/src/api/logger.js";
import type { Database } from "../../server/src/storage/database.js";
import type { Kysely } from "kysely";

/** The repository root (where `proto/` and `node_modules/` are). */
export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** A client certificate and its private key, PEM. */
export interface TlsIdentity {
  readonly cert: string;
  readonly key: string;
}

/** Where a server listens and the CA its certificate chains to. */
export interface Endpoint {
  /** "https://127.0.0.1:port" */
  readonly url: string;
  readonly ca: string;
}

export interface RestCall {
  readonly method: "GET" | "POST" | "DELETE" | "PUT" | "PATCH";
  readonly path: string;
  /** Sent as JSON (JSON.stringify). */
  readonly json?: unknown;
  /** Sent as is (for malformed bodies); `content-type: application/json`. */
  readonly body?: string | Buffer;
  readonly token?: string;
  readonly cert?: TlsIdentity;
  readonly headers?: Readonly<Record<string, string>>;
  /** HTTP/1.1 instead of HTTP/2. */
  readonly http1?: boolean;
  /** Default 20 s. */
  readonly timeoutMs?: number;
}

export interface RestResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
  /** The parsed body; undefined when it is not JSON. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
  /** When the response ended (Date.now()). */
  readonly completedAt: number;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function bodyOf(call: RestCall): Buffer | undefined {
  if (call.json !== undefined) return Buffer.from(JSON.stringify(call.json));
  if (call.body !== undefined) return Buffer.from(call.body);
  return undefined;
}

function requestHeaders(call: RestCall, body: Buffer | undefined): Record<string, string> {
  const headers: Record<string, string> = { ...call.headers };
  if (call.token !== undefined) headers["authorization"] = `Bearer ${call.token}`;
  if (body !== undefined) {
    headers["content-type"] ??= "application/json";
    headers["content-length"] = String(body.length);
  }
  return headers;
}

/** One REST call on a connection of its own. Rejects only on transport failure or timeout. */
export function restCall(endpoint: Endpoint, call: RestCall): Promise<RestResult> {
  return call.http1 === true ? restCallHttp1(endpoint, call) : restCallHttp2(endpoint, call);
}

function restCallHttp2(endpoint: Endpoint, call: RestCall): Promise<RestResult> {
  return new Promise((resolve, reject) => {
    const body = bodyOf(call);
    const session = http2.connect(endpoint.url, {
      ca: endpoint.ca,
      ...(call.cert === undefined ? {} : { cert: call.cert.cert, key: call.cert.key }),
    });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`REST ${call.method} ${call.path}: no response within ${call.timeoutMs ?? 20_000} ms`));
    }, call.timeoutMs ?? 20_000);
    session.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const stream = session.request({ ":method": call.method, ":path": call.path, ...requestHeaders(call, body) }, { endStream: body === undefined });
    let status = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = h as Record<string, string | string[] | undefined>;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {}); // a reset after a complete response (e.g. 413 before the body was read) is fine
    stream.on("close", () => {
      clearTimeout(timer);
      session.close();
      const text = Buffer.concat(chunks).toString("utf8");
      if (status === 0) reject(new Error(`REST ${call.method} ${call.path}: the stream closed without a response`));
      else resolve({ status, headers, text, json: parseJson(text), completedAt: Date.now() });
    });
    if (body !== undefined) stream.end(body);
  });
}

function restCallHttp1(endpoint: Endpoint, call: RestCall): Promise<RestResult> {
  return new Promise((resolve, reject) => {
    const body = bodyOf(call);
    const url = new URL(endpoint.url);
    const req = https.request({
      host: url.hostname,
      port: url.port,
      method: call.method,
      path: call.path,
      headers: requestHeaders(call, body),
      ca: endpoint.ca,
      ...(call.cert === undefined ? {} : { cert: call.cert.cert, key: call.cert.key }),
      agent: false,
      timeout: call.timeoutMs ?? 20_000,
    });
    req.on("timeout", () => req.destroy(new Error(`REST ${call.method} ${call.path}: no response within ${call.timeoutMs ?? 20_000} ms`)));
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: parseJson(text), completedAt: Date.now() });
      });
    });
    req.end(body);
  });
}

/** The Connect gRPC transport over HTTP/2, with a client certificate when given. */
export function connectGrpcTransport(endpoint: Endpoint, cert: TlsIdentity | undefined) {
  return createGrpcTransport({
    baseUrl: endpoint.url,
    nodeOptions: { ca: endpoint.ca, ...(cert === undefined ? {} : { cert: cert.cert, key: cert.key }) },
    defaultTimeoutMs: 20_000,
  });
}

/** The proto3 JSON / Connect name of a code: Code.NotFound → "not_found". */
export function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}

/** What a refused Connect call said: code, reason name (as REST spells it), message, field. */
export function connectRefusal(error: unknown): { code: string; reason: string | undefined; message: string; field: string | undefined } {
  if (!(error instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(error)}`);
  const detail = error.findDetails(ErrorDetailSchema)[0];
  return {
    code: codeName(error.code),
    reason: detail === undefined ? undefined : `ERROR_REASON_${ErrorReason[detail.reason]}`,
    message: error.rawMessage,
    field: detail?.field === "" ? undefined : detail?.field,
  };
}

/** Awaits a call that must be refused and returns its ConnectError. */
export async function refusalOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    if (error instanceof ConnectError) return error;
    throw error;
  }
  throw new Error("the call succeeded but should have been refused");
}

// ---------------------------------------------------------------------------
// @grpc/grpc-js with @grpc/proto-loader
// ---------------------------------------------------------------------------

export const GRPC_JS_SERVICES = ["DataKeyService", "KeyManagementService"] as const;
export type GrpcJsServiceName = (typeof GRPC_JS_SERVICES)[number];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type GrpcJsPackage = any;

/** The matih.kms.v1 package as grpc-js sees it, loaded from proto/ at run time. */
export function loadGrpcJsPackage(): GrpcJsPackage {
  const definition = protoLoader.loadSync(["matih/kms/v1/data_key_service.proto", "matih/kms/v1/key_management_service.proto"], {
    includeDirs: [join(repoRoot, "proto"), join(repoRoot, "node_modules/google-proto-files")],
    longs: String,
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition);
}

export interface GrpcJsOutcome {
  readonly err: grpc.ServiceError | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly res: any;
}

/** One unary call with a fresh grpc-js client, closed afterwards; bounded by a deadline. */
export function grpcJsCall(
  pkg: GrpcJsPackage,
  endpoint: Endpoint,
  cert: TlsIdentity | undefined,
  service: GrpcJsServiceName,
  method: string,
  request: object,
): Promise<GrpcJsOutcome> {
  const url = new URL(endpoint.url);
  const credentials =
    cert === undefined
      ? grpc.credentials.createSsl(Buffer.from(endpoint.ca))
      : grpc.credentials.createSsl(Buffer.from(endpoint.ca), Buffer.from(cert.key), Buffer.from(cert.cert));
  return new Promise((resolve) => {
    const client = new pkg.matih.kms.v1[service](`${url.hostname}:${url.port}`, credentials);
    client[method](request, { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, res: unknown) => {
      client.close();
      resolve({ err, res });
    });
  });
}

/**
 * The reason and field a grpc-js client receives: the server sends an
 * ErrorDetail in the standard `grpc-status-details-bin` trailer, which any
 * gRPC client can decode; here Connect's own trailer parser does it.
 */
export function grpcJsErrorDetail(err: grpc.ServiceError): { reason: string | undefined; field: string | undefined; message: string } {
  const trailers = new Headers({ "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.details) });
  const bin = err.metadata.get("grpc-status-details-bin")[0];
  if (bin !== undefined) trailers.set("grpc-status-details-bin", Buffer.from(bin).toString("base64"));
  const parsed = findTrailerError(trailers);
  const detail = parsed?.findDetails(ErrorDetailSchema)[0];
  return {
    reason: detail === undefined ? undefined : `ERROR_REASON_${ErrorReason[detail.reason]}`,
    field: detail?.field === "" ? undefined : detail?.field,
    message: err.details,
  };
}

// ---------------------------------------------------------------------------
// Server-side observation
// ---------------------------------------------------------------------------

/** The server's JSON-lines logger, writing to an array the test reads. */
export function createCapturingLogger(): { readonly logger: Logger; readonly lines: string[] } {
  const lines: string[] = [];
  return { logger: createJsonLinesLogger({ write: (line) => void lines.push(line) }), lines };
}

export const KMS_TABLES = ["tenants", "keys", "kek_versions", "dek_versions"] as const;
export type RowCounts = Record<(typeof KMS_TABLES)[number], number>;

/** How many rows each table of the KMS holds. */
export async function countRows(db: Kysely<Database>): Promise<RowCounts> {
  const counts = await Promise.all(
    KMS_TABLES.map(async (table) => Number((await db.selectFrom(table).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n)),
  );
  return Object.fromEntries(KMS_TABLES.map((table, i) => [table, counts[i]])) as RowCounts;
}

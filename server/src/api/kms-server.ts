import { X509Certificate } from "node:crypto";
import * as http2 from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { SecureContextOptions, TLSSocket } from "node:tls";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { DataKeyService } from "../../../gen/matih/kms/v1/data_key_service_pb.js";
import { KeyManagementService } from "../../../gen/matih/kms/v1/key_management_service_pb.js";
import { AdminService } from "../../../gen/matih/kms/v1/admin_service_pb.js";
import { DatasetService } from "../../../gen/matih/kms/v1/dataset_service_pb.js";
import { KeyEventService } from "../../../gen/matih/kms/v1/key_event_service_pb.js";
import { KmsError } from "../domain/kms-error.js";
import { authenticationContextValues, createAuthenticator } from "./authentication.js";
import { toConnectError } from "./error-mapping.js";
import { createGrpcFastPath } from "./grpc-fast-path.js";
import { useSpecGrpcMessageEncoding } from "./grpc-message-encoding.js";
import { createJwtVerifier, type JwtVerifierOptions } from "./jwt-verifier.js";
import { createJsonLinesLogger, type Logger } from "./logger.js";
import { singleHeader } from "./node-headers.js";
import { DEFAULT_MAX_BODY_BYTES } from "./request-body.js";
import { createRestTranscoder, type NodeRequest, type NodeResponse } from "./rest-transcoder.js";
import { createRpcGuard } from "./rpc-guard.js";
import { bindService } from "./service-binding.js";
import { tlsPeerOf, tlsSocketOf } from "./tls-peer.js";

/** PEM-encoded TLS material. `ca` is what client certificates must chain to. */
export interface KmsServerTls {
  readonly key: string | Buffer;
  readonly cert: string | Buffer;
  readonly ca: string | Buffer;
}

export interface KmsServerAuthOptions {
  /** Bearer JWTs on REST routes. Without it, REST accepts client certificates only. */
  readonly jwt?: JwtVerifierOptions;
  /** Accepted SPIFFE trust domains ("matih.local"); absent or empty: any id from the CA. */
  readonly spiffeTrustDomains?: readonly string[];
}

/**
 * The service implementations; the same objects serve gRPC, gRPC-Web, Connect
 * and REST. A method an implementation lacks answers Unimplemented (501 over
 * REST); a service left out is not routed at all.
 */
export interface KmsServerServices {
  readonly keyManagement: Partial<ServiceImpl<typeof KeyManagementService>>;
  readonly dataKey: Partial<ServiceImpl<typeof DataKeyService>>;
  readonly dataset?: Partial<ServiceImpl<typeof DatasetService>>;
  readonly keyEvents?: Partial<ServiceImpl<typeof KeyEventService>>;
  readonly admin?: Partial<ServiceImpl<typeof AdminService>>;
}

export interface KmsServerOptions {
  readonly services: KmsServerServices;
  readonly tls: KmsServerTls;
  readonly auth?: KmsServerAuthOptions;
  /** TCP port; 0 picks a free one. Default 8443. */
  readonly port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  readonly host?: string;
  /** Limit for a REST body and for one RPC message, in bytes. Default 64 KiB. */
  readonly maxBodyBytes?: number;
  /** Default: JSON lines on stdout. */
  readonly logger?: Logger;
  /**
   * Serve unary gRPC calls of DataKeyService (the hot path) with the server's
   * own handler instead of connect-node (grpc-fast-path.ts). Default true;
   * false routes them through connect-node like every other call (tests
   * compare the two).
   */
  readonly grpcFastPath?: boolean;
}

export interface KmsServerRoute {
  readonly httpMethod: string;
  readonly path: string;
  /** "matih.kms.v1.DataKeyService/Decrypt" */
  readonly procedure: string;
}

export interface KmsServer {
  /** "https://127.0.0.1:8443" */
  readonly url: string;
  readonly port: number;
  readonly host: string;
  /** The REST routes read from the annotations (for start-up messages and docs). */
  readonly routes: readonly KmsServerRoute[];
  /** True from the moment `close` is called. */
  isDraining(): boolean;
  /**
   * Swaps certificate, key and CA for new connections (certificates rotate
   * every 90 days); open connections keep theirs. Throws, keeping the old
   * material, when the new material is unusable (e.g. key and cert differ).
   */
  reloadTls(tls: KmsServerTls): void;
  /**
   * Drains and stops: stops accepting connections, answers `/healthz` with
   * 503, refuses new calls with SHUTTING_DOWN, lets in-flight calls finish for
   * up to `graceMs` (default 10 s), then aborts what is left (handlers see
   * their `ctx.signal` abort) and closes every connection. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

export const DEFAULT_PORT = 8443;
export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_GRACE_MS = 10_000;
export const HEALTH_PATH = "/healthz";

function secureContextOptions(tls: KmsServerTls): SecureContextOptions {
  return { key: tls.key, cert: tls.cert, ca: tls.ca, minVersion: "TLSv1.2" };
}

/**
 * One TLS listener (HTTP/2 and HTTP/1.1) serving gRPC, gRPC-Web and Connect
 * (RPC routes: trusted client certificate required), REST/JSON transcoded from
 * the proto annotations (certificate or bearer token), and `GET /healthz`
 * (no credentials). Client certificates are requested but not enforced by the
 * handshake (`rejectUnauthorized: false`), so a refusal reaches the client as
 * a proper Unauthenticated / 401 with a reason instead of a TLS alert.
 */
export async function createKmsServer(options: KmsServerOptions): Promise<KmsServer> {
  const log = options.logger ?? createJsonLinesLogger({ component: "api" });
  const host = options.host ?? DEFAULT_HOST;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const verifyToken = options.auth?.jwt === undefined ? undefined : await createJwtVerifier(options.auth.jwt);
  const authenticator = createAuthenticator({
    ...(verifyToken === undefined ? {} : { verifyToken }),
    ...(options.auth?.spiffeTrustDomains === undefined ? {} : { trustDomains: options.auth.spiffeTrustDomains }),
  });

  let draining = false;
  const isDraining = (): boolean => draining;
  const shutdown = new AbortController();

  const { services } = options;
  const bindings = [
    bindService(KeyManagementService, services.keyManagement),
    bindService(DataKeyService, services.dataKey),
    ...(services.dataset === undefined ? [] : [bindService(DatasetService, services.dataset)]),
    ...(services.keyEvents === undefined ? [] : [bindService(KeyEventService, services.keyEvents)]),
    ...(services.admin === undefined ? [] : [bindService(AdminService, services.admin)]),
  ];
  const transcoder = createRestTranscoder({
    services: bindings,
    authenticator,
    log,
    maxBodyBytes,
    isDraining,
    shutdownSignal: shutdown.signal,
  });
  const rpcHandler = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      for (const binding of bindings) binding.register(router);
    },
    fallback: transcoder,
    contextValues: (req) =>
      authenticationContextValues(
        { channel: "rpc", peer: tlsPeerOf(tlsSocketOf(req)), authorization: singleHeader(req.headers, "authorization") },
        authenticator,
      ),
    interceptors: [createRpcGuard({ log, isDraining })],
    shutdownSignal: shutdown.signal,
    readMaxBytes: maxBodyBytes,
    jsonOptions: { ignoreUnknownFields: false },
  });

  const fastPath =
    options.grpcFastPath === false
      ? undefined
      : createGrpcFastPath({ services, authenticator, log, maxBodyBytes, isDraining, shutdownSignal: shutdown.signal });

  // In-flight bookkeeping for draining.
  let inFlight = 0;
  let idleWaiter: (() => void) | undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  const http1Sockets = new Map<Socket, number>();
  const http1Responses = new Set<NodeResponse>();
  /** Every TCP connection, including those still in the TLS handshake. */
  const connections = new Set<Socket>();

  const onRequest = (req: NodeRequest, res: NodeResponse): void => {
    inFlight++;
    const http1Socket = req.httpVersionMajor === 1 ? (req.socket as Socket) : undefined;
    if (http1Socket !== undefined) {
      http1Sockets.set(http1Socket, (http1Sockets.get(http1Socket) ?? 0) + 1);
      http1Responses.add(res);
      if (draining) res.setHeader("connection", "close");
    }
    res.once("close", () => {
      inFlight--;
      if (http1Socket !== undefined) {
        http1Responses.delete(res);
        const busy = http1Sockets.get(http1Socket);
        if (busy !== undefined) {
          http1Sockets.set(http1Socket, busy - 1);
          if (draining && busy - 1 === 0) http1Socket.end();
        }
      }
      if (inFlight === 0) idleWaiter?.();
    });
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path === HEALTH_PATH) {
      serveHealth(req, res, draining);
      return;
    }
    const fastCall = fastPath?.(req, res);
    if (fastCall !== undefined) {
      // Counted until the implementation returns, not just until the answer left (a deadline answers
      // early): a drain must not close the database under a running call.
      inFlight++;
      const done = (): void => {
        inFlight--;
        if (inFlight === 0) idleWaiter?.();
      };
      fastCall.then(done, done);
      return;
    }
    useSpecGrpcMessageEncoding(singleHeader(req.headers, "content-type"), res);
    rpcHandler(req, res);
  };

  const server = http2.createSecureServer(
    { ...secureContextOptions(options.tls), requestCert: true, rejectUnauthorized: false, allowHTTP1: true },
    onRequest,
  );
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (draining) session.close();
  });
  server.on("connection", (socket: Socket) => {
    connections.add(socket);
    socket.once("close", () => connections.delete(socket));
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    if (socket.alpnProtocol === "h2") return;
    http1Sockets.set(socket, 0);
    socket.once("close", () => http1Sockets.delete(socket));
    if (draining) socket.end(); // finished its handshake after close() began
  });
  server.on("tlsClientError", (err: Error & { code?: string }) => {
    log.warn("TLS handshake failed", { code: err.code ?? err.message });
  });
  server.on("sessionError", (err: Error) => log.warn("HTTP/2 session error", { err }));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? DEFAULT_PORT, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (err: Error) => log.error("server error", { err }));
  const port = (server.address() as AddressInfo).port;
  const url = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  const routes: KmsServerRoute[] = transcoder.routes.map((r) => ({
    httpMethod: r.httpMethod,
    path: r.template.source,
    procedure: `${r.binding.service.typeName}/${r.method.name}`,
  }));
  log.info("kms server listening", { url, rest_routes: routes.length, max_body_bytes: maxBodyBytes });

  let closing: Promise<void> | undefined;
  async function drainAndClose(graceMs: number): Promise<void> {
    draining = true;
    const deadline = Date.now() + graceMs;
    log.info("draining", { in_flight: inFlight, grace_ms: graceMs });
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const session of sessions) session.close(); // GOAWAY: open streams finish, no new ones
    for (const res of http1Responses) if (!res.headersSent) res.setHeader("connection", "close");
    for (const [socket, busy] of http1Sockets) if (busy === 0) socket.end();

    const drained = await new Promise<boolean>((resolve) => {
      if (inFlight === 0) {
        resolve(true);
        return;
      }
      const timer = setTimeout(() => resolve(false), graceMs);
      idleWaiter = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
    if (!drained) {
      log.warn("grace period over; aborting in-flight calls", { in_flight: inFlight });
      shutdown.abort(toConnectError(new KmsError("SHUTTING_DOWN", "the server is shutting down"), log));
      await delay(50); // let aborted handlers write their error responses
    }
    // Give connections a moment to close on their own (GOAWAY flushed, "Connection: close" honoured).
    await Promise.race([closed, delay(Math.max(100, Math.min(deadline - Date.now(), 2_000)))]);
    for (const session of sessions) session.destroy();
    for (const socket of connections) socket.destroy();
    await closed;
    log.info("kms server stopped", { drained });
  }

  return {
    url,
    port,
    host,
    routes,
    isDraining,
    reloadTls(tls: KmsServerTls): void {
      server.setSecureContext(secureContextOptions(tls));
      const cert = new X509Certificate(tls.cert);
      log.info("TLS material reloaded", { subject: cert.subject, valid_to: cert.validTo, fingerprint256: cert.fingerprint256 });
    },
    close(graceMs = DEFAULT_GRACE_MS): Promise<void> {
      closing ??= drainAndClose(graceMs);
      return closing;
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function serveHealth(req: NodeRequest, res: NodeResponse, draining: boolean): void {
  const method = (req.method ?? "GET").toUpperCase();
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  if (method !== "GET" && method !== "HEAD") {
    res.statusCode = 405;
    res.setHeader("allow", "GET, HEAD");
    res.end(JSON.stringify({ status: "method_not_allowed" }));
    return;
  }
  res.statusCode = draining ? 503 : 200;
  if (method === "HEAD") res.end();
  else res.end(JSON.stringify({ status: draining ? "draining" : "ok" }));
}

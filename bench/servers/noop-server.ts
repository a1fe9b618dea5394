/**
 * A server child answering DataKeyService calls with a constant response,
 * without touching storage. `--kind` picks the stack:
 *
 * - own:           the project's createKmsServer (connect-node on
 *                  http2.createSecureServer, TLS + mTLS, the RPC guard and the
 *                  tenant check), with stub implementations. Phase (c).
 * - grpc-js:       a plain @grpc/grpc-js server with mTLS, protos loaded with
 *                  @grpc/proto-loader. Phase (d).
 * - connect-plain: connectNodeAdapter alone (no interceptor, no context
 *                  values, no REST fallback, no drain bookkeeping) on the same
 *                  kind of TLS server: what connect-node itself costs.
 * - http2-compat:  hand-framed gRPC on Node's http2 compatibility API
 *                  (req/res, what connect-node is given): the floor under it.
 * - http2-stream:  hand-framed gRPC on Node's http2 stream API (what grpc-js
 *                  uses): the floor of Node's HTTP/2 + TLS.
 *
 * The last three exist only to find where the time goes (`--breakdown`).
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { DataKeyService, GenerateDataKeyResponseSchema } from "../../gen/matih/kms/v1/data_key_service_pb.js";
import { KeyManagementService } from "../../gen/matih/kms/v1/key_management_service_pb.js";
import { createKmsServer } from "../../server/src/api/kms-server.js";
import { createJsonLinesLogger } from "../../server/src/api/logger.js";
import { guardTenantCall } from "../../server/src/api/services/tenant-call.js";
import { loadDataKeyServiceDefinition } from "../lib/protos.js";
import { readPki, type PkiFiles } from "../lib/pki.js";
import {
  announceReady,
  argValue,
  NOOP_PLAINTEXT,
  NOOP_REFERENCE,
  freshNoopDecryptResponse,
  freshNoopGenerateDataKeyResponse,
  noopDecryptResponse,
  noopGenerateDataKeyResponse,
  stopOnSignal,
} from "./child-support.js";

type Kind = "own" | "grpc-js" | "connect-plain" | "http2-compat" | "http2-stream";
const KINDS: readonly Kind[] = ["own", "grpc-js", "connect-plain", "http2-compat", "http2-stream"];

const kind = argValue("kind") as Kind | undefined;
const tlsDir = argValue("tls-dir");
if (kind === undefined || !KINDS.includes(kind) || tlsDir === undefined) {
  throw new Error(`usage: noop-server.ts --kind ${KINDS.join("|")} --tls-dir <dir>`);
}
const pki = await readPki(tlsDir);

switch (kind) {
  case "own":
    await startOwn(pki);
    break;
  case "grpc-js":
    await startGrpcJs(pki);
    break;
  case "connect-plain":
    await startConnectPlain(pki);
    break;
  case "http2-compat":
    await startHttp2Compat(pki);
    break;
  case "http2-stream":
    await startHttp2Stream(pki);
    break;
}

async function startOwn(pki: PkiFiles): Promise<void> {
  const unimplemented = () => {
    throw new ConnectError("not part of the benchmark", Code.Unimplemented);
  };
  const keyManagement: Partial<ServiceImpl<typeof KeyManagementService>> = {
    listKeys: unimplemented,
    createKey: unimplemented,
    getKey: unimplemented,
    rotateKey: unimplemented,
    revokeKey: unimplemented,
    getEncryptionStatus: unimplemented,
  };
  // The same tenant check the real implementation makes, then a constant.
  const dataKey: ServiceImpl<typeof DataKeyService> = {
    generateDataKey: (req, ctx) => guardTenantCall(ctx, req.tenantId, async () => freshNoopGenerateDataKeyResponse()),
    decrypt: (req, ctx) => guardTenantCall(ctx, req.tenantId, async () => freshNoopDecryptResponse()),
  };
  const server = await createKmsServer({
    services: { keyManagement, dataKey },
    tls: { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca },
    auth: {},
    port: 0,
    host: "127.0.0.1",
    // As in production: JSON lines on stdout (the orchestrator sends stdout to a file).
    logger: createJsonLinesLogger({ component: "api" }),
  });
  stopOnSignal(() => server.close(1_000));
  announceReady(server.port, "createKmsServer (connect-node, TLS+mTLS, RPC guard, tenant check) with constant stub implementations");
}

async function startGrpcJs(pki: PkiFiles): Promise<void> {
  const server = new grpc.Server();
  const generateResponse = { plaintext: NOOP_PLAINTEXT, reference: NOOP_REFERENCE, dekVersion: 1 };
  const decryptResponse = { plaintext: NOOP_PLAINTEXT, dekVersion: 1 };
  server.addService(loadDataKeyServiceDefinition(), {
    generateDataKey: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      callback(null, generateResponse),
    decrypt: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, decryptResponse),
  });
  const credentials = grpc.ServerCredentials.createSsl(pki.ca, [{ private_key: pki.serverKey, cert_chain: pki.serverCert }], true);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  stopOnSignal(
    () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      }),
  );
  announceReady(port, "@grpc/grpc-js server, mTLS (client certificate checked in the handshake), protos via @grpc/proto-loader");
}

function secureServerOptions(pki: PkiFiles): http2.SecureServerOptions {
  return { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca, requestCert: true, rejectUnauthorized: true, allowHTTP1: true };
}

async function listen(server: http2.Http2SecureServer, description: string): Promise<void> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  stopOnSignal(async () => {
    for (const session of sessions) session.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  announceReady((server.address() as AddressInfo).port, description);
}

async function startConnectPlain(pki: PkiFiles): Promise<void> {
  const handler = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      router.service(DataKeyService, {
        generateDataKey: () => noopGenerateDataKeyResponse,
        decrypt: () => noopDecryptResponse,
      });
    },
  });
  await listen(http2.createSecureServer(secureServerOptions(pki), handler), "connectNodeAdapter only, on http2.createSecureServer (mTLS)");
}

/** The gRPC message frame of the constant answer: flag 0, length, protobuf bytes. */
function grpcFrame(): Buffer {
  const body = toBinary(GenerateDataKeyResponseSchema, noopGenerateDataKeyResponse);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  return frame;
}

async function startHttp2Compat(pki: PkiFiles): Promise<void> {
  const frame = grpcFrame();
  const server = http2.createSecureServer(secureServerOptions(pki), (req, res) => {
    req.on("data", () => {});
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/grpc+proto" });
      res.addTrailers({ "grpc-status": "0", "grpc-message": "" });
      res.end(frame);
    });
  });
  await listen(server, "hand-framed gRPC on the http2 compatibility API (req/res), mTLS");
}

async function startHttp2Stream(pki: PkiFiles): Promise<void> {
  const frame = grpcFrame();
  const server = http2.createSecureServer(secureServerOptions(pki));
  server.on("stream", (stream) => {
    stream.on("data", () => {});
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "" }));
      stream.end(frame);
    });
  });
  await listen(server, "hand-framed gRPC on the http2 stream API (as grpc-js does), mTLS");
}

/**
 * Prototypes of the two ways proposed to serve the hot path more cheaply
 * than connect-node, both calling the very same DataKeyService
 * implementation object (createDataKeyService over the running KMS's
 * context), so only the transport differs:
 *
 * - a @grpc/grpc-js listener on a second port (mTLS checked in the
 *   handshake, caller = the certificate's SPIFFE URI SAN);
 * - a hand-written gRPC unary handler for GenerateDataKey and Decrypt on
 *   Node's http2 compatibility API — what createKmsServer's request handler
 *   could do for those two paths before handing everything else to
 *   connect-node. It authenticates exactly as the KMS does (tlsPeerOf +
 *   createAuthenticator: `rejectUnauthorized: false`, refusals as gRPC
 *   statuses).
 *
 * Prototypes for measuring, not production code: errors carry code and
 * message but not the ErrorDetail (grpc-status-details-bin), and the fast
 * path refuses compressed messages and ignores grpc-timeout.
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  DecryptRequestSchema,
  DecryptResponseSchema,
  GenerateDataKeyRequestSchema,
  GenerateDataKeyResponseSchema,
} from "../../gen/matih/kms/v1/data_key_service_pb.js";
import { callerContextValues, createAuthenticator } from "../../server/src/api/authentication.js";
import { toConnectError } from "../../server/src/api/error-mapping.js";
import type { Logger } from "../../server/src/api/logger.js";
import { asPromise } from "../../server/src/service/awaitable.js";
import { createDataKeyService } from "../../server/src/api/services/data-key-service.js";
import { isSpiffeId, parseSubjectAltName, tlsPeerOf, tlsSocketOf } from "../../server/src/api/tls-peer.js";
import type { KmsContext } from "../../server/src/service/kms-context.js";
import { readPki } from "../lib/pki.js";
import { loadDataKeyServiceDefinition } from "../lib/protos.js";

export interface Listener {
  readonly port: number;
  close(): Promise<void>;
}

type Impl = ReturnType<typeof createDataKeyService>;

function callImpl(impl: Impl, method: "generateDataKey" | "decrypt", message: unknown, ctx: HandlerContext): Promise<unknown> {
  // A refusal may be thrown at once (calls served from memory answer without a promise): a rejection either way.
  return asPromise(() =>
    method === "generateDataKey"
      ? impl.generateDataKey!(message as Parameters<NonNullable<Impl["generateDataKey"]>>[0], ctx)
      : impl.decrypt!(message as Parameters<NonNullable<Impl["decrypt"]>>[0], ctx),
  );
}

export async function startGrpcJsListener(context: KmsContext, tlsDir: string, log: Logger): Promise<Listener> {
  const pki = await readPki(tlsDir);
  const impl = createDataKeyService(context);
  const server = new grpc.Server();
  const unary =
    (method: "generateDataKey" | "decrypt") =>
    (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>): void => {
      // The certificate was verified in the handshake; its one SPIFFE URI SAN is the
      // caller. Read on every call: grpc-js has no per-connection hook to cache it.
      const uris = parseSubjectAltName(call.getAuthContext().sslPeerCertificate?.subjectaltname ?? "")
        .filter((name) => name.type === "URI" && name.value.toLowerCase().startsWith("spiffe://"))
        .map((name) => name.value);
      const spiffeId = uris.length === 1 && isSpiffeId(uris[0]!) ? uris[0]! : undefined;
      if (spiffeId === undefined) {
        callback({ code: grpc.status.UNAUTHENTICATED, details: "the client certificate carries no SPIFFE id" });
        return;
      }
      const ctx = { values: callerContextValues({ kind: "service", spiffeId }) } as unknown as HandlerContext;
      const request = call.request as { tenantId: string; keyId: string; reference?: Buffer };
      const message =
        method === "generateDataKey"
          ? { $typeName: "matih.kms.v1.GenerateDataKeyRequest", tenantId: request.tenantId, keyId: request.keyId }
          : { $typeName: "matih.kms.v1.DecryptRequest", tenantId: request.tenantId, keyId: request.keyId, reference: request.reference ?? new Uint8Array() };
      callImpl(impl, method, message, ctx).then(
        (answer) => callback(null, answer),
        (error: unknown) => {
          const mapped = toConnectError(error, log, { procedure: `matih.kms.v1.DataKeyService/${method}` });
          callback({ code: mapped.code as number, details: mapped.rawMessage });
        },
      );
    };
  server.addService(loadDataKeyServiceDefinition(), { generateDataKey: unary("generateDataKey"), decrypt: unary("decrypt") });
  const credentials = grpc.ServerCredentials.createSsl(pki.ca, [{ private_key: pki.serverKey, cert_chain: pki.serverCert }], true);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { port, close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}

const FAST_METHODS: ReadonlyMap<string, { method: "generateDataKey" | "decrypt"; input: DescMessage; output: DescMessage }> = new Map([
  ["/matih.kms.v1.DataKeyService/GenerateDataKey", { method: "generateDataKey", input: GenerateDataKeyRequestSchema, output: GenerateDataKeyResponseSchema }],
  ["/matih.kms.v1.DataKeyService/Decrypt", { method: "decrypt", input: DecryptRequestSchema, output: DecryptResponseSchema }],
]);

export async function startFastPathListener(context: KmsContext, tlsDir: string, log: Logger, maxMessageBytes = 64 * 1024): Promise<Listener> {
  const pki = await readPki(tlsDir);
  const impl = createDataKeyService(context);
  const authenticator = createAuthenticator({});

  const fail = (res: http2.Http2ServerResponse, code: number, message: string): void => {
    // Trailers-only response: status in the headers.
    if (!res.headersSent) {
      res.writeHead(200, { "content-type": "application/grpc+proto", "grpc-status": String(code), "grpc-message": encodeURIComponent(message) });
      res.end();
    }
  };

  const server = http2.createSecureServer(
    { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca, requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2" },
    (req, res) => {
      const route = FAST_METHODS.get(req.url ?? "");
      const contentType = req.headers["content-type"] ?? "";
      if (route === undefined || req.method !== "POST" || !(contentType === "application/grpc" || contentType === "application/grpc+proto")) {
        // In createKmsServer this is where connect-node would take over.
        fail(res, 12, "not served by the fast path");
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size <= maxMessageBytes + 5) chunks.push(chunk);
      });
      req.on("end", () => {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (size > maxMessageBytes + 5) return fail(res, 8, `message larger than ${maxMessageBytes} bytes`);
        if (body.length < 5 || body.readUInt8(0) !== 0 || body.readUInt32BE(1) !== body.length - 5) {
          return fail(res, 3, "expected exactly one uncompressed gRPC message");
        }
        let message: unknown;
        try {
          message = fromBinary(route.input, body.subarray(5));
        } catch {
          return fail(res, 3, "the request message does not decode");
        }
        const peer = tlsPeerOf(tlsSocketOf(req));
        const authorization = req.headers["authorization"];
        authenticator({ channel: "rpc", peer, authorization: typeof authorization === "string" ? authorization : undefined })
          .then((caller) => callImpl(impl, route.method, message, { values: callerContextValues(caller) } as unknown as HandlerContext))
          .then(
            (answer) => {
              const bytes = toBinary(route.output, answer as never);
              const frame = Buffer.allocUnsafe(5 + bytes.length);
              frame.writeUInt8(0, 0);
              frame.writeUInt32BE(bytes.length, 1);
              frame.set(bytes, 5);
              res.writeHead(200, { "content-type": "application/grpc+proto" });
              res.addTrailers({ "grpc-status": "0" });
              res.end(frame);
            },
            (error: unknown) => {
              const mapped = toConnectError(error, log, { procedure: `matih.kms.v1.DataKeyService/${route.method}` });
              fail(res, mapped.code as number, mapped.rawMessage);
            },
          );
      });
    },
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The hot path's own gRPC handler: unary `DataKeyService` calls
 * (GenerateDataKey, Decrypt) over plain gRPC on HTTP/2, served without
 * connect-node's universal handler. connect-node costs about 300 µs of CPU per
 * unary call against about 45 µs for Node's HTTP/2 underneath
 * (docs/decisions/0003-hot-path-performance.md); on the hot path that is most
 * of the budget. Every other protocol (Connect, gRPC-Web, REST) and every
 * other method stays on connect-node.
 *
 * It applies the same rules as the connect-node route, in the same order:
 * size limit, refusal while draining, authentication from the TLS peer,
 * the request's tenant against the caller, the service implementation (which
 * checks the tenant again), and the one error table (`toConnectError`) with
 * the ErrorDetail in `grpc-status-details-bin`. Tests run the same calls
 * through both routes and compare what the client sees.
 *
 * Anything it does not expect (compression, another content type, HTTP/1.1)
 * is left to connect-node: `tryServe` returns false before touching the
 * request.
 */
import type { Http2ServerResponse } from "node:http2";
import { create, type DescMessage, type DescMethodUnary, fromBinary, isMessage, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { DataKeyService } from "../../../gen/matih/kms/v1/data_key_service_pb.js";
import { KmsError } from "../domain/kms-error.js";
import { authenticate, authenticationContextValues, authorizeMessageTenant, type Authenticator } from "./authentication.js";
import { percentEncodeGrpcMessage } from "./grpc-message-encoding.js";
import type { Logger } from "./logger.js";
import { singleHeader } from "./node-headers.js";
import type { NodeRequest, NodeResponse } from "./rest-transcoder.js";
import { refusalToConnectError } from "./rpc-guard.js";
import type { KmsServerServices } from "./kms-server.js";
import { tlsPeerOf, tlsSocketOf } from "./tls-peer.js";

export interface GrpcFastPathOptions {
  readonly services: KmsServerServices;
  readonly authenticator: Authenticator;
  readonly log: Logger;
  readonly maxBodyBytes: number;
  readonly isDraining: () => boolean;
  readonly shutdownSignal: AbortSignal;
}

/**
 * Takes the request and returns the call's completion (which settles once the
 * implementation has returned, even if the answer left earlier at a deadline),
 * or returns undefined, untouched, for connect-node to serve.
 */
export type GrpcFastPath = (req: NodeRequest, res: NodeResponse) => Promise<void> | undefined;

type UnaryImplementation = (request: never, context: HandlerContext) => unknown;

interface FastMethod {
  readonly method: DescMethodUnary;
  readonly implementation: UnaryImplementation;
  readonly procedure: string;
}

const ENVELOPE_HEADER_BYTES = 5;
const COMPRESSED_FLAG = 0b0000_0001;
/** A longer grpc-timeout (up to 8 digits of hours) is accepted; beyond what a timer can hold it sets no deadline. */
const MAX_TIMEOUT_MS = Number.MAX_SAFE_INTEGER;
const MAX_TIMER_MS = 2 ** 31 - 1;
const GRPC_CONTENT_TYPES = new Set(["application/grpc", "application/grpc+proto"]);
/** The response's plaintext DEK is wiped once encoded: implementations hand it over. */
const WIPED_RESPONSE_FIELD = "plaintext";

export function createGrpcFastPath(options: GrpcFastPathOptions): GrpcFastPath {
  const methods = new Map<string, FastMethod>();
  const implementations = options.services.dataKey as Record<string, UnaryImplementation | undefined>;
  for (const method of DataKeyService.methods) {
    const implementation = implementations[method.localName];
    if (method.methodKind !== "unary" || implementation === undefined) continue;
    const procedure = `${DataKeyService.typeName}/${method.name}`;
    methods.set(`/${procedure}`, { method: method as DescMethodUnary, implementation: implementation.bind(implementations), procedure });
  }

  return function tryServe(req, res) {
    if (req.httpVersionMajor !== 2 || req.method !== "POST") return undefined;
    const fast = methods.get(req.url ?? "");
    if (fast === undefined) return undefined;
    const contentType = singleHeader(req.headers, "content-type");
    if (contentType === undefined || !GRPC_CONTENT_TYPES.has(contentType.toLowerCase())) return undefined;
    const encoding = singleHeader(req.headers, "grpc-encoding");
    if (encoding !== undefined && encoding !== "identity") return undefined;
    return serve(options, fast, req, res as Http2ServerResponse);
  };
}

async function serve(options: GrpcFastPathOptions, fast: FastMethod, req: NodeRequest, res: Http2ServerResponse): Promise<void> {
  const { log } = options;
  const call = new FastCall(res, req.url ?? "", fast);
  try {
    const timeout = parseTimeout(singleHeader(req.headers, "grpc-timeout") ?? null, MAX_TIMEOUT_MS);
    if (timeout.error !== undefined) throw timeout.error;
    if (timeout.timeoutMs !== undefined && timeout.timeoutMs <= MAX_TIMER_MS) call.startDeadline(timeout.timeoutMs, log);
    const body = await readBody(req, options.maxBodyBytes);
    const request = fromBinary(fast.method.input, unwrapEnvelope(body, options.maxBodyBytes));
    if (options.isDraining()) throw new KmsError("SHUTTING_DOWN", "the server is shutting down; retry on another instance");
    const values = authenticationContextValues(
      { channel: "rpc", peer: tlsPeerOf(tlsSocketOf(req)), authorization: singleHeader(req.headers, "authorization") },
      options.authenticator,
      createContextValues(),
    );
    const caller = await authenticate({ values });
    authorizeMessageTenant(caller, fast.method.input, request);
    const context = call.handlerContext(req, values, options.shutdownSignal);
    const answer = fast.implementation(request as never, context);
    // An answer served from memory comes at once: no await, no extra turn of the microtask queue.
    call.respond(encodeResponse(fast.method.output, answer instanceof Promise ? await answer : answer));
  } catch (error) {
    call.fail(refusalToConnectError(error, log, fast.procedure));
  } finally {
    call.finish();
  }
}

/** One call's response side: headers, one message, trailers — or a trailers-only error. */
class FastCall {
  readonly #res: Http2ServerResponse;
  readonly #url: string;
  readonly #fast: FastMethod;
  #abort: AbortController | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #deadlineAt: number | undefined;
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;
  #answered = false;

  constructor(res: Http2ServerResponse, url: string, fast: FastMethod) {
    this.#res = res;
    this.#url = url;
    this.#fast = fast;
  }

  startDeadline(timeoutMs: number, log: Logger): void {
    this.#deadlineAt = Date.now() + timeoutMs;
    this.#deadline = setTimeout(() => {
      this.fail(refusalToConnectError(new ConnectError("the operation timed out", Code.DeadlineExceeded), log, this.#fast.procedure));
      this.#abort?.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
    }, timeoutMs);
  }

  /** The implementation's HandlerContext; its header bags are made only if it looks at them. */
  handlerContext(req: NodeRequest, values: ContextValues, shutdownSignal: AbortSignal): HandlerContext {
    return new FastHandlerContext(this, req, values, shutdownSignal);
  }

  /** For FastHandlerContext: the call's abort signal, made on first use. */
  signal(shutdownSignal: AbortSignal): AbortSignal {
    this.#abort ??= linkedAbortController(shutdownSignal);
    return this.#abort.signal;
  }

  get deadlineAt(): number | undefined {
    return this.#deadlineAt;
  }

  get method(): DescMethodUnary {
    return this.#fast.method;
  }

  get url(): string {
    return this.#url;
  }

  get responseHeader(): Headers {
    this.#responseHeader ??= new Headers();
    return this.#responseHeader;
  }

  get responseTrailer(): Headers {
    this.#responseTrailer ??= new Headers();
    return this.#responseTrailer;
  }

  respond(message: Uint8Array): void {
    if (!this.#claim()) {
      message.fill(0); // answered already (deadline) or the caller left: the DEK goes nowhere
      return;
    }
    // Not from the shared pool: this buffer holds a plaintext DEK and is wiped once written out.
    const frame = Buffer.allocUnsafeSlow(ENVELOPE_HEADER_BYTES + message.byteLength);
    frame[0] = 0;
    frame.writeUInt32BE(message.byteLength, 1);
    frame.set(message, ENVELOPE_HEADER_BYTES);
    message.fill(0);
    // The compatibility API always waits for trailers and sends what addTrailers gave it.
    this.#res.writeHead(200, this.#headers({ "content-type": "application/grpc" }));
    this.#res.addTrailers(this.#trailers(undefined));
    this.#res.end(frame, () => frame.fill(0));
  }

  /** Headers, no message, and the error in the trailers. */
  fail(error: ConnectError): void {
    if (!this.#claim()) return;
    // Not trailers-only: the compatibility API cannot end a stream on its headers frame.
    this.#res.writeHead(200, this.#headers({ "content-type": "application/grpc" }));
    this.#res.addTrailers(this.#trailers(error));
    this.#res.end();
  }

  finish(): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    // As connect-node does: the handler's signal fires when the call is over.
    if (this.#abort !== undefined && !this.#abort.signal.aborted) this.#abort.abort();
  }

  #claim(): boolean {
    if (this.#answered) return false;
    this.#answered = true;
    const stream = this.#res.stream;
    return !stream.destroyed && !stream.closed && !this.#res.headersSent;
  }

  #headers(base: Record<string, string | number>): Record<string, string | number | string[]> {
    if (this.#responseHeader === undefined) return base;
    const headers: Record<string, string | number | string[]> = { ...base };
    this.#responseHeader.forEach((value, key) => {
      if (!(key in headers)) headers[key] = value;
    });
    return headers;
  }

  #trailers(error: ConnectError | undefined): Record<string, string> {
    // The common case without a Headers object: they cost more than the rest of the answer.
    if (error === undefined && this.#responseTrailer === undefined) return { "grpc-status": "0" };
    const into: Record<string, string> = {};
    const status = setTrailerStatus(new Headers(this.#responseTrailer), error);
    status.forEach((value, key) => {
      // connect encodes with encodeURIComponent; gRPC clients decode the spec's percent-encoding.
      into[key] = key === "grpc-message" ? percentEncodeGrpcMessage(decodeURIComponent(value)) : value;
    });
    return into;
  }
}

/**
 * connect's HandlerContext for one fast-path call. A class with getters on its
 * prototype: cheap to make per call, unlike an object literal with getters.
 */
class FastHandlerContext implements HandlerContext {
  readonly #call: FastCall;
  readonly #req: NodeRequest;
  readonly #shutdownSignal: AbortSignal;
  #requestHeader: Headers | undefined;
  readonly values: ContextValues;
  readonly service = DataKeyService;
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";

  constructor(call: FastCall, req: NodeRequest, values: ContextValues, shutdownSignal: AbortSignal) {
    this.#call = call;
    this.#req = req;
    this.values = values;
    this.#shutdownSignal = shutdownSignal;
  }

  get method(): DescMethodUnary {
    return this.#call.method;
  }

  get url(): string {
    return this.#call.url;
  }

  get signal(): AbortSignal {
    return this.#call.signal(this.#shutdownSignal);
  }

  readonly timeoutMs = (): number | undefined => {
    const deadlineAt = this.#call.deadlineAt;
    return deadlineAt === undefined ? undefined : deadlineAt - Date.now();
  };

  get requestHeader(): Headers {
    this.#requestHeader ??= headersOf(this.#req.headers);
    return this.#requestHeader;
  }

  get responseHeader(): Headers {
    return this.#call.responseHeader;
  }

  get responseTrailer(): Headers {
    return this.#call.responseTrailer;
  }
}

function readBody(req: NodeRequest, maxBodyBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const limit = maxBodyBytes + ENVELOPE_HEADER_BYTES;
    req.on("data", (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(new ConnectError(`message size is larger than configured readMaxBytes ${maxBodyBytes}`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size)));
    req.once("error", reject);
    req.once("aborted", () => reject(new ConnectError("the client cancelled the call", Code.Canceled)));
  });
}

/** The one message of a unary request, out of its 5-byte gRPC envelope. */
function unwrapEnvelope(body: Buffer, maxBodyBytes: number): Uint8Array {
  if (body.byteLength < ENVELOPE_HEADER_BYTES) {
    throw new ConnectError("protocol error: missing request message for a unary method", Code.Unimplemented);
  }
  const flags = body[0] ?? 0;
  if ((flags & COMPRESSED_FLAG) !== 0) {
    throw new ConnectError("protocol error: received compressed message without grpc-encoding", Code.Internal);
  }
  const length = body.readUInt32BE(1);
  if (length > maxBodyBytes) {
    throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${maxBodyBytes}`, Code.ResourceExhausted);
  }
  const end = ENVELOPE_HEADER_BYTES + length;
  if (body.byteLength < end) throw new ConnectError("protocol error: premature end of request message", Code.InvalidArgument);
  if (body.byteLength > end) throw new ConnectError("protocol error: received extra message for unary method", Code.Unimplemented);
  return body.subarray(ENVELOPE_HEADER_BYTES, end);
}

function encodeResponse(schema: DescMessage, output: unknown): Uint8Array {
  const message = isMessage(output, schema) ? output : create(schema, output as never);
  const encoded = toBinary(schema, message);
  const plaintext = (message as Record<string, unknown>)[WIPED_RESPONSE_FIELD];
  if (plaintext instanceof Uint8Array) plaintext.fill(0);
  return encoded;
}

function headersOf(raw: NodeRequest["headers"]): Headers {
  const headers = new Headers();
  for (const [key, value] of Object.entries(raw)) {
    if (key.startsWith(":") || value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) headers.append(key, item);
  }
  return headers;
}

function linkedAbortController(shutdownSignal: AbortSignal): AbortController {
  const controller = new AbortController();
  if (shutdownSignal.aborted) controller.abort(shutdownSignal.reason);
  else {
    const onShutdown = () => controller.abort(shutdownSignal.reason);
    shutdownSignal.addEventListener("abort", onShutdown, { once: true });
    controller.signal.addEventListener("abort", () => shutdownSignal.removeEventListener("abort", onShutdown), { once: true });
  }
  return controller;
}

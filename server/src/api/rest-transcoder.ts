import type { Http2ServerRequest } from "node:http2";
import { create, getOption, hasOption, toJson, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import { http } from "../../../gen/google/api/annotations_pb.js";
import { KmsError } from "../domain/kms-error.js";
import {
  authenticate,
  authenticationContextValues,
  authorizeMessageTenant,
  type Authenticator,
} from "./authentication.js";
import { errorToJson, type RestErrorBody } from "./error-mapping.js";
import type { Logger } from "./logger.js";
import { headersFromNode, singleHeader } from "./node-headers.js";
import { matchPathTemplate, parsePathTemplate, type PathTemplate } from "./path-template.js";
import { DEFAULT_MAX_BODY_BYTES, readBoundedBody } from "./request-body.js";
import { assertPathVariableField, buildRestRequest } from "./rest-request.js";
import type { ServiceBinding } from "./service-binding.js";
import { streamOpenedKey } from "./stream-opened.js";
import { tlsPeerOf, tlsSocketOf } from "./tls-peer.js";

/** connect-node's handler signature (its request/response types are not exported). */
export type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
export type NodeRequest = Parameters<NodeHandler>[0];
export type NodeResponse = Parameters<NodeHandler>[1];

/** One REST route, read from a method's `google.api.http` option. */
export interface RestRoute {
  /** "GET", "POST", "PUT", "PATCH", "DELETE" or a custom verb. */
  readonly httpMethod: string;
  readonly template: PathTemplate;
  /** "" (no body), "*" or a top-level field name. */
  readonly body: string;
  readonly binding: ServiceBinding;
  /** Unary: one JSON response. Server streaming: newline-delimited JSON, one response message per line. */
  readonly method: DescMethod & { readonly methodKind: "unary" | "server_streaming" };
}

/**
 * The REST routes of the given services, from their `google.api.http`
 * annotations (including `additional_bindings`). There is no hand-written
 * route table: a new RPC with an annotation is served on REST at start-up.
 * Throws at start-up on what it cannot serve (client or bidirectional
 * streaming methods with a route, `response_body`, a path variable naming no
 * scalar field, duplicate routes).
 */
export function restRoutesFromAnnotations(bindings: readonly ServiceBinding[]): RestRoute[] {
  const routes: RestRoute[] = [];
  const seen = new Set<string>();
  for (const binding of bindings) {
    for (const method of binding.service.methods) {
      if (!hasOption(method, http)) continue;
      const where = `${binding.service.typeName}.${method.name}`;
      if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
        throw new Error(`${where}: REST routes are supported for unary and server-streaming methods only`);
      }
      const unary = method as DescMethod & { readonly methodKind: "unary" | "server_streaming" };
      const rule = getOption(method, http);
      for (const r of [rule, ...rule.additionalBindings]) {
        if (r.responseBody !== "") throw new Error(`${where}: response_body is not supported`);
        let httpMethod: string;
        let path: string;
        switch (r.pattern.case) {
          case "get":
          case "put":
          case "post":
          case "delete":
          case "patch":
            httpMethod = r.pattern.case.toUpperCase();
            path = r.pattern.value;
            break;
          case "custom":
            httpMethod = r.pattern.value.kind.toUpperCase();
            path = r.pattern.value.path;
            break;
          default:
            throw new Error(`${where}: google.api.http rule without a pattern`);
        }
        const template = parsePathTemplate(path);
        for (const variable of template.variables) assertPathVariableField(unary.input, variable.fieldPath, where);
        if (r.body !== "" && r.body !== "*" && unary.input.fields.every((f) => f.name !== r.body)) {
          throw new Error(`${where}: body "${r.body}" names no field of ${unary.input.typeName}`);
        }
        const key = `${httpMethod} ${path}`;
        if (seen.has(key)) throw new Error(`${where}: route ${key} is declared twice`);
        seen.add(key);
        routes.push({ httpMethod, template, body: r.body, binding, method: unary });
      }
    }
  }
  // Most specific first: a template with a verb, then more literal segments.
  return routes.sort((a, b) => specificity(b.template) - specificity(a.template));
}

function specificity(template: PathTemplate): number {
  const literals = template.segments.filter((s) => s.kind === "literal").length;
  return (template.verb === undefined ? 0 : 1000) + literals * 10 - (template.segments.some((s) => s.kind === "multi") ? 5 : 0);
}

export interface RestTranscoderOptions {
  readonly services: readonly ServiceBinding[];
  readonly authenticator: Authenticator;
  readonly log: Logger;
  /** Request body limit in bytes. Default 64 KiB. */
  readonly maxBodyBytes?: number;
  /** True once the server drains: new requests get 503 SHUTTING_DOWN. */
  readonly isDraining?: () => boolean;
  /** Aborted when the server stops waiting for in-flight calls. */
  readonly shutdownSignal?: AbortSignal;
}

export interface RestTranscoder {
  (req: NodeRequest, res: NodeResponse): void;
  readonly routes: readonly RestRoute[];
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The REST/JSON side of the server, used as the `fallback` of
 * `connectNodeAdapter`: every request that is not an RPC path lands here.
 *
 * Per request: match a route (404 ROUTE_NOT_FOUND; 405 with `Allow` when the
 * path exists for other methods) → refuse while draining → authenticate
 * (certificate or bearer token) → read the body (bounded) → build the request
 * message (path, query, body; strict proto3 JSON) → check the tenant → call
 * the same implementation as gRPC with a HandlerContext → `toJson` the
 * response. Every error goes through the one error table.
 *
 * A server-streaming method answers `application/x-ndjson`: one proto3-JSON
 * response message per line, written as it comes. The 200 and headers go out
 * with the first message, or earlier when the implementation marks the stream
 * open (`markStreamOpened`); an error before that is the usual JSON error body
 * with its status, one after it is a last line `{"error": <that body>}`. The
 * stream ends when the implementation ends, the client goes away, or the
 * server shuts down (the handler context's signal aborts).
 */
export function createRestTranscoder(options: RestTranscoderOptions): RestTranscoder {
  const routes = restRoutesFromAnnotations(options.services);
  const limit = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const { log } = options;

  async function handle(req: NodeRequest, res: NodeResponse): Promise<void> {
    const rawUrl = req.url ?? "/";
    const queryAt = rawUrl.indexOf("?");
    const rawPath = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
    const httpMethod = (req.method ?? "GET").toUpperCase();
    let route: RestRoute | undefined;
    const logContext: Record<string, unknown> = { http_method: httpMethod, path: rawPath };
    try {
      let variables: Map<string, string> | undefined;
      const allowed = new Set<string>();
      for (const candidate of routes) {
        const match = matchPathTemplate(candidate.template, rawPath);
        if (match === undefined) continue;
        allowed.add(candidate.httpMethod);
        if (route === undefined && candidate.httpMethod === httpMethod) {
          route = candidate;
          variables = match;
        }
      }
      if (route === undefined || variables === undefined) {
        if (allowed.size > 0) {
          sendMethodNotAllowed(req, res, httpMethod, [...allowed], log, logContext);
          return;
        }
        throw new KmsError("ROUTE_NOT_FOUND", `no route for ${httpMethod} ${rawPath}`);
      }
      logContext["procedure"] = `${route.binding.service.typeName}/${route.method.name}`;
      if (options.isDraining?.() === true) {
        throw new KmsError("SHUTTING_DOWN", "the server is shutting down; retry on another instance");
      }

      const contextValues = authenticationContextValues(
        {
          channel: "rest",
          peer: tlsPeerOf(tlsSocketOf(req)),
          authorization: singleHeader(req.headers, "authorization"),
        },
        options.authenticator,
      );
      const caller = await authenticate({ values: contextValues });

      const bodyBytes = await readBoundedBody(req, limit);
      if (bodyBytes.length > 0) requireJsonContentType(singleHeader(req.headers, "content-type"));
      let bodyText: string;
      try {
        bodyText = utf8.decode(bodyBytes);
      } catch {
        throw new KmsError("MALFORMED_BODY", "the request body is not valid UTF-8");
      }
      const query = new URLSearchParams(queryAt < 0 ? "" : rawUrl.slice(queryAt + 1));
      const request = buildRestRequest({ input: route.method.input, body: route.body }, variables, query, bodyText);
      authorizeMessageTenant(caller, route.method.input, request);

      const handler = handlerOf(route.binding, route.method);
      if (handler === undefined) {
        throw new ConnectError(`${route.method.name} is not implemented`, Code.Unimplemented);
      }
      const requestAbort = new AbortController();
      const onClose = (): void => {
        // writableEnded: we ended the response. (writableFinished is also true
        // on HTTP/2 once the client reset the stream, so it cannot tell.)
        if (!res.writableEnded) requestAbort.abort(new ConnectError("the client closed the request", Code.Canceled));
      };
      res.once("close", onClose);
      const ctx = createHandlerContext({
        service: route.binding.service,
        method: route.method,
        protocolName: "rest",
        requestMethod: httpMethod,
        url: `https://${singleHeader(req.headers, "host") ?? singleHeader(req.headers, ":authority") ?? "localhost"}${rawUrl}`,
        requestHeader: headersFromNode(req.headers),
        contextValues,
        requestSignal: requestAbort.signal,
        ...(options.shutdownSignal === undefined ? {} : { shutdownSignal: options.shutdownSignal }),
      });
      try {
        if (route.method.methodKind === "server_streaming") {
          await streamResponses(res, route.method, handler(request, ctx) as AsyncIterable<unknown>, ctx, log, logContext);
          return;
        }
        const result = await handler(request, ctx);
        const response = create(route.method.output, result as Parameters<typeof create>[1]);
        const json = JSON.stringify(toJson(route.method.output, response));
        ctx.responseHeader.forEach((value, name) => res.setHeader(name, value));
        send(req, res, 200, json);
      } finally {
        res.off("close", onClose);
        ctx.abort();
      }
    } catch (err) {
      const { status, body } = errorToJson(err, log, logContext);
      if (status === 401 || status === 403) log.warn("request refused", { ...logContext, reason: body.reason });
      sendError(req, res, status, body);
    }
  }

  const transcoder = (req: NodeRequest, res: NodeResponse): void => {
    handle(req, res).catch((err: unknown) => {
      log.error("REST handler failed", { err });
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end();
      }
    });
  };
  return Object.assign(transcoder, { routes });
}

type Handler = (request: unknown, context: HandlerContext) => unknown;

/** The implementation of one method, or undefined when the binding lacks it. */
function handlerOf(binding: ServiceBinding, method: DescMethod): Handler | undefined {
  const candidate = (binding.impl as Record<string, unknown>)[method.localName];
  return typeof candidate === "function" ? (candidate.bind(binding.impl) as Handler) : undefined;
}

/**
 * Writes a server stream as newline-delimited JSON (see createRestTranscoder).
 * Throws what the implementation throws before the stream is open, so the
 * caller answers it as an ordinary error.
 */
async function streamResponses(
  res: NodeResponse,
  method: DescMethod,
  responses: AsyncIterable<unknown>,
  ctx: HandlerContext,
  log: Logger,
  logContext: Record<string, unknown>,
): Promise<void> {
  let open = false;
  const openStream = (): void => {
    if (open || res.headersSent || res.destroyed) return;
    open = true;
    ctx.responseHeader.forEach((value, name) => res.setHeader(name, value));
    res.setHeader("content-type", "application/x-ndjson");
    res.setHeader("cache-control", "no-store");
    res.setHeader("x-content-type-options", "nosniff");
    res.writeHead(200); // HTTP/2: sends the HEADERS frame now
    const http1 = res as { flushHeaders?: () => void };
    if (typeof http1.flushHeaders === "function") http1.flushHeaders(); // HTTP/1.1: without waiting for a first write
  };
  ctx.values.set(streamOpenedKey, openStream);
  const iterator = responses[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await nextUnlessAborted(iterator, ctx.signal);
      if (next === undefined || next.done === true) break;
      const message = create(method.output, next.value as Parameters<typeof create>[1]);
      openStream();
      if (!res.write(`${JSON.stringify(toJson(method.output, message))}\n`)) await drained(res, ctx.signal);
    }
    openStream(); // a stream that ended without a message is still a 200
  } catch (err) {
    if (!open) throw err;
    const { body } = errorToJson(err, log, logContext);
    if (!res.destroyed) res.write(`${JSON.stringify({ error: body })}\n`);
  } finally {
    ctx.values.set(streamOpenedKey, undefined);
    // Not awaited: a generator suspended in `next` only returns once that settles.
    void iterator.return?.()?.catch(() => undefined);
  }
  if (!res.destroyed) res.end();
}

/** The iterator's next result, or undefined as soon as `signal` aborts. */
function nextUnlessAborted<T>(iterator: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T> | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    iterator.next().then(
      (result) => {
        signal.removeEventListener("abort", onAbort);
        resolve(result);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Resolves when the response can take more, or it closed, or `signal` aborted. */
function drained(res: NodeResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off("drain", done);
      res.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    res.once("close", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * A body must be declared JSON. Besides being the contract, this shuts out
 * cross-site form posts: a browser holding a client certificate may send
 * text/plain or form bodies to another origin without a preflight, never
 * application/json.
 */
function requireJsonContentType(contentType: string | undefined): void {
  const mediaType = contentType?.split(";")[0]?.trim().toLowerCase();
  if (mediaType !== "application/json") {
    throw new KmsError("MALFORMED_BODY", `Content-Type: must be application/json for a request with a body, got ${JSON.stringify(contentType ?? "")}`, {
      field: "Content-Type",
    });
  }
}

function sendMethodNotAllowed(req: NodeRequest, res: NodeResponse, httpMethod: string, allowed: string[], log: Logger, context: Record<string, unknown>): void {
  const { body } = errorToJson(
    new KmsError("ROUTE_NOT_FOUND", `method ${httpMethod} is not allowed here; allowed: ${allowed.join(", ")}`),
    log,
    context,
  );
  res.setHeader("allow", allowed.join(", "));
  sendError(req, res, 405, body);
}

function sendError(req: NodeRequest, res: NodeResponse, status: number, body: RestErrorBody): void {
  if (status === 401) {
    const tokenProblem = body.reason === "ERROR_REASON_TOKEN_INVALID" || body.reason === "ERROR_REASON_TOKEN_EXPIRED";
    res.setHeader("www-authenticate", tokenProblem ? 'Bearer realm="matih-kms", error="invalid_token"' : 'Bearer realm="matih-kms"');
  }
  send(req, res, status, JSON.stringify(body));
}

/**
 * Writes a JSON response. When the request body was not (fully) read — a
 * refusal before or while reading it — an HTTP/1.1 connection is closed after
 * the response instead of reading the rest of an unbounded body to reuse it.
 */
function send(req: NodeRequest, res: NodeResponse, status: number, json: string): void {
  if (res.headersSent || res.destroyed) return;
  const payload = Buffer.from(json, "utf8");
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("content-length", String(payload.byteLength));
  res.setHeader("cache-control", "no-store");
  const unread = !req.complete;
  if (unread && req.httpVersionMajor === 1) res.setHeader("connection", "close");
  res.end(payload);
  if (unread && req.httpVersionMajor >= 2) {
    // RFC 9113 §8.1: after a complete response the server may end the request
    // stream with RST_STREAM(NO_ERROR) so the client stops sending.
    const stream = (req as Http2ServerRequest).stream;
    res.once("finish", () => {
      if (!stream.closed && !stream.destroyed) stream.close();
    });
  }
}

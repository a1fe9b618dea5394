import * as https from "node:https";
import { StringDecoder } from "node:string_decoder";
import {
  create,
  fromJson,
  getOption,
  hasOption,
  toJson,
  type DescField,
  type DescMessage,
  type DescMethodStreaming,
  type DescMethodUnary,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";
import { codeFromName } from "../errors/kms-error.js";
import { ErrorDetailSchema, ErrorReason, httpRuleOption } from "../gen.js";
import { readPem, type PemSource } from "./tls-material.js";

export interface KmsRestTransportOptions {
  /** "https://kms.internal:8443" */
  readonly baseUrl: string;
  /**
   * The tenant's bearer token, or a function returning the current one
   * (called for every request, so a refreshed token is picked up).
   */
  readonly token?: string | (() => string | Promise<string>);
  /** The CA the server's certificate chains to; default: Node's trusted CAs. */
  readonly ca?: PemSource;
  /** A client certificate instead of (or as well as) a token: REST routes accept either. */
  readonly clientCertificate?: { readonly cert: PemSource; readonly key: PemSource };
  /** The deadline of a call that sets none. Default 5,000 ms. */
  readonly defaultTimeoutMs?: number;
  /** The largest response body accepted. Default 4 MiB. */
  readonly maxResponseBytes?: number;
}

/**
 * REST/JSON as a Connect `Transport`, for tenants: every unary RPC with a
 * `google.api.http` annotation is called at its documented path, so the
 * generated service descriptors give a typed REST client with no route
 * table written by hand. Path variables come from the request's fields,
 * the body or query from the rest (proto3 JSON), and an error body
 * `{code, reason, message, field, metadata}` becomes a ConnectError with the
 * server's ErrorDetail, exactly as the RPC transports report it. A
 * server-streaming method (WatchKeyEvents) is read as newline-delimited JSON.
 */
export function createKmsRestTransport(options: KmsRestTransportOptions): Transport {
  const base = new URL(options.baseUrl);
  if (base.protocol !== "https:") throw new RangeError("the REST transport needs an https:// base URL");
  const agent = new https.Agent({
    keepAlive: true,
    ...(options.ca === undefined ? {} : { ca: readPem(options.ca) }),
    ...(options.clientCertificate === undefined ? {} : { cert: readPem(options.clientCertificate.cert), key: readPem(options.clientCertificate.key) }),
  });
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 5_000;
  const maxResponseBytes = options.maxResponseBytes ?? 4 * 1024 * 1024;
  const basePath = base.pathname.replace(/\/$/, "");
  const requestHeaders = async (init: ConstructorParameters<typeof Headers>[0] | undefined, hasBody: boolean, accept: string): Promise<Headers> => {
    const headers = new Headers(init);
    headers.set("accept", accept);
    const token = typeof options.token === "function" ? await options.token() : options.token;
    if (token !== undefined) headers.set("authorization", `Bearer ${token}`);
    if (hasBody) headers.set("content-type", "application/json");
    return headers;
  };

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: MessageInitShape<I>,
    ): Promise<UnaryResponse<I, O>> {
      if (!hasOption(method, httpRuleOption)) {
        throw new ConnectError(`${method.parent.typeName}.${method.name} has no REST route`, Code.Unimplemented);
      }
      const message = create(method.input, input) as MessageShape<I>;
      const request = restRequestFor(method, message);
      const headers = await requestHeaders(header, request.body !== undefined, "application/json");
      const deadline = timeoutMs === undefined ? defaultTimeoutMs : timeoutMs <= 0 ? undefined : timeoutMs;
      const opened = await open(agent, base, `${basePath}${request.pathAndQuery}`, request.httpMethod, headers, request.body, signal, deadline);
      const response = { status: opened.status, headers: opened.headers, body: await opened.body(maxResponseBytes) };
      if (response.status !== 200) throw errorFromResponse(response.status, response.body);
      let json: JsonValue;
      try {
        json = JSON.parse(response.body.toString("utf8")) as JsonValue;
      } catch {
        throw new ConnectError("the server's response is not JSON", Code.Internal);
      }
      return {
        stream: false,
        service: method.parent,
        method,
        header: response.headers,
        message: fromJson(method.output, json, { ignoreUnknownFields: true }) as MessageShape<O>,
        trailer: new Headers(),
      };
    },
    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0] | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
    ): Promise<StreamResponse<I, O>> {
      if (method.methodKind !== "server_streaming" || !hasOption(method, httpRuleOption)) {
        throw new ConnectError(`${method.parent.typeName}.${method.name} has no REST route`, Code.Unimplemented);
      }
      let first: MessageInitShape<I> | undefined;
      for await (const message of input) {
        first = message;
        break;
      }
      const message = create(method.input, first) as MessageShape<I>;
      const request = restRequestFor(method as unknown as DescMethodUnary<I, DescMessage>, message);
      const headers = await requestHeaders(header, request.body !== undefined, "application/x-ndjson");
      const response = await open(agent, base, `${basePath}${request.pathAndQuery}`, request.httpMethod, headers, request.body, signal, timeoutMs === undefined || timeoutMs <= 0 ? undefined : timeoutMs);
      if (response.status !== 200) throw errorFromResponse(response.status, await response.body(maxResponseBytes));
      return {
        stream: true,
        service: method.parent,
        method,
        header: response.headers,
        message: ndjsonMessages(response.chunks, method.output, maxResponseBytes),
        trailer: new Headers(),
      };
    },
  };
}

export interface RestRequest {
  readonly httpMethod: string;
  /** "/api/v1/tenants/acme/encryption/keys?pageSize=20" */
  readonly pathAndQuery: string;
  readonly body: string | undefined;
}

/** Where and how a request message goes over REST, following its `google.api.http` rule. */
export function restRequestFor<I extends DescMessage>(method: DescMethodUnary<I, DescMessage>, message: MessageShape<I>): RestRequest {
  const rule = getOption(method, httpRuleOption);
  let httpMethod: string;
  let template: string;
  switch (rule.pattern.case) {
    case "get":
    case "put":
    case "post":
    case "delete":
    case "patch":
      httpMethod = rule.pattern.case.toUpperCase();
      template = rule.pattern.value;
      break;
    case "custom":
      httpMethod = rule.pattern.value.kind.toUpperCase();
      template = rule.pattern.value.path;
      break;
    default:
      throw new ConnectError(`${method.name}: its REST rule has no pattern`, Code.Unimplemented);
  }
  const json = toJson(method.input, message) as JsonObject;
  const path = template.replace(/\{([^}=]+)(=([^}]*))?\}/g, (_, fieldPath: string, _eq: string | undefined, pattern: string | undefined) => {
    const fields = resolveFields(method.input, fieldPath);
    const value = takeJsonPath(json, fields);
    const text = value === undefined || value === null ? "" : String(value as string | number | boolean);
    if (text === "") throw new ConnectError(`${fieldPath}: required in the path of ${method.name}`, Code.InvalidArgument);
    const multi = pattern !== undefined && pattern.includes("**");
    return multi ? text.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(text);
  });
  let body: string | undefined;
  let query = "";
  if (rule.body === "*") {
    body = JSON.stringify(json);
  } else {
    if (rule.body !== "") {
      const field = method.input.fields.find((f) => f.name === rule.body);
      if (field !== undefined && field.jsonName in json) {
        body = JSON.stringify(json[field.jsonName]);
        delete json[field.jsonName];
      } else {
        body = "{}";
      }
    }
    const params = new URLSearchParams();
    flattenQuery(json, "", params);
    query = params.toString();
  }
  return { httpMethod, pathAndQuery: query === "" ? path : `${path}?${query}`, body };
}

function resolveFields(schema: DescMessage, dotted: string): DescField[] {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = schema;
  for (const part of dotted.split(".")) {
    const field: DescField | undefined = current?.fields.find((f) => f.name === part);
    if (field === undefined) throw new ConnectError(`path variable ${dotted} names no field`, Code.Internal);
    fields.push(field);
    current = field.fieldKind === "message" ? field.message : undefined;
  }
  return fields;
}

/** Reads and removes the JSON value at a field path (path fields are not sent again). */
function takeJsonPath(json: JsonObject, fields: readonly DescField[]): JsonValue | undefined {
  let current: JsonObject = json;
  for (let i = 0; i < fields.length - 1; i++) {
    const next = current[(fields[i] as DescField).jsonName];
    if (typeof next !== "object" || next === null || Array.isArray(next)) return undefined;
    current = next;
  }
  const leaf = (fields[fields.length - 1] as DescField).jsonName;
  const value = current[leaf];
  delete current[leaf];
  return value;
}

function flattenQuery(json: JsonValue, prefix: string, params: URLSearchParams): void {
  if (Array.isArray(json)) {
    for (const element of json) flattenQuery(element, prefix, params);
  } else if (typeof json === "object" && json !== null) {
    for (const [key, value] of Object.entries(json)) flattenQuery(value, prefix === "" ? key : `${prefix}.${key}`, params);
  } else if (json !== null && prefix !== "") {
    params.append(prefix, String(json));
  }
}

interface OpenedResponse {
  readonly status: number;
  readonly headers: Headers;
  /** The body as it arrives; fails with the call's deadline or cancellation. */
  readonly chunks: AsyncIterable<Buffer>;
  /** Reads the whole body (at most `limit` bytes). */
  body(limit: number): Promise<Buffer>;
}

/** Sends one request; resolves once the response headers are in. */
function open(
  agent: https.Agent,
  base: URL,
  path: string,
  httpMethod: string,
  headers: Headers,
  body: string | undefined,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<OpenedResponse> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new ConnectError("the call was canceled", Code.Canceled));
      return;
    }
    const payload = body === undefined ? undefined : Buffer.from(body, "utf8");
    const nodeHeaders: Record<string, string> = {};
    headers.forEach((value, name) => (nodeHeaders[name] = value));
    if (payload !== undefined) nodeHeaders["content-length"] = String(payload.length);
    const request = https.request({ agent, host: base.hostname, port: base.port, method: httpMethod, path, headers: nodeHeaders });
    let failure: ConnectError | undefined;
    let responded = false;
    const fail = (error: ConnectError): void => {
      if (failure !== undefined) return;
      failure = error;
      cleanup();
      request.destroy(error);
      if (!responded) reject(error);
    };
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => fail(new ConnectError(`no response within ${timeoutMs} ms`, Code.DeadlineExceeded)), timeoutMs);
    const onAbort = (): void => fail(new ConnectError("the call was canceled", Code.Canceled));
    signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    request.on("error", (error: NodeJS.ErrnoException) => {
      if (failure === undefined) fail(new ConnectError(`${error.code ?? "network error"}: ${error.message}`, Code.Unavailable, undefined, undefined, error));
    });
    request.on("response", (response) => {
      responded = true;
      const responseHeaders = new Headers();
      for (const [name, value] of Object.entries(response.headers)) {
        if (typeof value === "string") responseHeaders.set(name, value);
        else if (Array.isArray(value)) for (const v of value) responseHeaders.append(name, v);
      }
      async function* chunks(): AsyncIterable<Buffer> {
        try {
          for await (const chunk of response) yield chunk as Buffer;
        } catch (error) {
          throw failure ?? new ConnectError(`the response broke off: ${(error as Error).message}`, Code.Unavailable, undefined, undefined, error);
        } finally {
          cleanup();
          if (!response.complete) request.destroy();
        }
        if (failure !== undefined) throw failure;
        if (!response.complete) throw new ConnectError("the response broke off", Code.Unavailable);
      }
      const stream = chunks();
      resolve({
        status: response.statusCode ?? 0,
        headers: responseHeaders,
        chunks: stream,
        async body(limit) {
          const parts: Buffer[] = [];
          let size = 0;
          for await (const chunk of stream) {
            size += chunk.length;
            if (size > limit) {
              fail(new ConnectError(`the response is larger than ${limit} bytes`, Code.ResourceExhausted));
              throw failure;
            }
            parts.push(chunk);
          }
          return Buffer.concat(parts);
        },
      });
    });
    request.end(payload);
  });
}

/**
 * The messages of a server stream over REST: newline-delimited proto3 JSON,
 * one message per line; a last line `{"error": {...}}` ends it with that error.
 */
async function* ndjsonMessages<O extends DescMessage>(chunks: AsyncIterable<Buffer>, schema: O, maxLineBytes: number): AsyncIterable<MessageShape<O>> {
  const decoder = new StringDecoder("utf8");
  let pending = "";
  const parse = (line: string): MessageShape<O> | undefined => {
    if (line.trim() === "") return undefined;
    let json: JsonValue;
    try {
      json = JSON.parse(line) as JsonValue;
    } catch {
      throw new ConnectError("the server sent a line that is not JSON", Code.Internal);
    }
    if (typeof json === "object" && json !== null && !Array.isArray(json) && "error" in json) {
      throw errorFromResponse(0, Buffer.from(JSON.stringify(json["error"])));
    }
    return fromJson(schema, json, { ignoreUnknownFields: true }) as MessageShape<O>;
  };
  for await (const chunk of chunks) {
    pending += decoder.write(chunk);
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const message = parse(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      if (message !== undefined) yield message;
    }
    if (pending.length > maxLineBytes) throw new ConnectError(`a line of the stream is longer than ${maxLineBytes} bytes`, Code.ResourceExhausted);
  }
  const last = parse(pending + decoder.end());
  if (last !== undefined) yield last;
}

/** The gRPC code an HTTP status stands for when an error body does not say. */
function codeForStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.InvalidArgument;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.NotFound;
    case 409:
      return Code.AlreadyExists;
    case 413:
    case 429:
      return Code.ResourceExhausted;
    case 501:
      return Code.Unimplemented;
    case 502:
    case 503:
      return Code.Unavailable;
    case 504:
      return Code.DeadlineExceeded;
    default:
      return status >= 500 ? Code.Internal : Code.Unknown;
  }
}

/** A ConnectError from a REST error body `{code, reason, message, field, metadata}`. */
export function errorFromResponse(status: number, body: Buffer): ConnectError {
  let parsed: { code?: unknown; reason?: unknown; message?: unknown; field?: unknown; metadata?: unknown } | undefined;
  try {
    parsed = JSON.parse(body.toString("utf8")) as typeof parsed;
  } catch {
    parsed = undefined;
  }
  const code = typeof parsed?.code === "string" ? codeFromName(parsed.code) : codeForStatus(status);
  const message = typeof parsed?.message === "string" ? parsed.message : `HTTP ${status}`;
  const reasonName = typeof parsed?.reason === "string" ? parsed.reason.replace(/^ERROR_REASON_/, "") : "UNSPECIFIED";
  const reason = (ErrorReason as unknown as Record<string, ErrorReason | undefined>)[reasonName] ?? ErrorReason.UNSPECIFIED;
  const metadata: Record<string, string> = {};
  if (typeof parsed?.metadata === "object" && parsed.metadata !== null) {
    for (const [k, v] of Object.entries(parsed.metadata)) if (typeof v === "string") metadata[k] = v;
  }
  return new ConnectError(message, code === Code.Unknown ? codeForStatus(status) : code, undefined, [
    { desc: ErrorDetailSchema, value: { reason, field: typeof parsed?.field === "string" ? parsed.field : "", metadata } },
  ]);
}

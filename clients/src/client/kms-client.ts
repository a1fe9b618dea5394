import type { DescMethod, DescMethodServerStreaming, DescMethodUnary, DescService, MessageInitShape } from "@bufbuild/protobuf";
import { Code, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { KmsError } from "../errors/kms-error.js";
import { DataKeyService, DatasetService, ErrorReason, KeyEventService, KeyManagementService } from "../gen.js";
import { createRetryPolicy, type RetryOptions, type RetryPolicy } from "./retry-policy.js";

export interface KmsClientOptions {
  /** From createKmsGrpcTransport, createKmsConnectTransport, createKmsRestTransport, or any Connect transport. */
  readonly transport: Transport;
  /**
   * The deadline of each unary call, covering all its attempts. Default
   * 5,000 ms. A call's own `timeoutMs` wins, but a unary call never goes
   * without one. Streams run until canceled unless given one.
   */
  readonly timeoutMs?: number;
  /** Backoff with jitter, for retryable codes only; false disables retries. */
  readonly retry?: RetryOptions | false;
  /** Sees every failed attempt (for metrics and logs). */
  readonly onAttemptFailed?: (failure: { readonly procedure: string; readonly attempt: number; readonly error: KmsError; readonly retryInMs: number | undefined }) => void;
  /** @internal For tests: how the client waits between attempts. */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

/** Typed clients for every matih-kms service; every call throws KmsError. */
export interface KmsClient {
  readonly dataKeys: Client<typeof DataKeyService>;
  readonly keys: Client<typeof KeyManagementService>;
  readonly keyEvents: Client<typeof KeyEventService>;
  readonly datasets: Client<typeof DatasetService>;
}

const DEFAULT_TIMEOUT_MS = 5_000;

export function createKmsClient(options: KmsClientOptions): KmsClient {
  return {
    dataKeys: createServiceClient(DataKeyService, options),
    keys: createServiceClient(KeyManagementService, options),
    keyEvents: createServiceClient(KeyEventService, options),
    datasets: createServiceClient(DatasetService, options),
  };
}

/**
 * A typed client for one service, with what `createClient` lacks: a
 * deadline on every unary call, retries with backoff and jitter for
 * retryable codes on calls safe to repeat, and KmsError (exposing the
 * server's ErrorReason) as the one error type.
 */
export function createServiceClient<S extends DescService>(service: S, options: KmsClientOptions): Client<S> {
  const policy = createRetryPolicy(options.retry);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new RangeError("timeoutMs must be positive: every call has a deadline");
  const sleep = options.sleep ?? abortableSleep;
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    switch (method.methodKind) {
      case "unary": {
        const unary = method as DescMethodUnary;
        client[method.localName] = (input: MessageInitShape<DescMethodUnary["input"]>, call?: CallOptions) =>
          callUnary(options.transport, unary, input, call, timeoutMs, policy, sleep, options.onAttemptFailed);
        break;
      }
      case "server_streaming": {
        const streaming = method as DescMethodServerStreaming;
        client[method.localName] = (input: MessageInitShape<DescMethodServerStreaming["input"]>, call?: CallOptions) =>
          callServerStream(options.transport, streaming, input, call);
        break;
      }
      default:
        client[method.localName] = () => {
          throw new KmsError({ code: Code.Unimplemented, reason: ErrorReason.UNSPECIFIED, message: `${method.name}: ${method.methodKind} calls are not supported` });
        };
    }
  }
  return client as Client<S>;
}

function procedureOf(method: DescMethod): string {
  return `${method.parent.typeName}/${method.name}`;
}

async function callUnary(
  transport: Transport,
  method: DescMethodUnary,
  input: MessageInitShape<DescMethodUnary["input"]>,
  call: CallOptions | undefined,
  defaultTimeoutMs: number,
  policy: RetryPolicy,
  sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void>,
  onAttemptFailed: KmsClientOptions["onAttemptFailed"],
): Promise<unknown> {
  const procedure = procedureOf(method);
  const budget = call?.timeoutMs !== undefined && call.timeoutMs > 0 ? call.timeoutMs : defaultTimeoutMs;
  const deadline = performance.now() + budget;
  for (let attempt = 1; ; attempt++) {
    const remaining = Math.floor(deadline - performance.now());
    if (remaining <= 0) {
      throw new KmsError({ code: Code.DeadlineExceeded, reason: ErrorReason.UNSPECIFIED, message: `no answer within ${budget} ms`, procedure, attempts: attempt - 1 });
    }
    try {
      const response = await transport.unary(method, call?.signal, remaining, call?.headers, input, call?.contextValues);
      call?.onHeader?.(response.header);
      call?.onTrailer?.(response.trailer);
      return response.message;
    } catch (thrown) {
      const error = KmsError.from(thrown, { procedure, attempts: attempt });
      const retry =
        attempt < policy.maxAttempts && call?.signal?.aborted !== true && policy.shouldRetry(method, error) ? policy.backoffMs(attempt) : undefined;
      const inTime = retry !== undefined && performance.now() + retry < deadline;
      onAttemptFailed?.({ procedure, attempt, error, retryInMs: inTime ? retry : undefined });
      if (!inTime) throw error;
      await sleep(retry, call?.signal);
    }
  }
}

function callServerStream(
  transport: Transport,
  method: DescMethodServerStreaming,
  input: MessageInitShape<DescMethodServerStreaming["input"]>,
  call: CallOptions | undefined,
): AsyncIterable<unknown> {
  const procedure = procedureOf(method);
  return {
    async *[Symbol.asyncIterator]() {
      let response;
      try {
        response = await transport.stream(method, call?.signal, call?.timeoutMs ?? 0, call?.headers, single(input), call?.contextValues);
      } catch (thrown) {
        throw KmsError.from(thrown, { procedure });
      }
      call?.onHeader?.(response.header);
      try {
        yield* response.message;
      } catch (thrown) {
        throw KmsError.from(thrown, { procedure });
      }
      call?.onTrailer?.(response.trailer);
    },
  };
}

async function* single<T>(value: T): AsyncIterable<T> {
  yield value;
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new KmsError({ code: Code.Canceled, reason: ErrorReason.UNSPECIFIED, message: "the call was canceled" }));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new KmsError({ code: Code.Canceled, reason: ErrorReason.UNSPECIFIED, message: "the call was canceled" }));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

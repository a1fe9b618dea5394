import { statSync } from "node:fs";
import { createSecureContext } from "node:tls";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { mutualTlsNodeOptions, type MutualTlsOptions, type PemSource } from "./tls-material.js";

export interface KmsRpcTransportOptions {
  /** "https://kms.internal:8443" */
  readonly baseUrl: string;
  /** The service identity (client certificate and key) and the CA the server chains to. */
  readonly tls: MutualTlsOptions;
  /**
   * When certificate, key or CA come from files: how often to look for
   * renewed files (cert-manager rotates them). New calls then use the new
   * identity; calls and streams under way finish on the old connection.
   * Default 60,000 ms; 0 reads the files once.
   */
  readonly reloadIntervalMs?: number;
  /** The deadline of a call that sets none. Default 5,000 ms. createKmsClient sets one on every call anyway. */
  readonly defaultTimeoutMs?: number;
  /**
   * HTTP/2 keep-alive: a PING after this long without traffic; the connection
   * (and every stream on it, such as WatchKeyEvents) fails when the PING is
   * not answered within `pingTimeoutMs`. Defaults 10,000 / 5,000 ms.
   */
  readonly pingIntervalMs?: number;
  readonly pingTimeoutMs?: number;
  readonly interceptors?: Interceptor[];
}

const DEFAULT_TIMEOUT_MS = 5_000;

/** gRPC over HTTP/2 with mutual TLS: the internal services' hot path. */
export function createKmsGrpcTransport(options: KmsRpcTransportOptions): Transport {
  return reloading(options, () => createGrpcTransport(sessionOptions(options)));
}

/** The Connect protocol (binary) over HTTP/2 with mutual TLS: the same calls, on the same port. */
export function createKmsConnectTransport(options: KmsRpcTransportOptions): Transport {
  return reloading(options, () => createConnectTransport({ ...sessionOptions(options), httpVersion: "2", useBinaryFormat: true }));
}

function sessionOptions(options: KmsRpcTransportOptions) {
  const nodeOptions = mutualTlsNodeOptions(options.tls);
  // Refuse unusable material here (a key that does not match its certificate), not at the first call.
  createSecureContext(nodeOptions);
  return {
    baseUrl: options.baseUrl,
    nodeOptions,
    defaultTimeoutMs: options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    pingIntervalMs: options.pingIntervalMs ?? 10_000,
    pingTimeoutMs: options.pingTimeoutMs ?? 5_000,
    interceptors: options.interceptors ?? [],
  };
}

/**
 * A transport that rebuilds itself when its TLS files change (size or
 * modification time), keeping the current one when the new files are not
 * usable yet (say, a certificate written before its key).
 */
function reloading(options: KmsRpcTransportOptions, build: () => Transport): Transport {
  const files = [options.tls.ca, options.tls.cert, options.tls.key].filter((s): s is { path: string } => isFile(s)).map((s) => s.path);
  let current = build();
  const intervalMs = options.reloadIntervalMs ?? 60_000;
  if (files.length > 0 && intervalMs > 0) {
    let stamp = fingerprint(files);
    const timer = setInterval(() => {
      const next = fingerprint(files);
      if (next === stamp) return;
      try {
        current = build();
        stamp = next;
      } catch {
        // Half-written or mismatched files: try again at the next tick.
      }
    }, intervalMs);
    timer.unref();
  }
  return {
    unary: (method, signal, timeoutMs, header, input, contextValues) => current.unary(method, signal, timeoutMs, header, input, contextValues),
    stream: (method, signal, timeoutMs, header, input, contextValues) => current.stream(method, signal, timeoutMs, header, input, contextValues),
  };
}

function isFile(source: PemSource): source is { readonly path: string } {
  return typeof source === "object" && !(source instanceof Uint8Array);
}

function fingerprint(files: readonly string[]): string {
  return files
    .map((file) => {
      try {
        const stat = statSync(file);
        return `${stat.size}:${stat.mtimeMs}`;
      } catch {
        return "missing";
      }
    })
    .join("|");
}

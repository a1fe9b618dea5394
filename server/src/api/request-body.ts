import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { KmsError } from "../domain/kms-error.js";

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

export function bodyTooLarge(limit: number): KmsError {
  return new KmsError("BODY_TOO_LARGE", `the request body exceeds the limit of ${limit} bytes`, {
    metadata: { limit: String(limit) },
  });
}

/**
 * Reads a request body of at most `limit` bytes. A declared Content-Length
 * over the limit is refused before reading anything; a body that grows past
 * the limit is refused as soon as it does, and the rest is not buffered (the
 * stream is paused; the caller answers and closes the exchange).
 */
export function readBoundedBody(req: IncomingMessage | Http2ServerRequest, limit: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > limit) {
    return Promise.reject(bodyTooLarge(limit));
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
      if (err !== undefined) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer | string): void => {
      const buffer = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      size += buffer.byteLength;
      if (size > limit) {
        chunks.length = 0;
        req.pause();
        finish(bodyTooLarge(limit));
        return;
      }
      chunks.push(buffer);
    };
    const onEnd = (): void => finish(undefined);
    const onError = (err: Error): void => finish(err);
    const onAborted = (): void => finish(new Error("the client aborted the request"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
}

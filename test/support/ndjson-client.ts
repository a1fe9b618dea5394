/**
 * Reading streams in tests: `Collected` gathers what a stream delivers and
 * waits for "n items" or "an item matching"; `openNdjson` reads a REST
 * server stream (newline-delimited JSON) line by line while it is open, over
 * HTTP/2 or HTTP/1.1.
 */
import * as http2 from "node:http2";
import * as https from "node:https";
import type { Endpoint, TlsIdentity } from "./e2e-clients.js";

const WAIT_MS = 15_000;

/** Items pushed by a stream, with waits for "n items" / "an item matching" (15 s at most). */
export class Collected<T> {
  readonly items: T[] = [];
  private ended: string | undefined;
  private notify: () => void = () => {};

  push(item: T): void {
    this.items.push(item);
    this.notify();
  }
  end(how: string): void {
    this.ended ??= how;
    this.notify();
  }
  async take(count: number): Promise<T[]> {
    await this.waitUntil(() => this.items.length >= count, `${count} items`);
    return this.items.slice(0, count);
  }
  async until(last: (item: T) => boolean): Promise<T[]> {
    await this.waitUntil(() => this.items.some(last), "the awaited item");
    return this.items.slice(0, this.items.findIndex(last) + 1);
  }
  private async waitUntil(done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!done()) {
      if (this.ended !== undefined) throw new Error(`the stream ended (${this.ended}) before ${what}; got ${this.items.length}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no ${what} within ${WAIT_MS} ms; got ${this.items.length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.notify = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

export interface NdjsonStream {
  /** Status and headers, as soon as the server sends them. */
  readonly head: Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>;
  /** Parsed lines, as they arrive. */
  readonly lines: Collected<Record<string, unknown>>;
  /** The whole body once the response has ended. */
  readonly body: Promise<string>;
  /** Goes away: cancels the HTTP/2 stream, or destroys the HTTP/1.1 connection. */
  close(): void;
}

/** A REST GET read as newline-delimited JSON while it streams (HTTP/2, or HTTP/1.1). */
export function openNdjson(endpoint: Endpoint, path: string, auth: { token?: string; cert?: TlsIdentity }, http1 = false): NdjsonStream {
  const lines = new Collected<Record<string, unknown>>();
  const headers: Record<string, string> = auth.token === undefined ? {} : { authorization: `Bearer ${auth.token}` };
  const tlsOptions = { ca: endpoint.ca, ...(auth.cert === undefined ? {} : { cert: auth.cert.cert, key: auth.cert.key }) };
  let pending = "";
  let text = "";
  const onData = (chunk: Buffer): void => {
    const s = chunk.toString("utf8");
    text += s;
    pending += s;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      lines.push(JSON.parse(line) as Record<string, unknown>);
    }
  };
  let resolveHead!: (head: { status: number; headers: Record<string, string | string[] | undefined> }) => void;
  let rejectHead!: (error: unknown) => void;
  const head = new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
    resolveHead = resolve;
    rejectHead = reject;
  });
  let close: () => void = () => {};
  const body = new Promise<string>((resolve, reject) => {
    const fail = (error: unknown): void => {
      lines.end(String(error));
      rejectHead(error);
      reject(error);
    };
    if (http1) {
      const url = new URL(endpoint.url);
      const req = https.request({ host: url.hostname, port: url.port, method: "GET", path, headers, agent: false, ...tlsOptions });
      req.on("error", fail);
      req.on("response", (res) => {
        resolveHead({ status: res.statusCode ?? 0, headers: res.headers });
        res.on("data", onData);
        res.on("end", () => {
          lines.end("the response ended");
          resolve(text);
        });
        res.on("error", fail);
      });
      req.end();
      close = () => req.destroy();
    } else {
      const session = http2.connect(endpoint.url, tlsOptions);
      session.on("error", fail);
      const stream = session.request({ ":method": "GET", ":path": path, ...headers }, { endStream: true });
      stream.on("response", (h) => resolveHead({ status: Number(h[":status"]), headers: h as Record<string, string | string[] | undefined> }));
      stream.on("data", onData);
      stream.on("end", () => {
        lines.end("the response ended");
        resolve(text);
      });
      stream.on("error", fail);
      stream.on("close", () => session.close());
      close = () => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        session.close();
      };
    }
  });
  body.catch(() => undefined);
  head.catch(() => undefined);
  return { head, lines, body, close: () => close() };
}

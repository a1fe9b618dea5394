/**
 * An HTTP(S) listener that can be stopped and started again on the same port,
 * so a test can make a provider's service unreachable and then bring it back.
 * Stopping also drops open keep-alive connections: otherwise a client would
 * keep talking to a "stopped" server over a pooled socket.
 */
import type { Server as HttpServer } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";

export interface RestartableHttpServer {
  readonly port: number;
  readonly running: boolean;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function listenRestartable(create: () => HttpServer | HttpsServer, host = "127.0.0.1"): Promise<RestartableHttpServer> {
  let server: HttpServer | HttpsServer | undefined;
  let port = 0;

  async function start(): Promise<void> {
    if (server !== undefined) return;
    const next = create();
    await new Promise<void>((resolve, reject) => {
      next.once("error", reject);
      next.listen(port, host, () => {
        next.off("error", reject);
        resolve();
      });
    });
    port = (next.address() as AddressInfo).port;
    server = next;
  }

  async function stop(): Promise<void> {
    const current = server;
    if (current === undefined) return;
    server = undefined;
    await new Promise<void>((resolve) => {
      current.close(() => resolve());
      current.closeAllConnections();
    });
  }

  await start();
  return {
    get port() {
      return port;
    },
    get running() {
      return server !== undefined;
    },
    stop,
    start,
  };
}

/** Reads a request body up to `limit` bytes. */
export async function readBody(request: AsyncIterable<Buffer | string>, limit = 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    size += buffer.length;
    if (size > limit) throw new Error("request body too large");
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

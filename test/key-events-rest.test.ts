/**
 * The REST transcoder's server streaming, against a stub KeyEventService on a
 * real listening server: newline-delimited JSON flushed message by message,
 * the 200 sent when the implementation marks the stream open, errors before
 * the stream opens as the usual JSON error, errors after it as a last
 * `{"error": ...}` line, the client going away aborting the implementation's
 * signal, and shutdown ending the stream.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { KeyEventService } from "../gen/matih/kms/v1/key_event_service_pb.js";
import { KeyEventType } from "../gen/matih/kms/v1/resources_pb.js";
import { createKmsServer, type KmsServer } from "../server/src/api/kms-server.js";
import { silentLogger } from "../server/src/api/logger.js";
import { markStreamOpened } from "../server/src/api/stream-opened.js";
import { KmsError } from "../server/src/domain/kms-error.js";
import type { Endpoint } from "./support/e2e-clients.js";
import { openNdjson } from "./support/ndjson-client.js";
import { createTestPki, type TestPki } from "./support/pki.js";

let gate: () => void = () => {};
let signalSeen: (reason: unknown) => void = () => {};

const event = (keyId: string) => ({ event: { tenantId: "t", keyId, type: KeyEventType.KEY_REVOKED, cursor: `c-${keyId}` } });

function untilAborted(ctx: HandlerContext): Promise<void> {
  return new Promise((resolve) => {
    if (ctx.signal.aborted) resolve();
    ctx.signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

const keyEvents: Partial<ServiceImpl<typeof KeyEventService>> = {
  async *watchKeyEvents(req, ctx) {
    switch (req.afterCursor) {
      case "two-then-fail":
        yield event("a");
        yield event("b");
        throw new KmsError("EVENT_CURSOR_EXPIRED", "events this stream had not yet delivered were pruned");
      case "fail-first":
        throw new KmsError("INVALID_FIELD", "after_cursor: not a cursor", { field: "after_cursor" });
      case "gated":
        yield event("first");
        await new Promise<void>((resolve) => (gate = resolve));
        yield event("second");
        return;
      case "open-and-wait":
        markStreamOpened(ctx);
        await untilAborted(ctx);
        signalSeen(ctx.signal.reason);
        return;
      case "empty":
        return;
      default:
        throw new Error(`unexpected cursor ${req.afterCursor}`);
    }
  },
};

let pki: TestPki;
let server: KmsServer;
let endpoint: Endpoint;
const path = (cursor: string) => `/api/v1/tenants/t/encryption/events?after_cursor=${cursor}`;

beforeAll(async () => {
  pki = await createTestPki();
  server = await createKmsServer({ services: { keyManagement: {}, dataKey: {}, keyEvents }, tls: pki.serverTls, port: 0, logger: silentLogger });
  endpoint = { url: server.url, ca: pki.caCert };
});

afterAll(async () => {
  await server?.close(100);
  await pki?.cleanup();
});

describe("REST server streaming (application/x-ndjson)", () => {
  it("serves the server-streaming route read from the annotation", () => {
    expect(server.routes.map((r) => `${r.httpMethod} ${r.path} -> ${r.procedure}`)).toContain(
      "GET /api/v1/tenants/{tenant_id}/encryption/events -> matih.kms.v1.KeyEventService/WatchKeyEvents",
    );
  });

  it("writes each message as one proto3-JSON line as it comes, not when the stream ends (HTTP/2 and HTTP/1.1)", async () => {
    for (const http1 of [false, true]) {
      const stream = openNdjson(endpoint, path("gated"), { cert: pki.client }, http1);
      const head = await stream.head;
      expect([head.status, head.headers["content-type"], head.headers["cache-control"]]).toEqual([200, "application/x-ndjson", "no-store"]);
      // The implementation is still waiting at the gate: the first line must already be here.
      expect(await stream.lines.take(1)).toEqual([{ event: { cursor: "c-first", tenantId: "t", keyId: "first", type: "KEY_EVENT_TYPE_KEY_REVOKED" } }]);
      gate();
      expect(await stream.body).toBe(
        '{"event":{"cursor":"c-first","tenantId":"t","keyId":"first","type":"KEY_EVENT_TYPE_KEY_REVOKED"}}\n' +
          '{"event":{"cursor":"c-second","tenantId":"t","keyId":"second","type":"KEY_EVENT_TYPE_KEY_REVOKED"}}\n',
      );
    }
  });

  it("an error before the first message is the usual JSON error body with its status", async () => {
    const stream = openNdjson(endpoint, path("fail-first"), { cert: pki.client });
    const head = await stream.head;
    expect([head.status, head.headers["content-type"]]).toEqual([400, "application/json"]);
    expect(JSON.parse(await stream.body)).toEqual({
      code: "invalid_argument",
      reason: "ERROR_REASON_INVALID_FIELD",
      message: "after_cursor: not a cursor",
      field: "after_cursor",
    });
  });

  it("an error after messages were sent ends the stream with a last line {\"error\": <the JSON error body>}", async () => {
    const stream = openNdjson(endpoint, path("two-then-fail"), { cert: pki.client });
    expect((await stream.head).status).toBe(200);
    const lines = (await stream.body).trimEnd().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((l) => (l["event"] as { keyId?: string } | undefined)?.keyId ?? l["error"])).toEqual([
      "a",
      "b",
      { code: "out_of_range", reason: "ERROR_REASON_EVENT_CURSOR_EXPIRED", message: "events this stream had not yet delivered were pruned" },
    ]);
  });

  it("a stream that ends without a message is a 200 with an empty body", async () => {
    const stream = openNdjson(endpoint, path("empty"), { cert: pki.client });
    expect((await stream.head).status).toBe(200);
    expect(await stream.body).toBe("");
  });

  it("the 200 goes out when the implementation marks the stream open; the client going away aborts the implementation's signal (HTTP/2 and HTTP/1.1)", async () => {
    for (const http1 of [false, true]) {
      const aborted = new Promise<unknown>((resolve) => (signalSeen = resolve));
      const stream = openNdjson(endpoint, path("open-and-wait"), { cert: pki.client }, http1);
      expect((await stream.head).status).toBe(200);
      stream.close();
      await aborted;
    }
  });

  it("server shutdown aborts the signal of a stream still open after the grace period, and the response ends", async () => {
    const aborted = new Promise<unknown>((resolve) => (signalSeen = resolve));
    const stream = openNdjson(endpoint, path("open-and-wait"), { cert: pki.client });
    expect((await stream.head).status).toBe(200);
    await server.close(100);
    await aborted;
    expect(await stream.body).toBe("");
  });
});

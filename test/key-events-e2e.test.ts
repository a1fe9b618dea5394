/**
 * WatchKeyEvents end to end over real sockets: the real server (`startKms`,
 * development mode) on PostgreSQL and PGlite, watched through the Connect gRPC
 * transport, a plain @grpc/grpc-js client, and REST as newline-delimited JSON
 * (HTTP/2 and HTTP/1.1); refusals; resume after a disconnect; expired cursors;
 * streams ending on shutdown. Then two server instances on one PostgreSQL
 * schema: an event written through one reaches a subscriber of the other (the
 * delay from RevokeKey to arrival is printed, not asserted).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { KeyEventService } from "../gen/matih/kms/v1/key_event_service_pb.js";
import { KeyManagementService } from "../gen/matih/kms/v1/key_management_service_pb.js";
import { KeyEventType, type KeyEvent as ProtoKeyEvent } from "../gen/matih/kms/v1/resources_pb.js";
import { loadConfig } from "../server/src/config.js";
import { signDevToken } from "../server/src/dev/dev-token-issuer.js";
import { pruneKeyEvents } from "../server/src/jobs/event-pruning.js";
import { encodeEventCursor } from "../server/src/service/key-event-cursor.js";
import { startKms, type RunningKms } from "../server/src/start-kms.js";
import { latestKeyEventId } from "../server/src/storage/key-event.repository.js";
import { migrateToLatest } from "../server/src/storage/migrations/migrate-to-latest.js";
import { openDatabase, type OpenedDatabase } from "../server/src/storage/open-database.js";
import { issueClientCertificate, PKI_FILE_NAMES } from "../server/src/tls/dev-pki.js";
import { createTestSchema, engines, postgresTestUrl } from "./support/databases.js";
import { connectGrpcTransport, createCapturingLogger, repoRoot, type Endpoint, type TlsIdentity } from "./support/e2e-clients.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { Collected, openNdjson } from "./support/ndjson-client.js";

const eventsPath = (tenantId: string, afterCursor?: string) =>
  `/api/v1/tenants/${tenantId}/encryption/events${afterCursor === undefined ? "" : `?after_cursor=${encodeURIComponent(afterCursor)}`}`;

/** A Connect (gRPC protocol) watch. `outcome`: undefined when the stream ended cleanly or was stopped. */
function connectWatch(client: Client<typeof KeyEventService>, request: { tenantId: string; afterCursor?: string }) {
  const abort = new AbortController();
  const events = new Collected<ProtoKeyEvent>();
  const outcome = (async () => {
    try {
      for await (const response of client.watchKeyEvents(request, { signal: abort.signal })) events.push(response.event!);
      events.end("cleanly");
      return undefined;
    } catch (error) {
      events.end(String(error));
      return abort.signal.aborted ? undefined : ConnectError.from(error);
    }
  })();
  return {
    events,
    outcome,
    async stop() {
      abort.abort();
      await outcome;
    },
  };
}

/** The first message of a stream, or its refusal. */
async function firstMessage(stream: AsyncIterable<unknown>): Promise<unknown> {
  for await (const message of stream) return message;
  return undefined;
}

// grpc-js, from the .proto files.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function grpcJsEventsClient(endpoint: Endpoint, cert: TlsIdentity): any {
  const definition = protoLoader.loadSync(["matih/kms/v1/key_event_service.proto"], {
    includeDirs: [join(repoRoot, "proto"), join(repoRoot, "node_modules/google-proto-files")],
    longs: String,
    enums: String,
    defaults: true,
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(definition) as any;
  const url = new URL(endpoint.url);
  const credentials = grpc.credentials.createSsl(Buffer.from(endpoint.ca), Buffer.from(cert.key), Buffer.from(cert.cert));
  return new pkg.matih.kms.v1.KeyEventService(`${url.hostname}:${url.port}`, credentials);
}

const summary = (e: ProtoKeyEvent) => [e.tenantId, e.keyId, KeyEventType[e.type], e.dekVersion, e.kekVersion];

async function devIdentities(kms: RunningKms): Promise<{ endpoint: Endpoint; admin: TlsIdentity; nonAdmin: TlsIdentity }> {
  const dir = kms.devTlsDir!;
  const read = (name: string) => readFile(join(dir, name), "utf8");
  const [ca, caKey, cert, key] = await Promise.all([
    read(PKI_FILE_NAMES.caCert),
    read(PKI_FILE_NAMES.caKey),
    read(PKI_FILE_NAMES.clientCert),
    read(PKI_FILE_NAMES.clientKey),
  ]);
  const other = await issueClientCertificate({ cert: ca, key: caKey }, { spiffeId: "spiffe://matih.local/orders-service" });
  // In development mode the dev client identity (spiffe://matih.local/dev) is the admin (KMS_ADMIN_SPIFFE_IDS default).
  return { endpoint: { url: kms.server.url, ca }, admin: { cert, key }, nonAdmin: { cert: other.cert, key: other.key } };
}

describe.each(engines)("WatchKeyEvents over a real socket (startKms, development mode) on $name", (engine) => {
  let dataDir: string;
  let database: OpenedDatabase;
  let kms: RunningKms;
  let stopped = false;
  let endpoint: Endpoint;
  let admin: TlsIdentity;
  let nonAdmin: TlsIdentity;
  let keys: Client<typeof KeyManagementService>;
  let events: Client<typeof KeyEventService>;
  const captured = createCapturingLogger();
  const cursorNow = async () => encodeEventCursor(await latestKeyEventId(database.db));

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "kms-events-e2e-"));
    database = await engine.open();
    kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0", KMS_MODE: "development", KMS_EVENT_POLL_INTERVAL_MS: "50" }), {
      database,
      logger: captured.logger,
    });
    ({ endpoint, admin, nonAdmin } = await devIdentities(kms));
    const transport = connectGrpcTransport(endpoint, admin);
    keys = createClient(KeyManagementService, transport);
    events = createClient(KeyEventService, transport);
  });

  afterAll(async () => {
    if (!stopped) await kms?.stop(1_000);
    await database?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it("Connect gRPC: create, KEK+DEK rotation and revocation arrive in commit order", async () => {
    const watch = connectWatch(events, { tenantId: "ev-grpc", afterCursor: await cursorNow() });
    const ids = { tenantId: "ev-grpc", keyId: "k" };
    await keys.createKey(ids);
    await keys.rotateKey({ ...ids, rotateKek: true });
    await keys.rotateKey(ids);
    await keys.revokeKey(ids);
    const received = await watch.events.take(5);
    await watch.stop();
    expect(received.map(summary)).toEqual([
      ["ev-grpc", "k", "KEY_CREATED", 1, 1],
      ["ev-grpc", "k", "KEK_ROTATED", 0, 2],
      ["ev-grpc", "k", "DEK_ROTATED", 2, 2],
      ["ev-grpc", "k", "DEK_ROTATED", 3, 2],
      ["ev-grpc", "k", "KEY_REVOKED", 0, 0],
    ]);
  });

  it("@grpc/grpc-js (from the .proto files): the same events, in order, as a server stream", async () => {
    const client = grpcJsEventsClient(endpoint, admin);
    const received = new Collected<{ tenantId: string; keyId: string; type: string; dekVersion: number; kekVersion: number; cursor: string }>();
    const call = client.watchKeyEvents({ tenantId: "ev-grpcjs", afterCursor: await cursorNow() });
    call.on("data", (response: { event: never }) => received.push(response.event));
    call.on("error", (error: grpc.ServiceError) => received.end(error.code === grpc.status.CANCELLED ? "cancelled" : String(error)));
    try {
      const ids = { tenantId: "ev-grpcjs", keyId: "k" };
      await keys.createKey(ids);
      await keys.rotateKey(ids);
      await keys.revokeKey(ids);
      const got = await received.take(3);
      expect(got.map((e) => [e.tenantId, e.keyId, e.type, e.dekVersion, e.kekVersion])).toEqual([
        ["ev-grpcjs", "k", "KEY_EVENT_TYPE_KEY_CREATED", 1, 1],
        ["ev-grpcjs", "k", "KEY_EVENT_TYPE_DEK_ROTATED", 2, 1],
        ["ev-grpcjs", "k", "KEY_EVENT_TYPE_KEY_REVOKED", 0, 0],
      ]);
      expect(got.every((e) => /^[A-Za-z0-9_-]+$/.test(e.cursor))).toBe(true);
    } finally {
      call.cancel();
      client.close();
    }
  });

  it("REST over HTTP/2 with a tenant token: application/x-ndjson, one proto3-JSON WatchKeyEventsResponse per line, in order", async () => {
    const token = await signDevToken(dataDir, "ev-rest");
    const stream = openNdjson(endpoint, eventsPath("ev-rest", await cursorNow()), { token });
    try {
      const head = await stream.head;
      expect(head.status).toBe(200);
      expect(head.headers["content-type"]).toBe("application/x-ndjson");
      const ids = { tenantId: "ev-rest", keyId: "k" };
      await keys.createKey(ids);
      await keys.rotateKey({ ...ids, rotateKek: true });
      await keys.revokeKey(ids);
      const lines = await stream.lines.take(4);
      expect(lines.map((l) => Object.keys(l))).toEqual([["event"], ["event"], ["event"], ["event"]]);
      const evs = lines.map((l) => l["event"] as Record<string, unknown>);
      expect(evs.map((e) => [e["tenantId"], e["keyId"], e["type"], e["dekVersion"], e["kekVersion"]])).toEqual([
        ["ev-rest", "k", "KEY_EVENT_TYPE_KEY_CREATED", 1, 1],
        ["ev-rest", "k", "KEY_EVENT_TYPE_KEK_ROTATED", undefined, 2],
        ["ev-rest", "k", "KEY_EVENT_TYPE_DEK_ROTATED", 2, 2],
        ["ev-rest", "k", "KEY_EVENT_TYPE_KEY_REVOKED", undefined, undefined],
      ]);
      expect(evs.every((e) => typeof e["cursor"] === "string" && /^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(String(e["time"])))).toBe(true);
    } finally {
      stream.close();
    }
  });

  it("REST over HTTP/1.1 with the client certificate and no cursor: the 200 comes once the watch is in place, before any event; then a revocation arrives", async () => {
    await keys.createKey({ tenantId: "ev-rest1", keyId: "k" });
    const stream = openNdjson(endpoint, eventsPath("ev-rest1"), { cert: admin }, true);
    try {
      expect((await stream.head).status).toBe(200);
      expect(stream.lines.items).toEqual([]);
      await keys.revokeKey({ tenantId: "ev-rest1", keyId: "k" });
      const [line] = await stream.lines.take(1);
      expect(line).toMatchObject({ event: { tenantId: "ev-rest1", keyId: "k", type: "KEY_EVENT_TYPE_KEY_REVOKED" } });
    } finally {
      stream.close();
    }
  });

  it("REST refuses before the first message with the usual JSON error and status: another tenant, '-' with a token or a non-admin certificate, a malformed cursor", async () => {
    const token = await signDevToken(dataDir, "ev-mine");
    const cases: Array<[string, { token?: string; cert?: TlsIdentity }, number, string, string | undefined]> = [
      [eventsPath("ev-theirs"), { token }, 403, "ERROR_REASON_TENANT_FORBIDDEN", "tenant_id"],
      [eventsPath("-"), { token }, 403, "ERROR_REASON_TENANT_FORBIDDEN", "tenant_id"],
      [eventsPath("-"), { cert: nonAdmin }, 403, "ERROR_REASON_ADMIN_REQUIRED", undefined],
      [eventsPath("ev-mine", "bm90LWEtY3Vyc29y"), { token }, 400, "ERROR_REASON_INVALID_FIELD", "after_cursor"],
      [eventsPath("ev-mine") + "?unknown=1", { token }, 400, "ERROR_REASON_INVALID_FIELD", "unknown"],
    ];
    for (const [path, auth, status, reason, field] of cases) {
      const stream = openNdjson(endpoint, path, auth);
      const head = await stream.head;
      const body = JSON.parse(await stream.body) as Record<string, unknown>;
      expect({ path, status: head.status, type: head.headers["content-type"], reason: body["reason"], field: body["field"] }).toEqual({
        path,
        status,
        type: "application/json",
        reason,
        field,
      });
    }
  });

  it("Connect gRPC: a non-admin service identity is refused '-' (ADMIN_REQUIRED); the admin identity gets every tenant's events", async () => {
    const other = createClient(KeyEventService, connectGrpcTransport(endpoint, nonAdmin));
    await expectRefusal(firstMessage(other.watchKeyEvents({ tenantId: "-" })), { code: Code.PermissionDenied, reason: "ADMIN_REQUIRED" });
    const all = connectWatch(events, { tenantId: "-", afterCursor: await cursorNow() });
    await keys.createKey({ tenantId: "ev-all-a", keyId: "k" });
    await keys.createKey({ tenantId: "ev-all-b", keyId: "k" });
    const got = await all.events.take(2);
    await all.stop();
    expect(got.map((e) => e.tenantId)).toEqual(["ev-all-a", "ev-all-b"]);
  });

  it("resumes over a new connection from the last cursor received: nothing lost, nothing repeated", async () => {
    const start = await cursorNow();
    for (let i = 0; i < 4; i++) await keys.createKey({ tenantId: "ev-resume", keyId: `k${i}` });
    const first = connectWatch(events, { tenantId: "ev-resume", afterCursor: start });
    const seen = await first.events.take(2);
    await first.stop();
    for (let i = 4; i < 8; i++) await keys.createKey({ tenantId: "ev-resume", keyId: `k${i}` });
    // A new transport: a new HTTP/2 connection, as after a network failure.
    const again = connectWatch(createClient(KeyEventService, connectGrpcTransport(endpoint, admin)), {
      tenantId: "ev-resume",
      afterCursor: seen[1]!.cursor,
    });
    await keys.createKey({ tenantId: "ev-resume", keyId: "fence" });
    const rest = await again.events.until((e) => e.keyId === "fence");
    await again.stop();
    expect([...seen, ...rest].map((e) => e.keyId)).toEqual(["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "fence"]);
  });

  it("refuses a cursor older than the retained history: EVENT_CURSOR_EXPIRED (OutOfRange over gRPC, 400 over REST)", async () => {
    await keys.createKey({ tenantId: "ev-expired", keyId: "k" });
    const old = encodeEventCursor(0);
    // Thirty days later, the default 7-day retention has removed every event so far.
    await pruneKeyEvents(kms.context, new Date(Date.now() + 30 * 86_400_000));
    await expectRefusal(firstMessage(events.watchKeyEvents({ tenantId: "ev-expired", afterCursor: old })), {
      code: Code.OutOfRange,
      reason: "EVENT_CURSOR_EXPIRED",
      field: "after_cursor",
    });
    const stream = openNdjson(endpoint, eventsPath("ev-expired", old), { cert: admin });
    expect((await stream.head).status).toBe(400);
    expect(JSON.parse(await stream.body)).toMatchObject({ code: "out_of_range", reason: "ERROR_REASON_EVENT_CURSOR_EXPIRED", field: "after_cursor" });
  });

  it("server shutdown ends open streams cleanly (gRPC: OK status; REST: the response ends) without waiting out the grace period", async () => {
    const grpcWatch = connectWatch(events, { tenantId: "ev-stop" });
    const restWatch = openNdjson(endpoint, eventsPath("ev-stop"), { cert: admin });
    expect((await restWatch.head).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200)); // let the gRPC watch reach the server
    stopped = true;
    // A grace period far beyond the test's timeout: stop() only returns in time if the streams end by themselves.
    await kms.stop(600_000);
    expect(await grpcWatch.outcome).toBeUndefined();
    expect(await restWatch.body).toBe("");
  });
});

// ---------------------------------------------------------------------------
// Two replicas on one PostgreSQL
// ---------------------------------------------------------------------------

describe.skipIf(!engines.some((e) => e.name === "postgres"))("two server instances on one PostgreSQL schema", () => {
  let schema: string;
  let dataDir: string;
  let dbA: OpenedDatabase;
  let dbB: OpenedDatabase;
  let kmsA: RunningKms;
  let kmsB: RunningKms;
  let stoppedA = false;

  beforeAll(async () => {
    schema = await createTestSchema();
    dbA = await openDatabase({ databaseUrl: postgresTestUrl, schema, poolSize: 5 });
    await migrateToLatest(dbA.db);
    dbB = await openDatabase({ databaseUrl: postgresTestUrl, schema, poolSize: 5 });
    // One data directory: both replicas share the master key file and the development PKI, as replicas share secrets.
    dataDir = await mkdtemp(join(tmpdir(), "kms-events-replicas-"));
    const config = loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0", KMS_MODE: "development" }); // default poll interval
    kmsA = await startKms(config, { database: dbA, logger: createCapturingLogger().logger });
    kmsB = await startKms(config, { database: dbB, logger: createCapturingLogger().logger });
  });

  afterAll(async () => {
    if (!stoppedA) await kmsA?.stop(1_000);
    await kmsB?.stop(1_000);
    await dbA?.close();
    await dbB?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it("an event written through one instance reaches a subscriber of the other, and back; RevokeKey-to-arrival delay printed", async () => {
    const a = await devIdentities(kmsA);
    const b = await devIdentities(kmsB);
    const keysA = createClient(KeyManagementService, connectGrpcTransport(a.endpoint, a.admin));
    const keysB = createClient(KeyManagementService, connectGrpcTransport(b.endpoint, b.admin));
    const start = encodeEventCursor(await latestKeyEventId(dbA.db));
    const onB = connectWatch(createClient(KeyEventService, connectGrpcTransport(b.endpoint, b.admin)), { tenantId: "replicas", afterCursor: start });
    const onA = connectWatch(createClient(KeyEventService, connectGrpcTransport(a.endpoint, a.admin)), { tenantId: "replicas", afterCursor: start });

    const samples: Array<{ fromCall: number; fromResponse: number }> = [];
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      const ids = { tenantId: "replicas", keyId: `k${i}` };
      await keysA.createKey(ids);
      await onB.events.until((e) => e.keyId === ids.keyId && e.type === KeyEventType.KEY_CREATED);
      // Arriving just after a poll would phase-lock every sample to the worst case: start anywhere in the interval.
      await new Promise((r) => setTimeout(r, Math.random() * 150));
      const called = performance.now();
      await keysA.revokeKey(ids);
      const answered = performance.now();
      await onB.events.until((e) => e.keyId === ids.keyId && e.type === KeyEventType.KEY_REVOKED);
      const arrived = performance.now();
      samples.push({ fromCall: arrived - called, fromResponse: arrived - answered });
    }
    // And the other way round: written through B, seen on A.
    await keysB.createKey({ tenantId: "replicas", keyId: "via-b" });
    const onAEvents = await onA.events.until((e) => e.keyId === "via-b");
    const onBEvents = await onB.events.until((e) => e.keyId === "via-b");
    await Promise.all([onA.stop(), onB.stop()]);

    // Both subscribers saw the same history, in the same order, once.
    expect(onAEvents.map((e) => e.cursor)).toEqual(onBEvents.map((e) => e.cursor));
    expect(onBEvents.map((e) => `${e.keyId}:${KeyEventType[e.type]}`)).toEqual([
      ...Array.from({ length: rounds }, (_, i) => [`k${i}:KEY_CREATED`, `k${i}:KEY_REVOKED`]).flat(),
      "via-b:KEY_CREATED",
    ]);

    const stats = (values: number[]) => {
      const sorted = [...values].sort((x, y) => x - y);
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(1);
      return `median ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${sorted[sorted.length - 1]!.toFixed(1)} ms`;
    };
    console.log(
      `[key events] RevokeKey on instance A → event on a subscriber of instance B (poll interval 150 ms, ${rounds} samples): ` +
        `from the call ${stats(samples.map((s) => s.fromCall))}; from the response ${stats(samples.map((s) => s.fromResponse))}`,
    );
  });

  it("stopping one instance ends its subscribers' streams cleanly; the other instance keeps serving its own", async () => {
    const a = await devIdentities(kmsA);
    const b = await devIdentities(kmsB);
    const onA = connectWatch(createClient(KeyEventService, connectGrpcTransport(a.endpoint, a.admin)), { tenantId: "replicas-stop" });
    const start = encodeEventCursor(await latestKeyEventId(dbB.db));
    const onB = connectWatch(createClient(KeyEventService, connectGrpcTransport(b.endpoint, b.admin)), { tenantId: "replicas-stop", afterCursor: start });
    await new Promise((r) => setTimeout(r, 200)); // let both watches reach their servers
    stoppedA = true;
    await kmsA.stop(600_000);
    expect(await onA.outcome).toBeUndefined();
    const keysB = createClient(KeyManagementService, connectGrpcTransport(b.endpoint, b.admin));
    await keysB.createKey({ tenantId: "replicas-stop", keyId: "after-a-stopped" });
    const [event] = await onB.events.take(1);
    await onB.stop();
    expect(event?.keyId).toBe("after-a-stopped");
  });
});

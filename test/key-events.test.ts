/**
 * WatchKeyEvents through the service implementation (Connect clients over the
 * in-process router transport, through the real RPC guard), on PostgreSQL and
 * PGlite: order, tenant scoping, the privileged "-" stream, cursors (resume,
 * malformed, expired), pruning, slow consumers and shutdown. The real-socket
 * transports (Connect gRPC, grpc-js, REST NDJSON) and two server instances on
 * one database are in key-events-e2e.test.ts.
 */
import type { KyselyPlugin } from "kysely";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { KeyEventService } from "../gen/matih/kms/v1/key_event_service_pb.js";
import { KeyEventType, type KeyEvent as ProtoKeyEvent } from "../gen/matih/kms/v1/resources_pb.js";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { KeyEvent } from "../server/src/domain/key-event.js";
import { loadConfig } from "../server/src/config.js";
import { pruneKeyEvents } from "../server/src/jobs/event-pruning.js";
import { periodicTasks } from "../server/src/jobs/periodic-tasks.js";
import { decodeEventCursor, encodeEventCursor } from "../server/src/service/key-event-cursor.js";
import { createKeyEventFeed } from "../server/src/service/key-event-feed.js";
import { watchKeyEvents } from "../server/src/service/key-event-watch.js";
import { appendKeyEvent, deleteKeyEventsBefore, latestKeyEventId } from "../server/src/storage/key-event.repository.js";
import { engines, openEngineDatabase } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { ADMIN_CALLER, SERVICE_CALLER, createTestKms, tenantCaller, type TestKms } from "./support/kms-harness.js";

const DAY_MS = 86_400_000;

interface Watch {
  readonly received: ProtoKeyEvent[];
  /** The first `count` events, waiting for them (fails when the stream ends first or after 15 s). */
  take(count: number): Promise<ProtoKeyEvent[]>;
  /** Events up to and including the first one for which `last` holds. */
  until(last: (event: ProtoKeyEvent) => boolean): Promise<ProtoKeyEvent[]>;
  /** How the stream ended: undefined when it ended cleanly (or was stopped), else the error. */
  readonly outcome: Promise<ConnectError | undefined>;
  /** Cancels the call (the client goes away) and waits for the stream to finish. */
  stop(): Promise<void>;
}

function openWatch(events: Client<typeof KeyEventService>, request: { tenantId: string; afterCursor?: string }): Watch {
  const abort = new AbortController();
  const received: ProtoKeyEvent[] = [];
  let changed: () => void = () => {};
  let ended = false;
  const outcome = (async () => {
    try {
      for await (const response of events.watchKeyEvents(request, { signal: abort.signal })) {
        received.push(response.event!);
        changed();
      }
      return undefined;
    } catch (error) {
      if (abort.signal.aborted) return undefined;
      return ConnectError.from(error);
    } finally {
      ended = true;
      changed();
    }
  })();
  async function waitUntil(done: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (!done()) {
      if (ended) throw new Error(`the stream ended (${String(await outcome)}) before ${what}; got ${received.length} events`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no ${what} within 15 s; got ${received.length} events`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
  return {
    received,
    async take(count) {
      await waitUntil(() => received.length >= count, `${count} events`);
      return received.slice(0, count);
    },
    async until(last) {
      await waitUntil(() => received.some(last), "the awaited event");
      return received.slice(0, received.findIndex(last) + 1);
    },
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

const summary = (e: ProtoKeyEvent) => [e.tenantId, e.keyId, KeyEventType[e.type], e.dekVersion, e.kekVersion];

describe.each(engines)("WatchKeyEvents (service) on $name", (engine) => {
  let kms: TestKms;
  let cursorNow: () => Promise<string>;

  beforeAll(async () => {
    // Small pages, so catch-up and the poller's backlog go through several queries.
    kms = await createTestKms(engine, { eventBatchSize: 4 });
    cursorNow = async () => encodeEventCursor(await latestKeyEventId(kms.database.db));
  });
  afterAll(async () => {
    await kms?.close();
  });

  it("delivers create, KEK rotation, DEK rotation and revocation of a key in commit order, with versions, times and increasing cursors", async () => {
    const { keys, events } = kms.clients();
    const watch = openWatch(events, { tenantId: "order-t", afterCursor: await cursorNow() });
    const ids = { tenantId: "order-t", keyId: "k1" };
    await keys.createKey(ids);
    await keys.rotateKey({ ...ids, rotateKek: true });
    await keys.revokeKey(ids);
    const received = await watch.take(4);
    await watch.stop();
    expect(received.map(summary)).toEqual([
      ["order-t", "k1", "KEY_CREATED", 1, 1],
      ["order-t", "k1", "KEK_ROTATED", 0, 2],
      ["order-t", "k1", "DEK_ROTATED", 2, 2],
      ["order-t", "k1", "KEY_REVOKED", 0, 0],
    ]);
    const ids2 = received.map((e) => decodeEventCursor(e.cursor));
    expect(ids2).toEqual([...ids2].sort((a, b) => a - b));
    expect(new Set(ids2).size).toBe(4);
    for (const event of received) expect(timestampDate(event.time!)).toEqual(kms.clock.now());
  });

  it("an empty cursor starts from now: events committed before the watch are not replayed, later ones are delivered", async () => {
    const { keys, events } = kms.clients();
    await keys.createKey({ tenantId: "now-t", keyId: "before" });
    const watch = openWatch(events, { tenantId: "now-t" });
    await vi.waitFor(() => expect(kms.keyEvents.feed.subscriberCount).toBe(1));
    await keys.createKey({ tenantId: "now-t", keyId: "after" });
    const [first] = await watch.take(1);
    await watch.stop();
    expect(summary(first!)).toEqual(["now-t", "after", "KEY_CREATED", 1, 1]);
  });

  it("a tenant's stream carries only its own events; '-' (the admin identity) carries every tenant's, interleaved in commit order", async () => {
    const { keys } = kms.clients();
    const start = await cursorNow();
    const mine = openWatch(kms.clients(tenantCaller("scope-a")).events, { tenantId: "scope-a", afterCursor: start });
    const all = openWatch(kms.clients(ADMIN_CALLER).events, { tenantId: "-", afterCursor: start });
    await keys.createKey({ tenantId: "scope-a", keyId: "a1" });
    await keys.createKey({ tenantId: "scope-b", keyId: "b1" });
    await keys.revokeKey({ tenantId: "scope-a", keyId: "a1" });
    await keys.createKey({ tenantId: "scope-a", keyId: "fence" });
    const own = await mine.until((e) => e.keyId === "fence");
    const every = await all.until((e) => e.keyId === "fence");
    await Promise.all([mine.stop(), all.stop()]);
    expect(own.map(summary)).toEqual([
      ["scope-a", "a1", "KEY_CREATED", 1, 1],
      ["scope-a", "a1", "KEY_REVOKED", 0, 0],
      ["scope-a", "fence", "KEY_CREATED", 1, 1],
    ]);
    expect(every.map(summary)).toEqual([
      ["scope-a", "a1", "KEY_CREATED", 1, 1],
      ["scope-b", "b1", "KEY_CREATED", 1, 1],
      ["scope-a", "a1", "KEY_REVOKED", 0, 0],
      ["scope-a", "fence", "KEY_CREATED", 1, 1],
    ]);
    // The same event has the same cursor in every stream.
    expect(own.map((e) => e.cursor)).toEqual([every[0]!.cursor, every[2]!.cursor, every[3]!.cursor]);
  });

  it("refuses a tenant caller watching another tenant or '-' (TENANT_FORBIDDEN), a non-admin service identity watching '-' (ADMIN_REQUIRED), and a malformed tenant id", async () => {
    const tenant = kms.clients(tenantCaller("acme")).events;
    await expectRefusal(firstMessage(tenant.watchKeyEvents({ tenantId: "other" })), { code: Code.PermissionDenied, reason: "TENANT_FORBIDDEN" });
    await expectRefusal(firstMessage(tenant.watchKeyEvents({ tenantId: "-" })), { code: Code.PermissionDenied, reason: "TENANT_FORBIDDEN" });
    // Its own tenant is fine.
    const own = openWatch(tenant, { tenantId: "acme" });
    await vi.waitFor(() => expect(kms.keyEvents.feed.subscriberCount).toBe(1));
    await own.stop();
    await vi.waitFor(() => expect(kms.keyEvents.feed.subscriberCount).toBe(0));
    await expectRefusal(firstMessage(kms.clients(SERVICE_CALLER).events.watchKeyEvents({ tenantId: "-" })), {
      code: Code.PermissionDenied,
      reason: "ADMIN_REQUIRED",
    });
    await expectRefusal(firstMessage(kms.clients(SERVICE_CALLER).events.watchKeyEvents({ tenantId: "no spaces" })), {
      code: Code.InvalidArgument,
      reason: "INVALID_FIELD",
      field: "tenant_id",
    });
    expect(kms.keyEvents.feed.subscriberCount).toBe(0);
  });

  it("refuses malformed cursors with INVALID_FIELD after_cursor", async () => {
    const { events } = kms.clients();
    const valid = encodeEventCursor(1);
    const raw = Buffer.from(valid, "base64url");
    const withFormat = (format: number) => Buffer.from([format, ...raw.subarray(1)]).toString("base64url");
    const malformed = [
      "not a cursor",
      "1",
      valid.slice(0, -1),
      `${valid}A`,
      `${valid}=`,
      Buffer.from(raw).toString("base64").replace(/[A-Za-z0-9]$/, "+"), // standard alphabet
      withFormat(0x02),
      withFormat(0x00),
      Buffer.from([0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).toString("base64url"), // beyond 2^53
      "x".repeat(200),
    ];
    for (const afterCursor of malformed) {
      await expectRefusal(firstMessage(events.watchKeyEvents({ tenantId: "acme", afterCursor })), {
        code: Code.InvalidArgument,
        reason: "INVALID_FIELD",
        field: "after_cursor",
      });
    }
    expect(kms.keyEvents.feed.subscriberCount).toBe(0);
  });

  it("resumes after a disconnect from the last cursor received: every later event exactly once, in order, across several pages", async () => {
    const { keys, events } = kms.clients();
    const start = await cursorNow();
    for (let i = 0; i < 5; i++) await keys.createKey({ tenantId: "resume-t", keyId: `k${i}` });
    const first = openWatch(events, { tenantId: "resume-t", afterCursor: start });
    const seen = await first.take(3);
    await first.stop();
    // While disconnected: more events of this tenant, interleaved with another tenant's.
    for (let i = 5; i < 14; i++) {
      await keys.createKey({ tenantId: "resume-t", keyId: `k${i}` });
      await keys.createKey({ tenantId: "resume-other", keyId: `o${i}` });
    }
    const second = openWatch(events, { tenantId: "resume-t", afterCursor: seen[2]!.cursor });
    await keys.createKey({ tenantId: "resume-t", keyId: "fence" });
    const rest = await second.until((e) => e.keyId === "fence");
    await second.stop();
    expect([...seen, ...rest].map((e) => e.keyId)).toEqual([...Array.from({ length: 14 }, (_, i) => `k${i}`), "fence"]);
  });

  it("a consumer that does not read falls back from the live fan-out to reading pages, and still gets every event once, in order", async () => {
    const feed = createKeyEventFeed(kms.database.db, { pollIntervalMs: 5, batchSize: 3, maxQueuedEvents: 2 });
    try {
      const start = await latestKeyEventId(kms.database.db);
      const subscription = feed.subscribe({ tenantId: "slow-t", afterEventId: start });
      const signal = new AbortController().signal;
      // Turn the subscription live (it has nothing to catch up), then stop reading.
      const firstRead = subscription.next(signal);
      await new Promise((r) => setTimeout(r, 50));
      const { keys } = kms.clients();
      for (let i = 0; i < 12; i++) await keys.createKey({ tenantId: "slow-t", keyId: `s${i}` });
      // Let the poller overrun the queue (2) while nobody reads.
      await new Promise((r) => setTimeout(r, 100));
      await keys.createKey({ tenantId: "slow-t", keyId: "fence" });
      const got: KeyEvent[] = [...((await firstRead) ?? [])];
      while (!got.some((e) => e.keyId === "fence")) got.push(...((await subscription.next(signal)) ?? []));
      subscription.close();
      expect(got.map((e) => e.keyId)).toEqual([...Array.from({ length: 12 }, (_, i) => `s${i}`), "fence"]);
      expect(got.map((e) => e.eventId)).toEqual(got.map((e) => e.eventId).sort((a, b) => a - b));
    } finally {
      feed.close();
    }
  });

  it("a client going away ends its subscription on the server", async () => {
    const watch = openWatch(kms.clients().events, { tenantId: "gone-t" });
    await vi.waitFor(() => expect(kms.keyEvents.feed.subscriberCount).toBe(1));
    await watch.stop();
    await vi.waitFor(() => expect(kms.keyEvents.feed.subscriberCount).toBe(0));
  });

  it("closing the feed (server shutdown) ends open streams cleanly, and later watches are refused SHUTTING_DOWN", async () => {
    const feed = createKeyEventFeed(kms.database.db, { pollIntervalMs: 5 });
    const stream = watchKeyEvents(kms.context, feed, { tenantId: "shutdown-t", afterCursor: "" }, new AbortController().signal);
    const pending = stream.next();
    await vi.waitFor(() => expect(feed.subscriberCount).toBe(1));
    feed.close();
    await expect(pending).resolves.toEqual({ done: true, value: undefined });
    expect(feed.subscriberCount).toBe(0);
    const later = watchKeyEvents(kms.context, feed, { tenantId: "shutdown-t", afterCursor: "" }, new AbortController().signal);
    await expect(later.next()).rejects.toMatchObject({ reason: "SHUTTING_DOWN" });
  });

  describe("retention", () => {
    it("pruneKeyEvents deletes the events older than the retention, oldest first, and keeps the rest", async () => {
      const { keys } = kms.clients();
      await keys.createKey({ tenantId: "prune-t", keyId: "old" });
      const oldId = await latestKeyEventId(kms.database.db);
      kms.clock.advanceDays(8);
      await keys.createKey({ tenantId: "prune-t", keyId: "new" });
      const newId = await latestKeyEventId(kms.database.db);
      await pruneKeyEvents(kms.context, kms.clock.now()); // default retention: 7 days
      const kept = await kms.database.db.selectFrom("key_events").select(["event_id", "key_id"]).orderBy("event_id").execute();
      expect(kept.map((r) => Number(r.event_id))).toEqual([newId]);
      expect(kept.map((r) => r.key_id)).toEqual(["new"]);
      expect(newId).toBe(oldId + 1);
      // Nothing older than the cutoff is left, so a second run deletes nothing.
      expect(await deleteKeyEventsBefore(kms.database.db, new Date(kms.clock.now().getTime() - 7 * DAY_MS))).toBe(0);
    });

    it("runs as the server's periodic 'event-pruning' task with the configured retention (KMS_EVENT_RETENTION_DAYS)", async () => {
      const { keys } = kms.clients();
      await keys.createKey({ tenantId: "task-t", keyId: "four-days-old" });
      kms.clock.advanceDays(4);
      await keys.createKey({ tenantId: "task-t", keyId: "fresh" });
      const task = periodicTasks({ rootKeyRotationDays: 0, eventRetentionDays: 3 }).find((t) => t.name === "event-pruning");
      expect(task).toBeDefined();
      await task!.run(kms.context, kms.clock.now());
      const kept = await kms.database.db.selectFrom("key_events").select("key_id").where("tenant_id", "=", "task-t").execute();
      expect(kept.map((r) => r.key_id)).toEqual(["fresh"]);
    });

    it("deletes only a prefix of the history in id order, even when an event's time is older than an earlier one's", async () => {
      const db = kms.database.db;
      const now = kms.clock.now();
      const base = await latestKeyEventId(db);
      // A replica with a slow clock committed the second event with an older time than the first.
      await db.transaction().execute((tx) => appendKeyEvent(tx, { tenantId: "skew-t", keyId: "a", type: "KEY_CREATED", time: new Date(now.getTime() - 1 * DAY_MS) }));
      await db.transaction().execute((tx) => appendKeyEvent(tx, { tenantId: "skew-t", keyId: "b", type: "KEY_CREATED", time: new Date(now.getTime() - 30 * DAY_MS) }));
      await db.transaction().execute((tx) => appendKeyEvent(tx, { tenantId: "skew-t", keyId: "c", type: "KEY_CREATED", time: now }));
      await pruneKeyEvents(kms.context, now, { retentionDays: 7 });
      const kept = await db.selectFrom("key_events").select("event_id").where("event_id", ">", base).orderBy("event_id").execute();
      // "b" is older than the cutoff but comes after "a", which is kept: deleting it would leave a hole.
      expect(kept.map((r) => Number(r.event_id))).toEqual([base + 1, base + 2, base + 3]);
    });

    it("refuses a cursor older than the retained history with EVENT_CURSOR_EXPIRED, accepts the last pruned one, and refuses one beyond the newest event", async () => {
      const { keys, events } = kms.clients();
      await keys.createKey({ tenantId: "expire-t", keyId: "gone" });
      const goneId = await latestKeyEventId(kms.database.db);
      kms.clock.advanceDays(10);
      await keys.createKey({ tenantId: "expire-t", keyId: "kept" });
      await pruneKeyEvents(kms.context, kms.clock.now());

      await expectRefusal(firstMessage(events.watchKeyEvents({ tenantId: "expire-t", afterCursor: encodeEventCursor(goneId - 1) })), {
        code: Code.OutOfRange,
        reason: "EVENT_CURSOR_EXPIRED",
        field: "after_cursor",
      });
      await expectRefusal(firstMessage(events.watchKeyEvents({ tenantId: "expire-t", afterCursor: encodeEventCursor(0) })), {
        code: Code.OutOfRange,
        reason: "EVENT_CURSOR_EXPIRED",
      });
      const beyond = (await latestKeyEventId(kms.database.db)) + 1;
      await expectRefusal(firstMessage(events.watchKeyEvents({ tenantId: "expire-t", afterCursor: encodeEventCursor(beyond) })), {
        code: Code.OutOfRange,
        reason: "EVENT_CURSOR_EXPIRED",
        field: "after_cursor",
      });
      // The cursor of the last pruned event: nothing after it is missing.
      const watch = openWatch(events, { tenantId: "expire-t", afterCursor: encodeEventCursor(goneId) });
      const [first] = await watch.take(1);
      await watch.stop();
      expect(first?.keyId).toBe("kept");
    });

    it("a subscriber whose unread history is pruned under it gets EVENT_CURSOR_EXPIRED, never a silent gap", async () => {
      const db = kms.database.db;
      const feed = createKeyEventFeed(db, { pollIntervalMs: 5, batchSize: 2 });
      try {
        const start = await latestKeyEventId(db);
        const { keys } = kms.clients();
        for (let i = 0; i < 6; i++) await keys.createKey({ tenantId: "lag-t", keyId: `l${i}` });
        const stream = watchKeyEvents(kms.context, feed, { tenantId: "lag-t", afterCursor: encodeEventCursor(start) }, new AbortController().signal);
        const first = await stream.next();
        expect((first.value as KeyEvent).keyId).toBe("l0");
        kms.clock.advanceDays(30);
        await pruneKeyEvents(kms.context, kms.clock.now());
        const got: string[] = [];
        const failure = await (async () => {
          for (;;) {
            const next = await stream.next();
            if (next.done === true) return undefined;
            got.push((next.value as KeyEvent).keyId);
          }
        })().catch((error: unknown) => error);
        expect(failure).toMatchObject({ reason: "EVENT_CURSOR_EXPIRED" });
        // What did arrive is the start of the history, in order (the page already read).
        expect(got).toEqual(["l1"]);
      } finally {
        feed.close();
      }
    });
  });
});

describe.skipIf(!engines.some((engine) => engine.name === "postgres"))("key event retention beside concurrent writers (PostgreSQL)", () => {
  it("never deletes an event committed while the pruning runs, when every event stored before was older than the cutoff", async () => {
    const database = await openEngineDatabase("postgres");
    try {
      const db = database.db;
      const now = new Date();
      for (const keyId of ["a", "b"]) {
        await db.transaction().execute((tx) => appendKeyEvent(tx, { tenantId: "race-t", keyId, type: "KEY_CREATED", time: new Date(now.getTime() - 30 * DAY_MS) }));
      }
      // Another replica commits a fresh event right after the pruning's first statement has read.
      let fresh: number | undefined;
      const interleaving: KyselyPlugin = {
        transformQuery: (args) => args.node,
        async transformResult(args) {
          fresh ??= await db.transaction().execute((tx) => appendKeyEvent(tx, { tenantId: "race-t", keyId: "fresh", type: "KEY_CREATED", time: now }));
          return args.result;
        },
      };
      expect(await deleteKeyEventsBefore(db.withPlugin(interleaving), new Date(now.getTime() - 7 * DAY_MS))).toBe(2);
      const kept = await db.selectFrom("key_events").select(["event_id", "key_id"]).execute();
      expect(kept.map((row) => [Number(row.event_id), row.key_id])).toEqual([[fresh, "fresh"]]);
    } finally {
      await database.close();
    }
  });
});

describe("key event configuration", () => {
  it("KMS_EVENT_POLL_INTERVAL_MS defaults to 150 ms and KMS_EVENT_RETENTION_DAYS to 7; out-of-range values stop start-up naming the variable", () => {
    const config = loadConfig({});
    expect([config.eventPollIntervalMs, config.eventRetentionDays]).toEqual([150, 7]);
    expect(loadConfig({ KMS_EVENT_POLL_INTERVAL_MS: "40", KMS_EVENT_RETENTION_DAYS: "30" })).toMatchObject({ eventPollIntervalMs: 40, eventRetentionDays: 30 });
    expect(() => loadConfig({ KMS_EVENT_POLL_INTERVAL_MS: "0" })).toThrow(/KMS_EVENT_POLL_INTERVAL_MS/);
    expect(() => loadConfig({ KMS_EVENT_RETENTION_DAYS: "0" })).toThrow(/KMS_EVENT_RETENTION_DAYS/);
  });
});

/**
 * A PostgreSQL replica's hot-path lease (docs/decisions/0008-hot-path-leases.md):
 * while it runs, the replica serves rows it keeps without asking the database,
 * because every writer waits, after its commit, until this replica has
 * applied what the commit made stale (or until the lease ran out).
 *
 * One dedicated connection LISTENs on the schema's channel
 * (migration 20251129190000) and applies, in commit order:
 * - `g <generation> <tenant>`: rows of that tenant kept at a lower generation
 *   are stale (the floor below);
 * - `all`: every kept row is stale (a truncate);
 * - `sync <n> <nonce>`: a writer's ping. All that committed before it has been
 *   applied by now, so the replica acknowledges it, which also renews the
 *   lease. Only a ping recorded in hot_path_pings with that nonce counts (any
 *   role may NOTIFY; a forged one is ignored), and the time it was taken comes
 *   from there too.
 *
 * How long the replica trusts: until `leaseMs - margin` after the *ping* was
 * taken (its age is measured by the database when the acknowledgement runs),
 * by the monotonic clock and by the wall clock both, whichever ends first. A
 * listener that falls behind therefore loses its trust instead of keeping it
 * alive on old pings, and after any commit a writer knows that within one
 * lease every trusting replica has acknowledged a ping taken after it. The
 * database's expiry counts from the same ping time plus the whole lease, so
 * it is always later than the replica's own. A lease that ran out is never
 * renewed: the replica registers anew under a new id and starts a new epoch,
 * in which nothing kept before counts. Losing the connection ends trust at
 * once; a connection that stops answering is given up after one more lease.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type pg from "pg";

export interface HotPathLease {
  /** True while kept rows may be served without a statement. */
  trusted(): boolean;
  /** Changes whenever every kept row must be dropped: a new registration or a truncate. */
  epoch(): number;
  /** A row of `tenantId` kept at a generation below this is stale. */
  floor(tenantId: string): number;
  /** Its row in hot_path_replicas; "" while not registered. */
  replicaId(): string;
  /** Stops trusting, leaves the registry (so writers stop waiting for it) and closes the connection. */
  stop(): Promise<void>;
}

export interface HotPathLeaseOptions {
  /** A new, unconnected client for the same database, user and search_path as the pool. */
  readonly newClient: () => pg.Client;
  /** How long an acknowledged ping keeps the lease running, counted from when the ping was taken. */
  readonly leaseMs: number;
  /** Told when the connection fails or the lease ran out; the lease recovers by itself. */
  readonly onTrouble?: ((message: string, error?: unknown) => void) | undefined;
}

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;
/** Rows of replicas whose lease ended this long ago are removed by the next registration. */
const FORGET_AFTER = "1 hour";
const CHANNEL = /^matih_kms_hot_path_[0-9a-f]{16}$/;
const LEAVE_REGISTRY = "delete from hot_path_replicas where replica_id = any($1::text[])";
const PING = /^sync (\d{1,18}) ([0-9a-f-]{36})$/;
/** Pings heard and not yet acknowledged, kept for the next acknowledgement; the lowest go first when full. */
const MAX_HEARD_PINGS = 64;

class Stopped extends Error {}

export async function startHotPathLease(options: HotPathLeaseOptions): Promise<HotPathLease> {
  const { leaseMs } = options;
  // Room for clock-rate differences between this process and the database.
  const marginMs = Math.min(1_000, Math.max(50, Math.floor(leaseMs / 4)));
  const renewEveryMs = Math.max(25, Math.floor((leaseMs - marginMs) / 3));

  let epoch = 0;
  const floors = new Map<string, number>();
  let trustedUntil = 0; // performance.now() scale
  let trustedUntilWall = 0; // Date.now() scale: the monotonic clock stands still while a VM is paused
  let client: pg.Client | undefined;
  let replicaId = "";
  /** Registrations of this lease that may still be in the registry; removed by the next registration and by stop(). */
  const registered = new Set<string>();
  let stopped = false;
  let connecting: Promise<void> | undefined;
  let connectingClient: pg.Client | undefined;
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer: NodeJS.Timeout | undefined;
  // One acknowledgement in flight per connection; pings heard meanwhile are merged into the highest recorded one.
  // Several nonces per number: a forged notification for a number must not crowd out the real one.
  const heardPings = new Map<number, string[]>();
  let acknowledgingOn: pg.Client | undefined;
  let lastAckSentAt = 0;
  let registeredAt = 0;

  const dropEverything = (): void => {
    epoch += 1;
    floors.clear();
  };

  /** No current connection: nothing kept may be served without a statement, and nothing kept so far counts again. */
  const unregister = (): void => {
    client = undefined;
    replicaId = "";
    trustedUntil = 0;
    trustedUntilWall = 0;
    dropEverything();
  };

  const lose = (from: pg.Client, message: string, error?: unknown): void => {
    if (from !== client) return;
    unregister();
    detach(from);
    void from.end().catch(() => {});
    if (stopped) return;
    options.onTrouble?.(message, error);
    scheduleReconnect();
  };

  const scheduleReconnect = (): void => {
    if (stopped || reconnectTimer !== undefined) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      connecting = connect().then(
        () => {
          reconnectDelay = RECONNECT_MIN_MS;
        },
        (error: unknown) => {
          if (stopped) return;
          options.onTrouble?.("hot-path lease: cannot register; serving every call from the database meanwhile", error);
          reconnectDelay = Math.min(RECONNECT_MAX_MS, reconnectDelay * 2);
          scheduleReconnect();
        },
      );
    }, reconnectDelay);
    reconnectTimer.unref();
  };

  const acknowledge = (from: pg.Client): void => {
    if (acknowledgingOn === from || heardPings.size === 0 || from !== client || replicaId === "") return;
    const ping = Math.max(...heardPings.keys());
    const nonces = heardPings.get(ping)!;
    heardPings.delete(ping);
    acknowledgingOn = from;
    const sentAt = performance.now();
    const sentAtWall = Date.now();
    lastAckSentAt = sentAt;
    inOrder(
      from,
      `with ping as (select n, taken_at from hot_path_pings where n = $2::bigint and nonce = any($4::uuid[])),
       renewed as (
         update hot_path_replicas as r
            set acked_through = greatest(r.acked_through, ping.n),
                lease_expires_at = greatest(r.lease_expires_at, ping.taken_at + $3::integer * interval '1 millisecond')
           from ping
          where r.replica_id = $1 and r.lease_expires_at > clock_timestamp()
          returning extract(epoch from clock_timestamp() - ping.taken_at) * 1000 as age_ms)
       select (select count(*) from ping)::int as recorded, (select age_ms from renewed) as age_ms`,
      [replicaId, ping, leaseMs, nonces],
    ).then(
      (result) => {
        if (acknowledgingOn === from) acknowledgingOn = undefined;
        if (from !== client) {
          // Settled after a reconnect: the current connection may have pings waiting for this one.
          if (client !== undefined) acknowledge(client);
          return;
        }
        const row = result.rows[0] as { recorded: number; age_ms: number | string | null } | undefined;
        if (row === undefined || row.recorded === 0) {
          // Not a ping any writer took (forged, or pruned long ago): it acknowledges nothing.
          acknowledge(from);
          return;
        }
        if (row.age_ms === null) {
          // Writers may already have passed over this replica: what it keeps may be stale.
          lose(from, "hot-path lease ran out before it was renewed; registering anew");
          return;
        }
        // Trust counts from the ping, not from now: an old ping renews little or nothing.
        const ageMs = Math.max(0, Number(row.age_ms));
        trustedUntil = Math.max(trustedUntil, sentAt + leaseMs - marginMs - ageMs);
        trustedUntilWall = Math.max(trustedUntilWall, sentAtWall + leaseMs - marginMs - ageMs);
        acknowledge(from);
      },
      (error: unknown) => {
        if (acknowledgingOn === from) acknowledgingOn = undefined;
        lose(from, "hot-path lease: acknowledging a ping failed", error);
      },
    );
  };

  const onNotification = (from: pg.Client, message: pg.Notification): void => {
    if (from !== client || message.payload === undefined) return;
    const payload = message.payload;
    if (payload.startsWith("g ")) {
      const space = payload.indexOf(" ", 2);
      const generation = Number(payload.slice(2, space));
      const tenantId = payload.slice(space + 1);
      if ((floors.get(tenantId) ?? 0) < generation) floors.set(tenantId, generation);
    } else if (payload === "all") {
      dropEverything();
    } else {
      const ping = PING.exec(payload);
      if (ping === null) return;
      const n = Number(ping[1]);
      const nonces = heardPings.get(n) ?? [];
      if (nonces.length < 4) nonces.push(ping[2]!);
      heardPings.set(n, nonces);
      if (heardPings.size > MAX_HEARD_PINGS) heardPings.delete(Math.min(...heardPings.keys()));
      // Heard between LISTEN and the registration: acknowledged once registered.
      acknowledge(from);
    }
  };

  const connect = async (): Promise<void> => {
    const next = options.newClient();
    next.on("error", (error) => lose(next, "hot-path lease: connection failed; serving every call from the database until it is back", error));
    next.on("end", () => lose(next, "hot-path lease: connection ended; serving every call from the database until it is back"));
    next.on("notification", (message) => onNotification(next, message));
    const notStopped = (): void => {
      if (stopped) throw new Stopped("the hot-path lease was stopped");
    };
    connectingClient = next;
    try {
      await next.connect();
      notStopped();
      // Renewals need no durability: a crash of PostgreSQL breaks this connection, which ends the trust.
      // Nothing on this connection may wait longer than a lease (a lock held on the registry, a dead link).
      await next.query(`set synchronous_commit to off; set statement_timeout = ${leaseMs}; set lock_timeout = ${leaseMs}`);
      const { rows } = await next.query<{ channel: string; synced: string }>(
        "select hot_path_channel() as channel, (select case when is_called then last_value else 0 end from hot_path_sync_seq) as synced",
      );
      const channel = rows[0]?.channel ?? "";
      if (!CHANNEL.test(channel)) throw new Error(`unexpected hot-path channel name ${JSON.stringify(channel)}`);
      notStopped();
      replicaId = "";
      heardPings.clear();
      // Current before LISTEN answers: what arrives from then on is applied (to the old epoch, which ends below).
      client = next;
      await next.query(`listen ${channel}`);
      notStopped();
      // Every read from here on is followed by the invalidations of what it read.
      dropEverything();
      const id = randomUUID();
      const sentAt = performance.now();
      const sentAtWall = Date.now();
      // Earlier registrations trust nothing any more: writers need not wait for them.
      const earlier = [...registered];
      await next.query(`delete from hot_path_replicas where replica_id = any($1::text[]) or lease_expires_at < clock_timestamp() - interval '${FORGET_AFTER}'`, [earlier]);
      for (const old of earlier) registered.delete(old);
      registered.add(id);
      // Pings up to `synced` were taken after their writers committed, before this replica listened:
      // it read nothing before that, so it owes them nothing.
      await next.query(
        `insert into hot_path_replicas (replica_id, lease_expires_at, acked_through, register_time, listener_pid)
         values ($1, clock_timestamp() + $2::integer * interval '1 millisecond', $3::bigint, clock_timestamp(), pg_backend_pid())`,
        [id, leaseMs, rows[0]?.synced ?? "0"],
      );
      notStopped();
      if (client !== next) throw new Error("the hot-path listener connection was lost while registering");
      replicaId = id;
      registeredAt = sentAt;
      lastAckSentAt = sentAt;
      trustedUntil = sentAt + leaseMs - marginMs;
      trustedUntilWall = sentAtWall + leaseMs - marginMs;
      acknowledge(next);
    } catch (error) {
      // A row this attempt registered stays in `registered`: the next registration or stop() removes it.
      if (connectingClient === next) connectingClient = undefined;
      if (client === next) unregister();
      detach(next);
      await next.end().catch(() => {});
      throw error;
    }
    if (connectingClient === next) connectingClient = undefined;
  };

  let lastTick = performance.now();
  const renewTimer = setInterval(() => {
    const current = client;
    const tick = performance.now();
    // A timer that ran late (the event loop was stalled) says nothing about the connection yet.
    const late = tick - lastTick > 2 * renewEveryMs;
    lastTick = tick;
    if (current === undefined || replicaId === "") return;
    if (!late) {
      // After the I/O already waiting: acknowledgements that arrived meanwhile count first.
      setImmediate(() => {
        // Trust lapsed a whole lease ago and nothing renewed it: the connection is not answering.
        if (client === current && replicaId !== "" && performance.now() > Math.max(trustedUntil, registeredAt) + leaseMs) {
          lose(current, "hot-path lease: the listening connection stopped answering; reconnecting");
        }
      });
    }
    const now = tick;
    // Renew by pinging ourselves when no writer's ping did it lately.
    if (now - lastAckSentAt < renewEveryMs) return;
    lastAckSentAt = now;
    inOrder(current, "select hot_path_ping()").catch((error: unknown) => lose(current, "hot-path lease: renewing failed", error));
  }, renewEveryMs);
  renewTimer.unref();

  const stop = async (): Promise<void> => {
    stopped = true;
    // Trust ends now; the rest (epoch, floors) when the connection is let go below.
    trustedUntil = 0;
    trustedUntilWall = 0;
    clearInterval(renewTimer);
    if (reconnectTimer !== undefined) clearTimeout(reconnectTimer);
    reconnectTimer = undefined;
    // A registration under way is cut short rather than waited for (it may hang on a dead link).
    await connectingClient?.end().catch(() => {});
    await connecting?.catch(() => {});
    const current = client;
    unregister();
    if (current !== undefined) detach(current);
    // Leave the registry, so writers stop waiting for this replica now rather than when its lease ends.
    if (registered.size > 0) {
      const ids = [...registered];
      const leave = async (): Promise<void> => {
        if (current !== undefined) {
          await inOrder(current, LEAVE_REGISTRY, [ids]);
          return;
        }
        // Stopped while reconnecting: a short-lived connection of its own.
        const once = options.newClient();
        once.on("error", () => {});
        try {
          await once.connect();
          await once.query(LEAVE_REGISTRY, [ids]);
        } finally {
          await once.end().catch(() => {});
        }
      };
      // Not forever behind a statement that hangs: the rows then simply expire.
      await withinMs(leaseMs, leave()).catch(() => {});
    }
    await current?.end().catch(() => {});
  };

  connecting = connect();
  try {
    await connecting;
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    trusted: () => client !== undefined && performance.now() < trustedUntil && Date.now() < trustedUntilWall,
    epoch: () => epoch,
    floor: (tenantId) => floors.get(tenantId) ?? 0,
    replicaId: () => (client === undefined ? "" : replicaId),
    stop,
  };
}

/** Done with this connection: no more notifications, and errors while it ends are expected. */
function detach(client: pg.Client): void {
  client.removeAllListeners("notification");
  client.on("error", () => {});
}

function withinMs<T>(ms: number, promise: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const queues = new WeakMap<pg.Client, Promise<unknown>>();

/** Statements on the listening connection run one after another, in the order asked (pg 9 stops queueing them itself). */
function inOrder(client: pg.Client, text: string, values?: unknown[]): Promise<pg.QueryResult> {
  const previous = queues.get(client) ?? Promise.resolve();
  const result = previous.then(() => client.query(text, values));
  queues.set(
    client,
    result.catch(() => {}),
  );
  return result;
}

const leases = new WeakMap<object, HotPathLease>();

/** Ties a PostgreSQL root handle to its running lease. */
export function registerHotPathLease(db: object, lease: HotPathLease | undefined): void {
  if (lease === undefined) leases.delete(db);
  else leases.set(db, lease);
}

/** The lease behind `db`; none for PGlite, a transaction, or PostgreSQL without leases. */
export function hotPathLeaseOf(db: object): HotPathLease | undefined {
  return leases.get(db);
}

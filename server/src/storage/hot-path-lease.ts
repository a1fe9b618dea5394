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
 * - `sync <n>`: a writer's ping. Everything committed before it has been
 *   applied by now, so the replica acknowledges it, which also renews the lease.
 *
 * The replica trusts kept rows only until `leaseMs - margin` after it sent its
 * last successful acknowledgement: before the database's own expiry, which
 * counts from when that statement ran. A lease that ran out is never renewed:
 * the replica registers anew under a new id and starts a new epoch, in which
 * nothing kept before counts. Losing the connection ends trust at once.
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
  /** How long an acknowledgement keeps the lease running. */
  readonly leaseMs: number;
  /** Told when the connection fails or the lease ran out; the lease recovers by itself. */
  readonly onTrouble?: ((message: string, error?: unknown) => void) | undefined;
}

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;
/** Rows of replicas whose lease ended this long ago are removed by the next registration. */
const FORGET_AFTER = "1 hour";

const CHANNEL = /^matih_kms_hot_path_[0-9a-f]{16}$/;

export async function startHotPathLease(options: HotPathLeaseOptions): Promise<HotPathLease> {
  const { leaseMs } = options;
  // Room for the time between sending an acknowledgement and the database running it, and for clock rate.
  const marginMs = Math.min(1_000, Math.max(50, Math.floor(leaseMs / 4)));
  const renewEveryMs = Math.max(25, Math.floor((leaseMs - marginMs) / 3));

  let epoch = 0;
  const floors = new Map<string, number>();
  let trustedUntil = 0;
  let client: pg.Client | undefined;
  let replicaId = "";
  let stopped = false;
  let lastAckSentAt = 0;
  let unacknowledgedPing: string | undefined;
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer: NodeJS.Timeout | undefined;

  const dropEverything = (): void => {
    epoch += 1;
    floors.clear();
  };

  const lose = (from: pg.Client, message: string, error?: unknown): void => {
    if (from !== client) return;
    client = undefined;
    trustedUntil = 0;
    dropEverything();
    from.removeAllListeners("notification");
    from.on("error", () => {}); // ending a broken client may report again
    void from.end().catch(() => {});
    if (stopped) return;
    options.onTrouble?.(message, error);
    scheduleReconnect();
  };

  const scheduleReconnect = (): void => {
    if (stopped || reconnectTimer !== undefined) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      connect().then(
        () => {
          reconnectDelay = RECONNECT_MIN_MS;
        },
        (error: unknown) => {
          options.onTrouble?.("hot-path lease: cannot register; serving every call from the database meanwhile", error);
          reconnectDelay = Math.min(RECONNECT_MAX_MS, reconnectDelay * 2);
          scheduleReconnect();
        },
      );
    }, reconnectDelay);
    reconnectTimer.unref();
  };

  const acknowledge = (from: pg.Client, ping: string): void => {
    const sentAt = performance.now();
    lastAckSentAt = sentAt;
    inOrder(
      from,
      `update hot_path_replicas
            set acked_through = greatest(acked_through, $2::bigint), lease_expires_at = clock_timestamp() + $3::integer * interval '1 millisecond'
          where replica_id = $1 and lease_expires_at > clock_timestamp()`,
      [replicaId, ping, leaseMs],
    ).then(
        (result) => {
          if (from !== client) return;
          if (result.rowCount === 1) {
            trustedUntil = Math.max(trustedUntil, sentAt + leaseMs - marginMs);
          } else {
            // Writers may already have passed over this replica: what it keeps may be stale.
            lose(from, "hot-path lease ran out before it was renewed; registering anew");
          }
        },
        (error: unknown) => lose(from, "hot-path lease: acknowledging a ping failed", error),
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
    } else if (payload.startsWith("sync ")) {
      const ping = payload.slice(5);
      // Heard between LISTEN and the registration: acknowledged once registered.
      if (replicaId === "") unacknowledgedPing = ping;
      else acknowledge(from, ping);
    }
  };

  const connect = async (): Promise<void> => {
    const next = options.newClient();
    next.on("error", (error) => lose(next, "hot-path lease: connection failed; serving every call from the database until it is back", error));
    next.on("end", () => lose(next, "hot-path lease: connection ended; serving every call from the database until it is back"));
    next.on("notification", (message) => onNotification(next, message));
    try {
      await next.connect();
      const { rows } = await next.query<{ channel: string; synced: string }>(
        "select hot_path_channel() as channel, (select case when is_called then last_value else 0 end from hot_path_sync_seq) as synced",
      );
      const channel = rows[0]?.channel ?? "";
      const previousReplicaId = replicaId;
      replicaId = "";
      unacknowledgedPing = undefined;
      if (!CHANNEL.test(channel)) throw new Error(`unexpected hot-path channel name ${JSON.stringify(channel)}`);
      // Not yet current: notifications arriving before LISTEN answers are applied to the old epoch.
      client = next;
      // Renewals need no durability: a crash of PostgreSQL breaks this connection, which ends the trust.
      await next.query("set synchronous_commit to off");
      await next.query(`listen ${channel}`);
      // Every read from here on is followed by the invalidations of what it read.
      dropEverything();
      const id = randomUUID();
      const sentAt = performance.now();
      // The previous registration trusts nothing any more: writers need not wait for it.
      await next.query(`delete from hot_path_replicas where replica_id = $1 or lease_expires_at < clock_timestamp() - interval '${FORGET_AFTER}'`, [
        previousReplicaId,
      ]);
      // Pings up to `synced` were taken after their writers committed, before this replica listened:
      // it read nothing before that, so it owes them nothing.
      await next.query(
        `insert into hot_path_replicas (replica_id, lease_expires_at, acked_through, register_time, listener_pid)
         values ($1, clock_timestamp() + $2::integer * interval '1 millisecond', $3::bigint, clock_timestamp(), pg_backend_pid())`,
        [id, leaseMs, rows[0]?.synced ?? "0"],
      );
      if (client !== next) throw new Error("the hot-path listener connection was lost while registering");
      replicaId = id;
      lastAckSentAt = sentAt;
      trustedUntil = sentAt + leaseMs - marginMs;
      if (unacknowledgedPing !== undefined) acknowledge(next, unacknowledgedPing);
    } catch (error) {
      if (client === next) {
        client = undefined;
        trustedUntil = 0;
        dropEverything();
      }
      next.removeAllListeners("notification");
      next.on("error", () => {});
      await next.end().catch(() => {});
      throw error;
    }
  };

  // Renew by pinging ourselves when no writer's ping did it lately.
  const renewTimer = setInterval(() => {
    const current = client;
    if (current === undefined || replicaId === "" || performance.now() - lastAckSentAt < renewEveryMs) return;
    inOrder(current, "select pg_notify(hot_path_channel(), 'sync ' || nextval('hot_path_sync_seq'))").catch((error: unknown) => lose(current, "hot-path lease: renewing failed", error));
  }, renewEveryMs);
  renewTimer.unref();

  try {
    await connect();
  } catch (error) {
    clearInterval(renewTimer);
    throw error;
  }

  return {
    trusted: () => client !== undefined && performance.now() < trustedUntil,
    epoch: () => epoch,
    floor: (tenantId) => floors.get(tenantId) ?? 0,
    replicaId: () => (client === undefined ? "" : replicaId),
    async stop() {
      stopped = true;
      trustedUntil = 0;
      dropEverything();
      clearInterval(renewTimer);
      if (reconnectTimer !== undefined) clearTimeout(reconnectTimer);
      const current = client;
      client = undefined;
      if (current === undefined) return;
      current.removeAllListeners("notification");
      await inOrder(current, "delete from hot_path_replicas where replica_id = $1", [replicaId]).catch(() => {});
      current.on("error", () => {});
      await current.end().catch(() => {});
    },
  };
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

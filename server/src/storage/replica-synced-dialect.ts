/**
 * PostgreSQL, with every commit that wrote key rows followed by
 * `call hot_path_await_replicas()` (migration 20251129190000) before it
 * returns: the service answers a RevokeKey, a RotateKey — any change to keys,
 * KEK or DEK versions — only once every replica holding a hot-path lease has
 * dropped the rows the change made stale, or lost its lease
 * (docs/decisions/0008-hot-path-leases.md).
 *
 * Which statements count is read from the SQL text (key-row-writes.ts), so
 * raw SQL and the query builder are covered alike. The one write that opts
 * out says so at the start of its text (NO_REPLICA_SYNC): the Decrypt
 * bookkeeping, which makes nothing less usable and is sometimes written while
 * a Decrypt waits.
 *
 * The wait runs on the connection that committed, so a full pool cannot
 * starve it. A database not yet migrated that far has no such procedure: the
 * wait is skipped (nothing can hold a lease there).
 *
 * The commit has happened when the wait starts, so the wait never fails the
 * write: if the procedure fails (a cancelled statement, its lock timeout, its
 * own time limit, a broken connection) it is tried once more on the same
 * connection (never a second one: writers failing together must not drain
 * the pool), and if that fails too the writer waits out the lease instead. A replica
 * still trusting its rows after that has acknowledged a ping taken after this
 * commit (hot-path-lease.ts), so it has applied it.
 */
import type { DatabaseConnection, Dialect, Driver, QueryResult, TransactionSettings } from "kysely";
import { CompiledQuery } from "kysely";
import { writesKeyRows } from "./key-row-writes.js";

const AWAIT_REPLICAS = CompiledQuery.raw("call hot_path_await_replicas()");
/** The longest lease KMS_HOT_PATH_LEASE_MS allows: what to wait out when nothing better is known. */
export const LONGEST_LEASE_MS = 60_000;

/** Shared with open-database.ts, which sets them when this process starts a lease. */
export interface ReplicaSyncSettings {
  /** Waited out when the acknowledgements cannot be confirmed: the replicas' lease (they must all use one). */
  fallbackWaitMs: number;
  onTrouble?: ((message: string, error?: unknown) => void) | undefined;
}
/** undefined_function naming the procedure itself: the migration that adds it has not run. */
function notMigrated(error: unknown): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  return code === "42883" && typeof message === "string" && message.includes("hot_path_await_replicas");
}

export class ReplicaSyncedDialect implements Dialect {
  constructor(
    private readonly inner: Dialect,
    private readonly settings: ReplicaSyncSettings = { fallbackWaitMs: LONGEST_LEASE_MS },
  ) {}

  createDriver(): Driver {
    return new ReplicaSyncedDriver(this.inner.createDriver(), this.settings);
  }
  createQueryCompiler(): ReturnType<Dialect["createQueryCompiler"]> {
    return this.inner.createQueryCompiler();
  }
  createAdapter(): ReturnType<Dialect["createAdapter"]> {
    return this.inner.createAdapter();
  }
  createIntrospector(db: Parameters<Dialect["createIntrospector"]>[0]): ReturnType<Dialect["createIntrospector"]> {
    return this.inner.createIntrospector(db);
  }
}

class TrackedConnection implements DatabaseConnection {
  inTransaction = false;
  /** A statement of the open transaction wrote key rows. */
  wroteKeyRows = false;

  constructor(
    readonly inner: DatabaseConnection,
    private readonly awaitReplicas: (connection: DatabaseConnection) => Promise<void>,
  ) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const result = await this.inner.executeQuery<R>(compiledQuery);
    if (writesKeyRows(compiledQuery.sql)) {
      if (this.inTransaction) this.wroteKeyRows = true;
      else await this.awaitReplicas(this.inner);
    }
    return result;
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    yield* this.inner.streamQuery<R>(compiledQuery, chunkSize);
    if (writesKeyRows(compiledQuery.sql)) {
      if (this.inTransaction) this.wroteKeyRows = true;
      else await this.awaitReplicas(this.inner);
    }
  }
}

class ReplicaSyncedDriver implements Driver {
  constructor(
    private readonly inner: Driver,
    private readonly settings: ReplicaSyncSettings,
  ) {}

  init(): Promise<void> {
    return this.inner.init();
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    return new TrackedConnection(await this.inner.acquireConnection(), (connection) => this.awaitReplicas(connection));
  }
  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    const tracked = connection as TrackedConnection;
    await this.inner.beginTransaction(tracked.inner, settings);
    tracked.inTransaction = true;
    tracked.wroteKeyRows = false;
  }
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const tracked = connection as TrackedConnection;
    const wrote = tracked.wroteKeyRows;
    tracked.inTransaction = false;
    tracked.wroteKeyRows = false;
    await this.inner.commitTransaction(tracked.inner);
    if (wrote) await this.awaitReplicas(tracked.inner);
  }
  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const tracked = connection as TrackedConnection;
    tracked.inTransaction = false;
    tracked.wroteKeyRows = false;
    await this.inner.rollbackTransaction(tracked.inner);
  }
  async savepoint(connection: DatabaseConnection, name: string, compile: Parameters<NonNullable<Driver["savepoint"]>>[2]): Promise<void> {
    await this.inner.savepoint?.((connection as TrackedConnection).inner, name, compile);
  }
  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compile: Parameters<NonNullable<Driver["savepoint"]>>[2]): Promise<void> {
    // What was written before the savepoint still counts; a wait too many costs only time.
    await this.inner.rollbackToSavepoint?.((connection as TrackedConnection).inner, name, compile);
  }
  async releaseSavepoint(connection: DatabaseConnection, name: string, compile: Parameters<NonNullable<Driver["savepoint"]>>[2]): Promise<void> {
    await this.inner.releaseSavepoint?.((connection as TrackedConnection).inner, name, compile);
  }
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    await this.inner.releaseConnection((connection as TrackedConnection).inner);
  }
  destroy(): Promise<void> {
    return this.inner.destroy();
  }

  /** After a commit that wrote key rows; never throws (see the top of this file). */
  async awaitReplicas(connection: DatabaseConnection): Promise<void> {
    const failures: unknown[] = [];
    if (await tryAwait(connection, failures)) return;
    if (await tryAwait(connection, failures)) return;
    this.settings.onTrouble?.(
      `hot-path leases: could not confirm that every replica applied a committed change; waiting out the lease (${this.settings.fallbackWaitMs} ms) instead`,
      failures[0],
    );
    await new Promise((resolve) => setTimeout(resolve, this.settings.fallbackWaitMs));
  }
}

/** True when the wait ran (or needs not run); false when it failed. */
async function tryAwait(connection: DatabaseConnection, failures: unknown[]): Promise<boolean> {
  try {
    await connection.executeQuery(AWAIT_REPLICAS);
    return true;
  } catch (error) {
    if (notMigrated(error)) return true;
    failures.push(error);
    return false;
  }
}

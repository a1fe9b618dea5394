/**
 * Server-side prepared statements on PostgreSQL, for the hot path's one read.
 *
 * Kysely sends every statement unnamed, so PostgreSQL plans the hot path's
 * three-table join again on every call, and the query builder runs again too:
 * about 0.3 ms of the caller's CPU and as much of the backend's per call
 * (docs/decisions/0003-hot-path-performance.md). A named statement is parsed
 * and planned once per pooled connection. It runs outside kysely, on the same
 * pool and type parsers, so rows come back exactly as kysely returns them.
 */
export type PreparedStatementRunner = (name: string, text: string, values: readonly unknown[]) => Promise<unknown[]>;

const runners = new WeakMap<object, PreparedStatementRunner>();

/** Ties a PostgreSQL root handle to a runner over its pool. */
export function registerPreparedStatementRunner(db: object, runner: PreparedStatementRunner): void {
  runners.set(db, runner);
}

/** The runner behind `db`; none for PGlite, a transaction or a derived handle (they use kysely). */
export function preparedStatementRunnerOf(db: object): PreparedStatementRunner | undefined {
  return runners.get(db);
}

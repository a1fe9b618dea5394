/**
 * What an embedded database engine has done: statements read, and a write
 * generation that moves on every statement that may have changed anything.
 *
 * Only the PGlite engine keeps one. PGlite is one session owned by one process
 * (the data-directory lock), and every statement passes through its driver, so
 * "the write generation has not moved" proves that nothing read since is
 * stale — which lets the hot path keep what it read (hot-material-cache.ts).
 * On PostgreSQL other replicas write too, and nothing here could see that.
 */
export interface EngineActivity {
  /** Read-only statements run (SELECT). */
  reads: number;
  /** Moves on every statement that may have changed data (see noteStatement). */
  writeGeneration: number;
}

export function createEngineActivity(): EngineActivity {
  return { reads: 0, writeGeneration: 0 };
}

/** What the engine said about a statement that ran; undefined when it failed. */
export interface StatementOutcome {
  readonly command?: string | undefined;
  readonly affectedRows?: number | undefined;
}

const STARTS_WITH_SELECT = /^\s*select\b/i;
const ROW_CHANGING_COMMANDS = new Set(["INSERT", "UPDATE", "DELETE", "MERGE"]);
const TRANSACTION_CONTROL = new Set(["BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"]);

/**
 * Counts one statement. The write generation moves unless the statement
 * provably changed nothing:
 * - a plain SELECT (one starting with WITH may hide a data-modifying CTE);
 * - an INSERT, UPDATE, DELETE or MERGE that affected no row (the background
 *   workers poll with such statements every few seconds) — again not if it
 *   starts with WITH, whose CTEs' rows the count leaves out;
 * - transaction control (the writes inside counted themselves).
 * Anything else — DDL, SET, a failed statement — counts as a write.
 */
export function noteStatement(activity: EngineActivity, sql: string, outcome: StatementOutcome | undefined): void {
  const command = outcome?.command?.toUpperCase();
  if (command === undefined) {
    activity.writeGeneration++;
  } else if (command === "SELECT" && STARTS_WITH_SELECT.test(sql)) {
    activity.reads++;
  } else if (TRANSACTION_CONTROL.has(command)) {
    // no data of its own
  } else if (ROW_CHANGING_COMMANDS.has(command) && outcome?.affectedRows === 0 && !/^\s*with\b/i.test(sql)) {
    // matched nothing
  } else {
    activity.writeGeneration++;
  }
}

const registry = new WeakMap<object, EngineActivity>();

/** Ties an engine's activity to the root database handle that reaches it. */
export function registerEngineActivity(db: object, activity: EngineActivity): void {
  registry.set(db, activity);
}

/**
 * The activity behind `db`, if `db` is a registered root handle. A transaction
 * or a derived handle (`withPlugin`, `withSchema`) has none: callers then
 * read through without keeping anything, which is always safe.
 */
export function engineActivityOf(db: object): EngineActivity | undefined {
  return registry.get(db);
}

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
  /** Moves on every other statement, run or failed: writes, DDL, transaction control. */
  writeGeneration: number;
}

export function createEngineActivity(): EngineActivity {
  return { reads: 0, writeGeneration: 0 };
}

const READ_ONLY_STATEMENT = /^\s*select\b/i;

/** Counts one statement; anything not plainly a SELECT counts as a possible write. */
export function noteStatement(activity: EngineActivity, sql: string): void {
  if (READ_ONLY_STATEMENT.test(sql)) activity.reads++;
  else activity.writeGeneration++;
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

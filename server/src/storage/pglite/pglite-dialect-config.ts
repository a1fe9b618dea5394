import type { EngineActivity } from "../engine-activity.js";

/**
 * The subset of a PGlite instance the dialect uses. Declared here so the
 * dialect never imports `@electric-sql/pglite` itself; a `PGlite` from that
 * package satisfies it.
 */
export interface PGliteLike {
  query<R>(
    sql: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; command?: string | undefined; affectedRows?: number | undefined }>;
  /** PGlite reports whether its single session sits inside a transaction block. */
  isInTransaction?(): boolean;
  close(): Promise<void>;
  readonly closed: boolean;
}

export interface PGliteDialectConfig {
  /**
   * The instance, or a factory the driver calls once on first use. Either way
   * the driver owns it: `Kysely.destroy()` closes it.
   */
  readonly pglite: PGliteLike | (() => Promise<PGliteLike>);
  /** Counts the statements run; its write generation lets readers know nothing changed. */
  readonly activity?: EngineActivity | undefined;
}

import {
  AbortedTransactionError,
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  type QueryResult,
  type TransactionSettings,
} from "kysely";
import { type EngineActivity, noteStatement, type StatementOutcome } from "../engine-activity.js";
import { createAsyncMutex } from "./async-mutex.js";
import type { PGliteDialectConfig, PGliteLike } from "./pglite-dialect-config.js";

/**
 * A kysely driver over one PGlite instance.
 *
 * PGlite is a single PostgreSQL session. Two kysely transactions running at
 * once over it would share that session: one's rollback would undo the
 * other's writes and row locks would not keep them apart. So the driver hands
 * out the session to one holder at a time: `acquireConnection` waits for a
 * FIFO mutex and `releaseConnection` frees it. Kysely acquires a connection for
 * each statement run outside a transaction and holds one for the whole of a
 * transaction, so every transaction runs alone and statements outside
 * transactions slot in between them.
 *
 * Consequence: code inside a transaction must use the transaction object.
 * Using the root `Kysely` there waits for a session the transaction holds —
 * a deadlock (on PostgreSQL it would silently run outside the transaction).
 */
export class PGliteDriver implements Driver {
  readonly #config: PGliteDialectConfig;
  readonly #mutex = createAsyncMutex();
  #pglite: PGliteLike | undefined;
  #destroyed = false;

  constructor(config: PGliteDialectConfig) {
    this.#config = config;
  }

  async init(): Promise<void> {
    const { pglite } = this.#config;
    this.#pglite = typeof pglite === "function" ? await pglite() : pglite;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const release = await this.#mutex.acquire();
    const pglite = this.#pglite;
    if (this.#destroyed || pglite === undefined || pglite.closed) {
      release();
      throw new Error("the PGlite database has been closed");
    }
    return new PGliteConnection(pglite, release, this.#config.activity);
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let statement = "begin";
    if (settings.isolationLevel !== undefined || settings.accessMode !== undefined) {
      statement = "start transaction";
      if (settings.isolationLevel !== undefined) statement += ` isolation level ${settings.isolationLevel}`;
      if (settings.accessMode !== undefined) statement += ` ${settings.accessMode}`;
    }
    await asPGliteConnection(connection).executeCommand(statement);
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    // PostgreSQL answers COMMIT with a ROLLBACK tag when an earlier statement
    // error left the transaction aborted: nothing was committed.
    const tag = await asPGliteConnection(connection).executeCommand("commit");
    if (tag === "ROLLBACK") throw new AbortedTransactionError();
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await asPGliteConnection(connection).executeCommand("rollback");
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await asPGliteConnection(connection).executeCommand(`savepoint ${quoteIdentifier(name)}`);
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await asPGliteConnection(connection).executeCommand(`rollback to savepoint ${quoteIdentifier(name)}`);
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await asPGliteConnection(connection).executeCommand(`release savepoint ${quoteIdentifier(name)}`);
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const lease = asPGliteConnection(connection);
    try {
      // A holder that opened a transaction by hand and left without ending it
      // must not hand the next holder a session inside its transaction.
      if (this.#pglite?.closed === false && this.#pglite.isInTransaction?.() === true) {
        await lease.executeCommand("rollback");
      }
    } finally {
      lease.release();
    }
  }

  async destroy(): Promise<void> {
    // Queue behind every holder and waiter already in line, so work begun
    // before destroy() finishes; anything queued later finds the driver closed.
    const release = await this.#mutex.acquire();
    try {
      if (this.#destroyed) return;
      this.#destroyed = true;
      const pglite = this.#pglite;
      this.#pglite = undefined;
      if (pglite !== undefined && !pglite.closed) await pglite.close();
    } finally {
      release();
    }
  }
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function asPGliteConnection(connection: DatabaseConnection): PGliteConnection {
  if (!(connection instanceof PGliteConnection)) throw new Error("not a PGlite connection");
  return connection;
}

/**
 * One lease of the PGlite session, valid from acquireConnection until
 * releaseConnection. A lease that has been released refuses to run anything,
 * so a leaked reference cannot slip a statement past the mutex.
 */
class PGliteConnection implements DatabaseConnection {
  readonly #pglite: PGliteLike;
  readonly #activity: EngineActivity | undefined;
  #release: (() => void) | undefined;

  constructor(pglite: PGliteLike, release: () => void, activity: EngineActivity | undefined) {
    this.#pglite = pglite;
    this.#release = release;
    this.#activity = activity;
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const result = await this.#run<R>(compiledQuery.sql, [...compiledQuery.parameters]);
    const command = result.command;
    if (command === "INSERT" || command === "UPDATE" || command === "DELETE" || command === "MERGE") {
      return { rows: result.rows, numAffectedRows: BigInt(result.affectedRows ?? 0) };
    }
    return { rows: result.rows };
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize = 100): AsyncIterableIterator<QueryResult<R>> {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) throw new Error("chunkSize must be a positive integer");
    // PGlite has no cursors over its API; the whole result is in memory anyway.
    const { rows } = await this.executeQuery<R>(compiledQuery);
    for (let i = 0; i < rows.length; i += chunkSize) yield { rows: rows.slice(i, i + chunkSize) };
  }

  /** Runs a parameterless statement and returns its command tag. */
  async executeCommand(statement: string): Promise<string | undefined> {
    return (await this.#run(statement, [])).command;
  }

  release(): void {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async #run<R>(statement: string, parameters: unknown[]) {
    if (this.#release === undefined) throw new Error("this PGlite connection has been released");
    const callSite = new Error();
    let outcome: StatementOutcome | undefined;
    try {
      const result = await this.#pglite.query<R>(statement, parameters);
      outcome = result;
      return result;
    } catch (error) {
      throw sanitizeError(error, callSite);
    } finally {
      // Counted once the statement has run (or failed), still under the mutex.
      if (this.#activity !== undefined) noteStatement(this.#activity, statement, outcome);
    }
  }
}

/**
 * PGlite attaches the statement's parameter values to its errors. Those can be
 * wrapped key material, and errors reach logs: drop them. The caller's stack
 * is appended so the error points at the code that ran the statement.
 */
function sanitizeError(error: unknown, callSite: Error): unknown {
  if (typeof error === "object" && error !== null) {
    const record = error as Record<string, unknown>;
    delete record["params"];
    delete record["queryOptions"];
    if (error instanceof Error && error.stack !== undefined && callSite.stack !== undefined) {
      error.stack += "\n" + callSite.stack.split("\n").slice(1).join("\n");
    }
  }
  return error;
}

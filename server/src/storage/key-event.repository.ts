import type { KeyEvent, NewKeyEvent } from "../domain/key-event.js";
import type { Executor } from "./database.js";

/**
 * Appends a key event inside the caller's transaction. The event id comes from
 * the one row of event_sequence, whose lock is held until the transaction
 * ends: ids are therefore handed out in commit order, and a subscriber reading
 * `event_id > cursor` never misses an event that committed late.
 * Call it last in a transaction, to hold that lock as briefly as possible.
 */
export async function appendKeyEvent(tx: Executor, event: NewKeyEvent): Promise<number> {
  const { last_event_id: eventId } = await tx
    .updateTable("event_sequence")
    .set((eb) => ({ last_event_id: eb("last_event_id", "+", 1) }))
    .where("singleton", "=", true)
    .returning("last_event_id")
    .executeTakeFirstOrThrow();
  await tx
    .insertInto("key_events")
    .values({
      event_id: eventId,
      tenant_id: event.tenantId,
      key_id: event.keyId,
      type: event.type,
      dek_version: event.dekVersion ?? null,
      kek_version: event.kekVersion ?? null,
      event_time: event.time,
    })
    .execute();
  return eventId;
}

/**
 * Events after `afterEventId` (and up to `upToEventId`, when given), oldest
 * first; `tenantId` undefined means every tenant.
 */
export async function listKeyEventsAfter(
  db: Executor,
  options: {
    readonly afterEventId: number;
    readonly upToEventId?: number | undefined;
    readonly tenantId?: string | undefined;
    readonly limit: number;
  },
): Promise<KeyEvent[]> {
  let query = db.selectFrom("key_events").selectAll().where("event_id", ">", options.afterEventId);
  if (options.upToEventId !== undefined) query = query.where("event_id", "<=", options.upToEventId);
  if (options.tenantId !== undefined) query = query.where("tenant_id", "=", options.tenantId);
  const rows = await query.orderBy("event_id").limit(options.limit).execute();
  return rows.map((row) => ({
    eventId: Number(row.event_id),
    tenantId: row.tenant_id,
    keyId: row.key_id,
    type: row.type as KeyEvent["type"],
    dekVersion: row.dek_version ?? undefined,
    kekVersion: row.kek_version ?? undefined,
    time: row.event_time,
  }));
}

/** The id of the newest committed event (0 when there is none): where a new subscriber starts. */
export async function latestKeyEventId(db: Executor): Promise<number> {
  const row = await db.selectFrom("event_sequence").select("last_event_id").executeTakeFirstOrThrow();
  return Number(row.last_event_id);
}

/**
 * True when every event committed after `eventId` is still stored: nothing
 * after it was pruned. Ids are dense (the id and the row commit or roll back
 * together) and pruning removes the oldest events first, so the history after
 * `eventId` is complete exactly when no event came after it, or when the
 * oldest event kept is at most `eventId + 1`.
 */
export async function isKeyEventHistoryCompleteAfter(db: Executor, eventId: number): Promise<boolean> {
  const row = await db
    .selectFrom("event_sequence")
    .select((eb) => ["last_event_id", eb.selectFrom("key_events").select((e) => e.fn.min("event_id").as("m")).as("oldest")])
    .executeTakeFirstOrThrow();
  if (Number(row.last_event_id) <= eventId) return true;
  return row.oldest !== null && Number(row.oldest) <= eventId + 1;
}

/**
 * Deletes the events older than `cutoff`, oldest first, `batchSize` rows per
 * statement (short transactions, no long lock on the table). What is deleted
 * is always a prefix of the history in id order — the events before the first
 * one at or after `cutoff` — so "the oldest event kept" tells a subscriber
 * exactly which cursors are still complete. Returns how many were deleted.
 */
export async function deleteKeyEventsBefore(db: Executor, cutoff: Date, batchSize = 10_000): Promise<number> {
  // One statement, so one snapshot: the first event kept, or (every stored event being older) just past
  // the last old one. Read in two statements, an event committed between them was deleted with the old.
  const row = await db
    .selectNoFrom((eb) => [
      eb.selectFrom("key_events").select((e) => e.fn.min("event_id").as("m")).where("event_time", ">=", cutoff).as("firstKept"),
      eb.selectFrom("key_events").select((e) => e.fn.max("event_id").as("m")).where("event_time", "<", cutoff).as("lastOld"),
    ])
    .executeTakeFirstOrThrow();
  let bound: number;
  if (row.firstKept !== null) bound = Number(row.firstKept);
  else if (row.lastOld !== null) bound = Number(row.lastOld) + 1;
  else return 0;
  let deleted = 0;
  for (;;) {
    const result = await db
      .deleteFrom("key_events")
      .where("event_id", "in", (eb) =>
        eb.selectFrom("key_events").select("event_id").where("event_id", "<", bound).orderBy("event_id").limit(batchSize),
      )
      .executeTakeFirst();
    const count = Number(result.numDeletedRows);
    deleted += count;
    if (count < batchSize) return deleted;
  }
}

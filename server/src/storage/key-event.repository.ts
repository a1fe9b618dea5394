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

/** Events after `afterEventId`, oldest first; `tenantId` undefined means every tenant. */
export async function listKeyEventsAfter(
  db: Executor,
  options: { readonly afterEventId: number; readonly tenantId?: string | undefined; readonly limit: number },
): Promise<KeyEvent[]> {
  let query = db.selectFrom("key_events").selectAll().where("event_id", ">", options.afterEventId);
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

/** The oldest event still kept (history older than it was pruned), or undefined when none is kept. */
export async function oldestKeyEventId(db: Executor): Promise<number | undefined> {
  const row = await db.selectFrom("key_events").select((eb) => eb.fn.min("event_id").as("oldest")).executeTakeFirst();
  return row?.oldest === null || row?.oldest === undefined ? undefined : Number(row.oldest);
}

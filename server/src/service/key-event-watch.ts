/**
 * WatchKeyEvents, transport-free: checks where the subscriber wants to start,
 * then yields every event after it (of one tenant, or of every tenant), in
 * order, each once, until the signal aborts or the feed closes.
 *
 * - Empty cursor: from now on (after the newest committed event).
 * - A cursor whose following history was pruned (or that names an event
 *   after the newest one: a history that was reset) → EVENT_CURSOR_EXPIRED:
 *   the subscriber must resynchronise (drop what it cached) and watch from now.
 */
import type { KeyEvent } from "../domain/key-event.js";
import { KmsError } from "../domain/kms-error.js";
import type { Executor } from "../storage/database.js";
import { isKeyEventHistoryCompleteAfter, latestKeyEventId } from "../storage/key-event.repository.js";
import { decodeEventCursor } from "./key-event-cursor.js";
import type { KeyEventFeed } from "./key-event-feed.js";

export interface WatchKeyEventsInput {
  /** One tenant's events, or undefined for every tenant's (the caller checked who may ask). */
  readonly tenantId: string | undefined;
  /** The cursor of the last event seen; "" to start from now. */
  readonly afterCursor: string;
  /** Called once the subscription is in place: every event committed from here on will be delivered. */
  readonly onSubscribed?: (() => void) | undefined;
}

export async function* watchKeyEvents(
  context: { readonly db: Executor },
  feed: KeyEventFeed,
  input: WatchKeyEventsInput,
  signal: AbortSignal,
): AsyncGenerator<KeyEvent, void, undefined> {
  const afterEventId = await startingPoint(context.db, input.afterCursor);
  const subscription = feed.subscribe({ tenantId: input.tenantId, afterEventId });
  // The consumer may go away while this generator is suspended at a `yield`
  // that nobody resumes: leave the feed at once, not when (if ever) it is resumed.
  const leave = (): void => subscription.close();
  signal.addEventListener("abort", leave, { once: true });
  try {
    input.onSubscribed?.();
    for (;;) {
      const events = await subscription.next(signal);
      if (events === undefined) return;
      yield* events;
    }
  } finally {
    signal.removeEventListener("abort", leave);
    subscription.close();
  }
}

async function startingPoint(db: Executor, afterCursor: string): Promise<number> {
  if (afterCursor === "") return latestKeyEventId(db);
  const eventId = decodeEventCursor(afterCursor, "after_cursor");
  const latest = await latestKeyEventId(db);
  if (eventId > latest) {
    throw new KmsError(
      "EVENT_CURSOR_EXPIRED",
      "after_cursor: names an event newer than this server's newest one (was the event history reset?); resynchronise and watch from now",
      { field: "after_cursor" },
    );
  }
  if (!(await isKeyEventHistoryCompleteAfter(db, eventId))) {
    throw new KmsError(
      "EVENT_CURSOR_EXPIRED",
      "after_cursor: is older than the retained event history; resynchronise and watch from now",
      { field: "after_cursor" },
    );
  }
  return eventId;
}

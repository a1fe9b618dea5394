/**
 * Key-event retention: a periodic task deleting the events older than the
 * retention period (KMS_EVENT_RETENTION_DAYS, default 7). A subscriber whose
 * cursor falls before what is kept is refused EVENT_CURSOR_EXPIRED and
 * resynchronises; one that stays connected never notices. Deleting is
 * idempotent and deletes only a prefix of the history, so several replicas
 * may run it at once without coordination.
 */
import type { KmsContext } from "../service/kms-context.js";
import { deleteKeyEventsBefore } from "../storage/key-event.repository.js";

export const DEFAULT_EVENT_RETENTION_DAYS = 7;
const DAY_MS = 86_400_000;

export interface EventPruningOptions {
  /** Events older than this many days are deleted. Default 7. */
  readonly retentionDays?: number | undefined;
}

/** Deletes the key events older than the retention period, as of `now`. */
export async function pruneKeyEvents(context: Pick<KmsContext, "db">, now: Date, options: EventPruningOptions = {}): Promise<void> {
  const retentionDays = options.retentionDays ?? DEFAULT_EVENT_RETENTION_DAYS;
  await deleteKeyEventsBefore(context.db, new Date(now.getTime() - retentionDays * DAY_MS));
}

/** The periodic task for the job runner, with the configured retention. */
export function eventPruningTask(options: EventPruningOptions = {}): (context: KmsContext, now: Date) => Promise<void> {
  return (context, now) => pruneKeyEvents(context, now, options);
}

/**
 * Tracks the last Decrypt served of each DEK version (dek_versions.
 * last_decrypt_time), which the purge's quiet window reads.
 *
 * Two ways, so the hot path rarely writes and a crash cannot hide a use the
 * purge must know about:
 *
 * - A Decrypt of a version whose last recorded use is missing or older than
 *   RECORD_AT_ONCE_AFTER_MS is written before the answer leaves (those of one
 *   event-loop turn in one statement). That is the use that matters: it may be
 *   the one keeping a quiet version alive.
 * - Any other Decrypt is noted in memory and written in the background, all
 *   versions in one statement, every FLUSH_INTERVAL_MS and when the server
 *   stops. A process that dies loses at most those notes, each for a version
 *   whose recorded use is under RECORD_AT_ONCE_AFTER_MS old: the record lags
 *   the truth by at most that, nothing next to a quiet window of at least a day.
 *
 * The notes belong to one KmsContext (one server instance), held in a WeakMap
 * so the context's shape does not change and two in-process instances
 * (tests, simulated replicas) never mix.
 */
import { type DecryptRecord, recordLastDecrypts } from "../storage/lifecycle.repository.js";
import type { KmsContext } from "./kms-context.js";

export const RECORD_AT_ONCE_AFTER_MS = 60 * 60_000;
export const FLUSH_INTERVAL_MS = 15_000;
/** Versions per UPDATE when flushing. */
const FLUSH_BATCH = 1_000;

interface PendingNotes {
  readonly records: Map<string, DecryptRecord>;
  timer: NodeJS.Timeout | undefined;
  flushing: Promise<void> | undefined;
}

const pendingByContext = new WeakMap<KmsContext, PendingNotes>();

/**
 * Notes a Decrypt served of `dekVersion`, whose recorded last use was
 * `recorded`. Returns a promise only when the record must be written before
 * the Decrypt answers (the caller awaits it); otherwise notes it for the
 * background and returns nothing, so the common case costs no await. Never
 * rejects: failing to record must not fail the Decrypt.
 */
export function noteDecryptServed(
  context: KmsContext,
  tenantId: string,
  keyId: string,
  dekVersion: number,
  recorded: Date | undefined,
): Promise<void> | undefined {
  const time = context.clock.now();
  const record: DecryptRecord = { tenantId, keyId, version: dekVersion, time };
  if (recorded === undefined || time.getTime() - recorded.getTime() >= RECORD_AT_ONCE_AFTER_MS) {
    return recordBeforeAnswering(context, record);
  }
  note(context, record);
  return undefined;
}

interface WritesNow {
  waiting: Array<{ readonly record: DecryptRecord; readonly done: () => void }>;
  scheduled: boolean;
}

const writesNowByContext = new WeakMap<KmsContext, WritesNow>();

/**
 * Writes a record before its Decrypt answers. The Decrypts that need this in
 * one turn of the event loop share one UPDATE (a cold or large key set has
 * many of them). A failure leaves the record to the background flush.
 */
function recordBeforeAnswering(context: KmsContext, record: DecryptRecord): Promise<void> {
  let writes = writesNowByContext.get(context);
  if (writes === undefined) {
    writes = { waiting: [], scheduled: false };
    writesNowByContext.set(context, writes);
  }
  const pending = writes;
  return new Promise((done) => {
    pending.waiting.push({ record, done });
    if (pending.scheduled) return;
    pending.scheduled = true;
    setImmediate(() => {
      pending.scheduled = false;
      const batch = pending.waiting;
      pending.waiting = [];
      void writeBatch(context, batch);
    });
  });
}

async function writeBatch(context: KmsContext, batch: ReadonlyArray<{ readonly record: DecryptRecord; readonly done: () => void }>): Promise<void> {
  const records = latestPerVersion(batch.map((entry) => entry.record));
  for (let start = 0; start < records.length; start += FLUSH_BATCH) {
    const chunk = records.slice(start, start + FLUSH_BATCH);
    try {
      await recordLastDecrypts(context.db, chunk);
    } catch {
      // The database just served these Decrypts' reads, so this is rare and passing: the background flush retries.
      for (const record of chunk) note(context, record);
    }
  }
  for (const entry of batch) entry.done();
}

/** One record per version, the latest: an UPDATE … FROM with two source rows for one target takes either. */
function latestPerVersion(records: readonly DecryptRecord[]): DecryptRecord[] {
  const latest = new Map<string, DecryptRecord>();
  for (const record of records) {
    const id = versionId(record);
    const previous = latest.get(id);
    if (previous === undefined || previous.time < record.time) latest.set(id, record);
  }
  return [...latest.values()];
}

/** Writes every noted Decrypt now (on stop, and for tests). Never throws; what fails stays noted. */
export async function flushDecryptTracking(context: KmsContext): Promise<void> {
  const pending = pendingByContext.get(context);
  if (pending === undefined) return;
  if (pending.timer !== undefined) {
    clearTimeout(pending.timer);
    pending.timer = undefined;
  }
  // One flush at a time: each waits for the one before it, then writes what is noted by then.
  const previous = pending.flushing ?? Promise.resolve();
  const flushing = previous.then(() => writeNotes(context, pending));
  pending.flushing = flushing;
  await flushing;
  if (pending.flushing === flushing) pending.flushing = undefined;
}

function note(context: KmsContext, record: DecryptRecord): void {
  let pending = pendingByContext.get(context);
  if (pending === undefined) {
    pending = { records: new Map(), timer: undefined, flushing: undefined };
    pendingByContext.set(context, pending);
  }
  const id = versionId(record);
  const previous = pending.records.get(id);
  if (previous === undefined || previous.time < record.time) pending.records.set(id, record);
  if (pending.timer === undefined) {
    pending.timer = setTimeout(() => void flushDecryptTracking(context), FLUSH_INTERVAL_MS);
    pending.timer.unref();
  }
}

async function writeNotes(context: KmsContext, pending: PendingNotes): Promise<void> {
  const records = [...pending.records.values()];
  pending.records.clear();
  for (let start = 0; start < records.length; start += FLUSH_BATCH) {
    const batch = records.slice(start, start + FLUSH_BATCH);
    try {
      await recordLastDecrypts(context.db, batch);
    } catch {
      // Keep what failed (unless a newer note came meanwhile) and try again at the next interval.
      for (const record of records.slice(start)) note(context, record);
      return;
    }
  }
}

/** Ids cannot contain '/', so this names one DEK version unambiguously. */
function versionId(record: DecryptRecord): string {
  return `${record.tenantId}/${record.keyId}/${record.version}`;
}

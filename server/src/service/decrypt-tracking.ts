/**
 * Tracks the last Decrypt served of each DEK version (dek_versions.
 * last_decrypt_time), which the purge's quiet window reads. Written at most
 * once a minute per version per process: a throttled call costs a map lookup
 * and no query. The record lags the true last use by under a minute, nothing
 * next to a quiet window of at least a day.
 *
 * The throttle belongs to one KmsContext (one server instance), held in a
 * WeakMap so the context's shape does not change and two in-process
 * instances (tests, simulated replicas) never silence each other.
 */
import { recordLastDecrypt } from "../storage/lifecycle.repository.js";
import type { KmsContext } from "./kms-context.js";

export const DECRYPT_RECORD_INTERVAL_MS = 60_000;
/** Beyond this many versions tracked, entries older than the interval are dropped. */
const PRUNE_ABOVE = 50_000;

const lastWritten = new WeakMap<KmsContext, Map<string, number>>();

/**
 * Notes a Decrypt served of `dekVersion`; writes it through unless this
 * process wrote it less than a minute ago. Never throws: failing to record
 * must not fail the Decrypt.
 */
export async function noteDecryptServed(
  context: KmsContext,
  tenantId: string,
  keyId: string,
  dekVersion: number,
): Promise<void> {
  const now = context.clock.now();
  const nowMs = now.getTime();
  let seen = lastWritten.get(context);
  if (seen === undefined) {
    seen = new Map();
    lastWritten.set(context, seen);
  }
  // Ids cannot contain '/', so this key is unambiguous.
  const entry = `${tenantId}/${keyId}/${dekVersion}`;
  const previous = seen.get(entry);
  if (previous !== undefined && nowMs >= previous && nowMs - previous < DECRYPT_RECORD_INTERVAL_MS) return;
  seen.set(entry, nowMs);
  if (seen.size > PRUNE_ABOVE) prune(seen, nowMs);
  try {
    await recordLastDecrypt(context.db, { tenantId, keyId }, dekVersion, now);
  } catch {
    // The database just served this Decrypt's query, so a failure here is rare and
    // passing: forget the write so that the next Decrypt of the version retries it.
    if (seen.get(entry) === nowMs) seen.delete(entry);
  }
}

function prune(seen: Map<string, number>, nowMs: number): void {
  for (const [entry, written] of seen) {
    if (nowMs - written >= DECRYPT_RECORD_INTERVAL_MS) seen.delete(entry);
  }
}

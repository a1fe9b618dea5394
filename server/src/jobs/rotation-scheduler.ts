/**
 * Scheduled rotation: finds the keys whose next rotation has come and
 * rotates them — the DEK, and the KEK too when its period is over — through
 * the same rotateKey operation an explicit RotateKey call uses.
 *
 * Replicas: due keys are claimed in small batches with FOR UPDATE SKIP LOCKED,
 * and the claim moves each key's next_rotation_time a lease ahead, so another
 * replica neither waits for them nor claims them again; the rotation then
 * sets the real next time. A replica that dies mid-batch leaves leases that
 * run out, and another replica rotates those keys.
 *
 * Failures: one key's failure never stops the run. It is recorded on the key
 * (rotation_failure_time / message / attempts, shown by GetKey and the
 * encryption status) and the key is retried later with a growing delay; the
 * next successful rotation clears it.
 */
import type { BackgroundLogger } from "./job-handler.js";
import type { KeyProtection, KeyState } from "../domain/key-model.js";
import { KmsError } from "../domain/kms-error.js";
import { addSeconds } from "../domain/rotation-policy.js";
import { dueRotations, rotationRetryDelaySeconds, scheduledRotationTime } from "../domain/rotation-schedule.js";
import { findDekVersion } from "../storage/dek-version.repository.js";
import { findKekVersion } from "../storage/kek-version.repository.js";
import { findKey } from "../storage/key.repository.js";
import { claimDueRotations, recordRotationFailure, setNextRotationTime, type KeyName } from "../storage/lifecycle.repository.js";
import type { KmsContext } from "../service/kms-context.js";
import { rotateKey } from "../service/rotate-key.js";

export interface RotationRunOptions {
  /** Keys claimed per batch (default 50). */
  readonly batchSize?: number;
  /** How long a claim keeps other replicas off a key (default 15 minutes). */
  readonly leaseSeconds?: number;
  readonly logger?: BackgroundLogger;
}

export interface RotationOutcome extends KeyName {
  readonly rotatedDek: boolean;
  readonly rotatedKek: boolean;
}

export interface RotationFailureOutcome extends KeyName {
  /** As recorded on the key for its owner to read. */
  readonly message: string;
  readonly attempts: number;
  /** The fault itself, for the server log only. */
  readonly error: unknown;
}

export interface RotationRunResult {
  readonly rotated: RotationOutcome[];
  readonly failed: RotationFailureOutcome[];
}

const DEFAULT_BATCH = 50;
const DEFAULT_LEASE_SECONDS = 15 * 60;
const MAX_FAILURE_MESSAGE = 500;

/** One scheduler pass at `now`: rotates every key due by then. */
export async function runDueRotations(context: KmsContext, now: Date, options: RotationRunOptions = {}): Promise<RotationRunResult> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH;
  const leaseUntil = addSeconds(now, options.leaseSeconds ?? DEFAULT_LEASE_SECONDS);
  const result: RotationRunResult = { rotated: [], failed: [] };
  const seen = new Set<string>();
  for (;;) {
    // Claimed keys leave the due set (their time becomes the lease, then the next
    // rotation or a retry time in the future), so this loop ends; `seen` makes
    // sure of it even if a key came back due within the run.
    const claimed = await context.db.transaction().execute((tx) => claimDueRotations(tx, now, batchSize, leaseUntil));
    const fresh = claimed.filter((key) => !seen.has(`${key.tenantId}/${key.keyId}`));
    for (const key of fresh) {
      seen.add(`${key.tenantId}/${key.keyId}`);
      await rotateOne(context, key, now, result, options.logger);
    }
    if (claimed.length < batchSize || fresh.length === 0) return result;
  }
}

async function rotateOne(context: KmsContext, name: KeyName, now: Date, result: RotationRunResult, logger: BackgroundLogger | undefined): Promise<void> {
  try {
    const row = await findKey(context.db, name.tenantId, name.keyId);
    if (row === undefined || row.state !== "ENABLED") return;
    const dek = await findDekVersion(context.db, name.tenantId, name.keyId, row.primary_dek_version);
    const kek = await findKekVersion(context.db, name.tenantId, name.keyId, row.primary_kek_version);
    if (dek === undefined || kek === undefined) throw new Error(`key ${name.keyId} has no row for a primary version`);
    const facts = {
      state: row.state as KeyState,
      protection: row.protection as KeyProtection,
      rotationPolicy: { dekRotationPeriodSeconds: row.dek_rotation_period_seconds, kekRotationPeriodSeconds: row.kek_rotation_period_seconds },
      primaryDekCreateTime: dek.create_time,
      primaryKekCreateTime: kek.create_time,
    };
    const due = dueRotations(facts, now);
    if (!due.dek && !due.kek) {
      // Rotated meanwhile (by a caller, or a replica whose lease ran out): put the real time back.
      const next = scheduledRotationTime(facts);
      if (next !== undefined) await setNextRotationTime(context.db, name, next);
      return;
    }
    // rotateKey always makes a new DEK version; with rotateKek it replaces the KEK first.
    await rotateKey(context, { tenantId: name.tenantId, keyId: name.keyId, rotateKek: due.kek });
    result.rotated.push({ ...name, rotatedDek: true, rotatedKek: due.kek });
  } catch (error) {
    if (error instanceof KmsError && (error.reason === "KEY_REVOKED" || error.reason === "KEY_DESTROYED" || error.reason === "KEY_NOT_FOUND")) {
      return; // revoked or destroyed since it was claimed: nothing to rotate
    }
    const message = failureMessage(error);
    logger?.warn("scheduled rotation failed", { tenant_id: name.tenantId, key_id: name.keyId, err: error });
    const attempts = await recordRotationFailure(context.db, name, {
      time: now,
      message,
      retryAt: (n) => addSeconds(now, rotationRetryDelaySeconds(n)),
    }).catch((recordError: unknown) => {
      logger?.error("could not record a failed scheduled rotation", { tenant_id: name.tenantId, key_id: name.keyId, err: recordError });
      return undefined;
    });
    result.failed.push({ ...name, message, attempts: attempts ?? 0, error });
  }
}

/**
 * The periodic task (jobs/periodic-tasks.ts): one pass at `now`. Failed keys
 * are recorded on the keys and retried later; the pass also throws them
 * together so that the background loop logs every fault.
 */
export async function scheduledRotationTask(context: KmsContext, now: Date): Promise<void> {
  const { failed } = await runDueRotations(context, now);
  if (failed.length > 0) {
    const names = failed.map((f) => `${f.tenantId}/${f.keyId}`).join(", ");
    throw new AggregateError(failed.map((f) => f.error), `scheduled rotation failed for ${failed.length} key(s), recorded on each: ${names}`);
  }
}

/**
 * What the key's owner sees of a failure. KmsError messages are written for
 * callers (never key material); anything else may say more than a tenant
 * should read, so it stays in the server log.
 */
function failureMessage(error: unknown): string {
  const text =
    error instanceof KmsError
      ? `${error.reason}: ${error.message}`
      : "INTERNAL: the rotation failed on the server; the server log has the cause";
  return text.length <= MAX_FAILURE_MESSAGE ? text : `${text.slice(0, MAX_FAILURE_MESSAGE - 1)}…`;
}

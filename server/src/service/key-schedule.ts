/** Recomputes keys.next_rotation_time from a key row and its primary versions. */
import type { KeyProtection, KeyState } from "../domain/key-model.js";
import type { RotationPolicy } from "../domain/rotation-policy.js";
import { scheduledRotationTime } from "../domain/rotation-schedule.js";
import type { Executor, KeyRow } from "../storage/database.js";
import { findDekVersion } from "../storage/dek-version.repository.js";
import { findKekVersion } from "../storage/kek-version.repository.js";

export interface ScheduleChanges {
  readonly state?: KeyState;
  readonly rotationPolicy?: RotationPolicy;
}

/** What next_rotation_time must be for `row` with `changes` applied: null unless ENABLED. */
export async function nextRotationTimeFor(db: Executor, row: KeyRow, changes: ScheduleChanges = {}): Promise<Date | null> {
  const state = changes.state ?? (row.state as KeyState);
  if (state !== "ENABLED") return null;
  const dek = await findDekVersion(db, row.tenant_id, row.key_id, row.primary_dek_version);
  const kek = await findKekVersion(db, row.tenant_id, row.key_id, row.primary_kek_version);
  if (dek === undefined || kek === undefined) throw new Error(`key ${row.key_id} has no row for a primary version`);
  return (
    scheduledRotationTime({
      state,
      protection: row.protection as KeyProtection,
      rotationPolicy: changes.rotationPolicy ?? {
        dekRotationPeriodSeconds: row.dek_rotation_period_seconds,
        kekRotationPeriodSeconds: row.kek_rotation_period_seconds,
      },
      primaryDekCreateTime: dek.create_time,
      primaryKekCreateTime: kek.create_time,
    }) ?? null
  );
}

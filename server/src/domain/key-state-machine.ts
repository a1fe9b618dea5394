/**
 * The state machines of a key and of its DEK versions: which transitions
 * exist, what causes each, and the guards that refuse every other one. The
 * service layer asks these functions before it writes; the tables are also
 * what the state-machine tests walk.
 *
 *   key:          ENABLED ──revoke──▶ REVOKED ──(waiting period over)──▶ DESTROYED
 *                    ▲                  │
 *                    └─────restore──────┘   (only before scheduled_destroy_time)
 *
 *   DEK version:  PRIMARY ──rotate──▶ DECRYPT_ONLY ──(grace over)──▶ PENDING_PURGE ──(nothing needs it)──▶ PURGED
 *                 PRIMARY | DECRYPT_ONLY | PENDING_PURGE ──revoke version──▶ REVOKED
 *                 any version of a key being destroyed ──▶ PURGED (material erased with the key)
 */
import type { DekVersionState, KeyState } from "./key-model.js";
import { assertKeyManageable } from "./key-rules.js";
import { KmsError } from "./kms-error.js";

export type KeyTransitionCause = "revoke" | "restore" | "destroy";

export interface KeyTransition {
  readonly from: KeyState;
  readonly to: KeyState;
  readonly cause: KeyTransitionCause;
}

/** Every key transition there is. Anything else is refused. */
export const KEY_TRANSITIONS: readonly KeyTransition[] = [
  { from: "ENABLED", to: "REVOKED", cause: "revoke" },
  { from: "REVOKED", to: "ENABLED", cause: "restore" },
  { from: "REVOKED", to: "DESTROYED", cause: "destroy" },
];

export type DekVersionTransitionCause = "rotate" | "grace-over" | "purge" | "revoke-version" | "destroy-key";

export interface DekVersionTransition {
  readonly from: DekVersionState;
  readonly to: DekVersionState;
  readonly cause: DekVersionTransitionCause;
}

/** Every DEK-version transition there is. Anything else is refused. */
export const DEK_VERSION_TRANSITIONS: readonly DekVersionTransition[] = [
  { from: "PRIMARY", to: "DECRYPT_ONLY", cause: "rotate" },
  { from: "DECRYPT_ONLY", to: "PENDING_PURGE", cause: "grace-over" },
  { from: "PENDING_PURGE", to: "PURGED", cause: "purge" },
  { from: "PRIMARY", to: "REVOKED", cause: "revoke-version" },
  { from: "DECRYPT_ONLY", to: "REVOKED", cause: "revoke-version" },
  { from: "PENDING_PURGE", to: "REVOKED", cause: "revoke-version" },
  { from: "PRIMARY", to: "PURGED", cause: "destroy-key" },
  { from: "DECRYPT_ONLY", to: "PURGED", cause: "destroy-key" },
  { from: "PENDING_PURGE", to: "PURGED", cause: "destroy-key" },
  { from: "REVOKED", to: "PURGED", cause: "destroy-key" },
];

interface KeyFacts {
  readonly tenantId: string;
  readonly keyId: string;
  readonly state: KeyState;
  readonly scheduledDestroyTime: Date | undefined;
}

/**
 * RestoreKey: only a REVOKED key whose waiting period is still running.
 * A destroyed key answers KEY_DESTROYED; an enabled one, or a revoked one
 * whose waiting period is over (it is about to be destroyed), answers
 * INVALID_STATE_TRANSITION.
 */
export function assertRestorable(key: KeyFacts, now: Date): void {
  if (key.state === "DESTROYED") {
    throw new KmsError("KEY_DESTROYED", `key ${key.keyId} of tenant ${key.tenantId} is destroyed: its material is erased and it cannot be restored`);
  }
  if (key.state === "ENABLED") {
    throw new KmsError("INVALID_STATE_TRANSITION", `key ${key.keyId} of tenant ${key.tenantId} is not revoked: only a revoked key can be restored`, {
      metadata: { state: key.state },
    });
  }
  if (key.scheduledDestroyTime !== undefined && key.scheduledDestroyTime <= now) {
    throw new KmsError(
      "INVALID_STATE_TRANSITION",
      `key ${key.keyId} of tenant ${key.tenantId} can no longer be restored: its waiting period ended at ${key.scheduledDestroyTime.toISOString()} and it is being destroyed`,
      { metadata: { state: key.state, scheduledDestroyTime: key.scheduledDestroyTime.toISOString() } },
    );
  }
}

/** The destruction job's test: revoked, and the waiting period is over. */
export function isDueForDestruction(key: Pick<KeyFacts, "state" | "scheduledDestroyTime">, now: Date): boolean {
  return key.state === "REVOKED" && key.scheduledDestroyTime !== undefined && key.scheduledDestroyTime <= now;
}

/**
 * UpdateKey changes policies of an ENABLED key only: a revoked key is restored
 * first (its waiting period was fixed when it was revoked), a destroyed one is
 * a tombstone.
 */
export function assertUpdatable(key: Pick<KeyFacts, "tenantId" | "keyId" | "state">): void {
  assertKeyManageable(key);
}

/** What RevokeDekVersion does to a version in a given state. */
export type DekVersionRevocation = "revoke" | "rotate-then-revoke" | "already-revoked";

/**
 * RevokeDekVersion: a PRIMARY version is first rotated away (so the key keeps
 * a primary), DECRYPT_ONLY and PENDING_PURGE are revoked at once, a revoked
 * one stays revoked (the call is idempotent), and a PURGED one — its material
 * already erased — is refused.
 */
export function dekVersionRevocation(keyId: string, version: number, state: DekVersionState): DekVersionRevocation {
  switch (state) {
    case "PRIMARY":
      return "rotate-then-revoke";
    case "DECRYPT_ONLY":
    case "PENDING_PURGE":
      return "revoke";
    case "REVOKED":
      return "already-revoked";
    case "PURGED":
      throw new KmsError(
        "INVALID_STATE_TRANSITION",
        `dek_version: DEK version ${version} of key ${keyId} is purged: its material is already erased, there is nothing left to revoke`,
        { field: "dek_version", metadata: { state } },
      );
  }
}

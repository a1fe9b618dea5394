import { KmsError } from "../domain/kms-error.js";
import type { Caller } from "./caller.js";

/**
 * Privileged calls (root-key administration, every tenant's key events) are
 * for the service identities configured in KMS_ADMIN_SPIFFE_IDS only; a
 * tenant token never qualifies.
 */
export function authorizeAdmin(caller: Caller, adminSpiffeIds: readonly string[]): void {
  if (caller.kind === "service" && adminSpiffeIds.includes(caller.spiffeId)) return;
  throw new KmsError("ADMIN_REQUIRED", "this call needs a privileged service identity (KMS_ADMIN_SPIFFE_IDS)");
}

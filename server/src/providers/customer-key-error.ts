/**
 * The customer-key (BYOK) role's mapping of wrap-failure classes to domain
 * reasons: the tenant must learn *why* its key cannot be used — it revoked
 * the key, it withdrew our access, or its KMS cannot be reached — and service
 * resumes by itself when the cause is gone (decision 0022).
 *
 * | failure            | KmsError reason                 |
 * |--------------------|---------------------------------|
 * | unavailable        | CUSTOMER_KEY_UNREACHABLE        |
 * | permission-denied  | CUSTOMER_KEY_PERMISSION_DENIED  |
 * | key-disabled       | CUSTOMER_KEY_REVOKED            |
 * | invalid-ciphertext | INTERNAL                        |
 * | other              | INTERNAL                        |
 *
 * The key reference is the customer's own (its ARN, vault URL, resource
 * name), so it may appear in the message and metadata the tenant sees.
 */
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import { isKeyWrappingError, type WrapFailure } from "./key-wrapping-provider.js";

const CUSTOMER_REASONS: { readonly [F in WrapFailure]: ErrorReason } = {
  unavailable: "CUSTOMER_KEY_UNREACHABLE",
  "permission-denied": "CUSTOMER_KEY_PERMISSION_DENIED",
  "key-disabled": "CUSTOMER_KEY_REVOKED",
  "invalid-ciphertext": "INTERNAL",
  other: "INTERNAL",
};

const EXPLANATIONS: { readonly [F in WrapFailure]: string } = {
  unavailable: "cannot be reached",
  "permission-denied": "no longer grants this service access",
  "key-disabled": "is disabled, scheduled for deletion or deleted",
  "invalid-ciphertext": "did not accept a wrapped key stored for it",
  other: "failed unexpectedly",
};

/** The domain error for a failed use of a customer-managed key; `what` says what was being done ("unwrapping DEK version 3 of key pii"). */
export function customerKeyError(error: unknown, what: string): KmsError {
  if (!isKeyWrappingError(error)) {
    return new KmsError("INTERNAL", `${what}: the customer-managed key failed unexpectedly`, { cause: error, metadata: { failure: "other" } });
  }
  const reason = CUSTOMER_REASONS[error.failure];
  const message =
    reason === "INTERNAL"
      ? `${what}: the customer-managed key ${EXPLANATIONS[error.failure]}`
      : `${what}: the customer-managed key ${error.keyRef} in ${error.provider} ${EXPLANATIONS[error.failure]}`;
  return new KmsError(reason, message, { cause: error, metadata: { provider: error.provider, failure: error.failure, key_ref: error.keyRef } });
}

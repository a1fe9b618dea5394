/**
 * Cryptoki return values to wrap-failure classes.
 *
 * Two moments differ: connecting (initialise, find the token, log in, find
 * the key) and operating (encrypt/decrypt on an open session). A lost
 * session, login or library is first repaired by reconnecting once; only
 * what survives that reaches these tables.
 */
import type { WrapFailure } from "../key-wrapping-provider.js";

/** The session, the login or the library is gone: reconnect and try once more. */
export const CONNECTION_LOST = new Set([
  "CKR_CRYPTOKI_NOT_INITIALIZED",
  "CKR_SESSION_HANDLE_INVALID",
  "CKR_SESSION_CLOSED",
  "CKR_SESSION_COUNT",
  "CKR_DEVICE_REMOVED",
  "CKR_DEVICE_ERROR",
  "CKR_TOKEN_NOT_PRESENT",
  "CKR_TOKEN_NOT_RECOGNIZED",
  "CKR_USER_NOT_LOGGED_IN",
  "CKR_OBJECT_HANDLE_INVALID",
  "CKR_KEY_HANDLE_INVALID",
  "CKR_OPERATION_ACTIVE",
]);

const LOGIN_REFUSED = new Set(["CKR_PIN_INCORRECT", "CKR_PIN_INVALID", "CKR_PIN_LEN_RANGE", "CKR_PIN_EXPIRED", "CKR_PIN_LOCKED", "CKR_USER_PIN_NOT_INITIALIZED", "CKR_USER_TYPE_INVALID"]);

/** A failure while connecting: `step` says where. */
export function classifyPkcs11ConnectFailure(code: string | undefined, step: "initialize" | "token" | "session" | "login" | "key"): WrapFailure {
  if (step === "login" && code !== undefined && LOGIN_REFUSED.has(code)) return "permission-denied";
  if (step === "key") return code === undefined ? "key-disabled" : "unavailable";
  return "unavailable";
}

/** A failure of encrypt (wrap) or decrypt (unwrap) on a connected session, after one reconnect. */
export function classifyPkcs11OperationFailure(code: string | undefined, operation: "wrap" | "unwrap"): WrapFailure {
  if (code === undefined) return "other";
  if (code === "CKR_KEY_FUNCTION_NOT_PERMITTED" || code === "CKR_KEY_TYPE_INCONSISTENT") return "key-disabled";
  if (code === "CKR_USER_NOT_LOGGED_IN" || code === "CKR_PIN_EXPIRED") return "permission-denied";
  if (operation === "unwrap") {
    // The standard says ENCRYPTED_DATA_INVALID for a GCM tag mismatch; SoftHSM2 answers GENERAL_ERROR.
    if (code === "CKR_ENCRYPTED_DATA_INVALID" || code === "CKR_ENCRYPTED_DATA_LEN_RANGE" || code === "CKR_GENERAL_ERROR" || code === "CKR_FUNCTION_FAILED") {
      return "invalid-ciphertext";
    }
  }
  if (CONNECTION_LOST.has(code)) return "unavailable";
  return "other";
}

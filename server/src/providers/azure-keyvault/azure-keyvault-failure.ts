/**
 * Key Vault errors to wrap-failure classes. The SDK throws a RestError with
 * the HTTP status and the service's error body; a disabled key and a missing
 * permission are both 403 and differ only in the inner error code
 * (KeyDisabled vs ForbiddenByPolicy / ForbiddenByRbac). Errors that never
 * reached the vault carry no status; token failures come from our own
 * credential, already classed.
 */
import type { WrapFailure } from "../key-wrapping-provider.js";
import { EntraTokenError } from "./entra-credential.js";

interface RestErrorLike {
  readonly name?: unknown;
  readonly code?: unknown;
  readonly statusCode?: unknown;
  readonly message?: unknown;
  readonly details?: unknown;
  readonly cause?: unknown;
}

export function classifyKeyVaultError(error: unknown, operation: "wrap" | "unwrap"): WrapFailure {
  const tokenError = findTokenError(error);
  if (tokenError !== undefined) return tokenError.failure;
  if (typeof error !== "object" || error === null) return "other";
  const e = error as RestErrorLike;
  const message = typeof e.message === "string" ? e.message : "";
  if (e.name === "AbortError" || e.name === "TimeoutError") return "unavailable";
  const status = typeof e.statusCode === "number" ? e.statusCode : undefined;
  if (status === undefined) {
    // The SDK's own checks on a fetched key, before any call.
    if (/expired at|can't be used before/.test(message)) return "key-disabled";
    if (/is not supported on key/.test(message)) return "permission-denied";
    if (e.name === "RestError") return "unavailable"; // REQUEST_SEND_ERROR, ECONNREFUSED, TLS failures: no answer.
    return "other";
  }
  if (status === 401) return "permission-denied";
  if (status === 403) return innerCode(e) === "KeyDisabled" || /disabled key/i.test(message) ? "key-disabled" : "permission-denied";
  if (status === 404 || status === 409) return "key-disabled"; // deleted (KeyNotFound) or in a deleted/recovering state
  if (status === 400) return operation === "unwrap" ? "invalid-ciphertext" : "other";
  if (status === 408 || status === 429 || status >= 500) return "unavailable";
  return "other";
}

function innerCode(error: RestErrorLike): string | undefined {
  const details = error.details as { error?: { innerError?: { code?: unknown }; innererror?: { code?: unknown } } } | undefined;
  const inner = details?.error?.innerError ?? details?.error?.innererror;
  return typeof inner?.code === "string" ? inner.code : undefined;
}

function findTokenError(error: unknown): EntraTokenError | undefined {
  for (let current: unknown = error, depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    if (current instanceof EntraTokenError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

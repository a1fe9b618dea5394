/**
 * AWS KMS errors to wrap-failure classes. The SDK names each error after the
 * service's `__type` (DisabledException, AccessDeniedException, ...); errors
 * that never reached the service carry a Node network code instead.
 */
import type { WrapFailure } from "../key-wrapping-provider.js";

const BY_NAME: Readonly<Record<string, WrapFailure>> = {
  // The key is not usable: disabled, pending deletion or import, deleted.
  DisabledException: "key-disabled",
  KMSInvalidStateException: "key-disabled",
  NotFoundException: "key-disabled",
  // Our identity may not use the key, or our credentials are not accepted.
  AccessDeniedException: "permission-denied",
  UnrecognizedClientException: "permission-denied",
  InvalidSignatureException: "permission-denied",
  IncompleteSignature: "permission-denied",
  InvalidClientTokenId: "permission-denied",
  ExpiredTokenException: "permission-denied",
  InvalidGrantTokenException: "permission-denied",
  CredentialsProviderError: "permission-denied",
  // The blob does not open under this key and encryption context.
  InvalidCiphertextException: "invalid-ciphertext",
  IncorrectKeyException: "invalid-ciphertext",
  // The service (or a key store behind it) could not answer now.
  KMSInternalException: "unavailable",
  KeyUnavailableException: "unavailable",
  DependencyTimeoutException: "unavailable",
  ThrottlingException: "unavailable",
  LimitExceededException: "unavailable",
  ServiceUnavailableException: "unavailable",
  InternalFailure: "unavailable",
  RequestTimeout: "unavailable",
  RequestTimeoutException: "unavailable",
  TimeoutError: "unavailable",
};

const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNABORTED"]);

export function classifyAwsKmsError(error: unknown): WrapFailure {
  if (typeof error !== "object" || error === null) return "other";
  const e = error as { name?: unknown; code?: unknown; $fault?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const byName = typeof e.name === "string" ? BY_NAME[e.name] : undefined;
  if (byName !== undefined) return byName;
  if (typeof e.code === "string" && NETWORK_CODES.has(e.code)) return "unavailable";
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === "number") {
    if (status >= 500 || status === 429) return "unavailable";
    if (status === 401 || status === 403) return "permission-denied";
  }
  if (e.$fault === "server") return "unavailable";
  return "other";
}

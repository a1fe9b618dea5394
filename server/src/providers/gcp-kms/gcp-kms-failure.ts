/**
 * Cloud KMS (gRPC status) errors to wrap-failure classes.
 *
 * Cloud KMS answers FAILED_PRECONDITION when the key version is disabled,
 * scheduled for destruction or destroyed, NOT_FOUND when the key is gone,
 * PERMISSION_DENIED when IAM no longer grants us the key, and
 * INVALID_ARGUMENT when a ciphertext does not decrypt under the key and AAD —
 * except when the complaint is a checksum: that is corruption in transit.
 */
import type { WrapFailure } from "../key-wrapping-provider.js";

/** gRPC status codes (the numbers are the protocol's). */
export const GrpcStatus = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

export function classifyGcpKmsError(error: unknown, operation: "wrap" | "unwrap"): WrapFailure {
  if (typeof error !== "object" || error === null) return "other";
  const { code, message } = error as { code?: unknown; message?: unknown };
  const text = typeof message === "string" ? message : "";
  switch (code) {
    case GrpcStatus.UNAVAILABLE:
    case GrpcStatus.DEADLINE_EXCEEDED:
    case GrpcStatus.RESOURCE_EXHAUSTED:
    case GrpcStatus.ABORTED:
    case GrpcStatus.INTERNAL:
    case GrpcStatus.CANCELLED:
      return "unavailable";
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.UNAUTHENTICATED:
      return "permission-denied";
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.NOT_FOUND:
      return "key-disabled";
    case GrpcStatus.INVALID_ARGUMENT:
      if (/checksum|crc32c/i.test(text)) return "unavailable";
      return operation === "unwrap" ? "invalid-ciphertext" : "other";
    default:
      return "other";
  }
}

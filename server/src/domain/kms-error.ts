/**
 * The one error type of the domain. Every refusal carries a reason that
 * clients can branch on, and — when a request field is at fault — the field's
 * name. Transport adapters map reasons to gRPC codes and HTTP statuses in one
 * table (api/error-mapping.ts); the domain knows nothing of either.
 *
 * A message must never contain key material: messages reach callers and logs.
 */
export type ErrorReason =
  | "INVALID_FIELD"
  | "MALFORMED_BODY"
  | "BODY_TOO_LARGE"
  | "TENANT_NOT_FOUND"
  | "KEY_NOT_FOUND"
  | "KEY_ALREADY_EXISTS"
  | "KEY_REVOKED"
  | "KEY_DESTROYED"
  | "DEK_VERSION_NOT_FOUND"
  | "DEK_VERSION_UNUSABLE"
  | "REFERENCE_MALFORMED"
  | "REFERENCE_TAMPERED"
  | "REFERENCE_KEY_MISMATCH"
  | "CREDENTIALS_MISSING"
  | "CLIENT_CERTIFICATE_UNTRUSTED"
  | "TOKEN_INVALID"
  | "TOKEN_EXPIRED"
  | "TENANT_FORBIDDEN"
  | "CLIENT_CERTIFICATE_REQUIRED"
  | "ROUTE_NOT_FOUND"
  | "PROVIDER_UNAVAILABLE"
  | "SHUTTING_DOWN"
  | "INTERNAL"
  | "DEK_VERSION_REVOKED"
  | "INVALID_STATE_TRANSITION"
  | "DATASET_NOT_FOUND"
  | "DATASET_ALREADY_EXISTS"
  | "PLAN_NOT_ENTITLED"
  | "CUSTOMER_KEY_REVOKED"
  | "CUSTOMER_KEY_UNREACHABLE"
  | "CUSTOMER_KEY_PERMISSION_DENIED"
  | "ADMIN_REQUIRED"
  | "EVENT_CURSOR_EXPIRED";

export interface KmsErrorOptions {
  /** The request field at fault, in proto field-path form ("key_id"). */
  readonly field?: string;
  /** Machine-readable facts for the caller ("limit": "64"). Never secrets. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** The underlying fault; kept for the server log, never sent to callers. */
  readonly cause?: unknown;
}

export class KmsError extends Error {
  override readonly name = "KmsError";
  readonly reason: ErrorReason;
  readonly field: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(reason: ErrorReason, message: string, options: KmsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.field = options.field;
    this.metadata = options.metadata ?? {};
  }
}

/** A request field that breaks its rule: the message states the rule. */
export function invalidField(field: string, rule: string, metadata?: Record<string, string>): KmsError {
  return new KmsError("INVALID_FIELD", `${field}: ${rule}`, metadata === undefined ? { field } : { field, metadata });
}

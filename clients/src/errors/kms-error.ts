import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, ErrorReason } from "../gen.js";

/** The name of an ErrorReason value without its prefix: "KEY_REVOKED". */
export type ErrorReasonName = keyof typeof ErrorReason;

export interface KmsErrorInit {
  readonly code: Code;
  readonly reason: ErrorReason;
  readonly message: string;
  readonly field?: string | undefined;
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  /** "matih.kms.v1.DataKeyService/Decrypt", when the error came from a call. */
  readonly procedure?: string | undefined;
  /** How many attempts the call made before giving up (1 without retries). */
  readonly attempts?: number | undefined;
  readonly cause?: unknown;
}

/**
 * The one error type every client call throws. Callers branch on `reason`
 * (the server's `matih.kms.v1.ErrorReason`, carried in the `ErrorDetail` of
 * every refusal), never on the message text. Errors that did not come from
 * the server (a refused connection, a deadline that passed) carry the gRPC
 * `code` and `ErrorReason.UNSPECIFIED`.
 */
export class KmsError extends Error {
  override readonly name = "KmsError";
  readonly code: Code;
  readonly reason: ErrorReason;
  readonly field: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  readonly procedure: string | undefined;
  readonly attempts: number;
  /** The server's message, without the code and reason prefix. */
  readonly rawMessage: string;

  constructor(init: KmsErrorInit) {
    super(formatMessage(init), init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.reason = init.reason;
    this.field = init.field === "" ? undefined : init.field;
    this.metadata = init.metadata ?? {};
    this.procedure = init.procedure;
    this.attempts = init.attempts ?? 1;
    this.rawMessage = init.message;
  }

  /** "KEY_REVOKED" for ErrorReason.KEY_REVOKED. */
  get reasonName(): ErrorReasonName {
    return (ErrorReason[this.reason] as ErrorReasonName | undefined) ?? "UNSPECIFIED";
  }

  /** "failed_precondition"-style name of the code (as Connect and REST spell it). */
  get codeName(): string {
    return codeName(this.code);
  }

  /**
   * Converts anything a call threw. A ConnectError keeps its code, message
   * and ErrorDetail; an AbortError becomes Canceled; anything else Unknown.
   */
  static from(error: unknown, context: { procedure?: string | undefined; attempts?: number | undefined } = {}): KmsError {
    if (error instanceof KmsError) {
      if (context.attempts === undefined || context.attempts === error.attempts) return error;
      return new KmsError({ ...fieldsOf(error), attempts: context.attempts, cause: error.cause });
    }
    const connectError = ConnectError.from(error);
    const detail = connectError.findDetails(ErrorDetailSchema)[0];
    return new KmsError({
      code: connectError.code,
      reason: detail?.reason ?? ErrorReason.UNSPECIFIED,
      message: connectError.rawMessage,
      field: detail?.field,
      metadata: detail === undefined ? undefined : { ...detail.metadata },
      procedure: context.procedure,
      attempts: context.attempts,
      cause: error,
    });
  }
}

function fieldsOf(error: KmsError): KmsErrorInit {
  return {
    code: error.code,
    reason: error.reason,
    message: error.rawMessage,
    field: error.field,
    metadata: error.metadata,
    procedure: error.procedure,
    attempts: error.attempts,
  };
}

/** True when `error` is a KmsError, and (if given) has one of `reasons`. */
export function isKmsError(error: unknown, ...reasons: ErrorReason[]): error is KmsError {
  return error instanceof KmsError && (reasons.length === 0 || reasons.includes(error.reason));
}

const CODE_NAMES: { readonly [C in Code]: string } = {
  [Code.Canceled]: "canceled",
  [Code.Unknown]: "unknown",
  [Code.InvalidArgument]: "invalid_argument",
  [Code.DeadlineExceeded]: "deadline_exceeded",
  [Code.NotFound]: "not_found",
  [Code.AlreadyExists]: "already_exists",
  [Code.PermissionDenied]: "permission_denied",
  [Code.ResourceExhausted]: "resource_exhausted",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.Aborted]: "aborted",
  [Code.OutOfRange]: "out_of_range",
  [Code.Unimplemented]: "unimplemented",
  [Code.Internal]: "internal",
  [Code.Unavailable]: "unavailable",
  [Code.DataLoss]: "data_loss",
  [Code.Unauthenticated]: "unauthenticated",
};

export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? "unknown";
}

/** Code.NotFound for "not_found"; Unknown for anything else. */
export function codeFromName(name: string): Code {
  for (const [code, spelled] of Object.entries(CODE_NAMES)) if (spelled === name) return Number(code) as Code;
  return Code.Unknown;
}

function formatMessage(init: KmsErrorInit): string {
  const reason = init.reason === ErrorReason.UNSPECIFIED ? "" : ` ${ErrorReason[init.reason] ?? init.reason}`;
  const where = init.procedure === undefined ? "" : ` ${init.procedure.slice(init.procedure.lastIndexOf(".") + 1)}:`;
  return `[${codeName(init.code)}${reason}]${where} ${init.message}`;
}

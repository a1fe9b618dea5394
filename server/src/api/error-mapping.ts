import { randomUUID } from "node:crypto";
import { enumToJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ErrorDetailSchema,
  ErrorReason as ProtoErrorReason,
  ErrorReasonSchema,
  type ErrorDetail,
} from "../../../gen/matih/kms/v1/errors_pb.js";
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import type { LogFields, Logger } from "./logger.js";

/**
 * THE table from a domain reason to its wire enum value and its gRPC code.
 * Every transport (gRPC, gRPC-Web, Connect, REST) goes through it, so REST and
 * RPC callers see the same reason, code and message for the same fault.
 * The HTTP status follows from the code (`httpStatusForCode`), with the one
 * documented override in `HTTP_STATUS_OVERRIDES`.
 */
const REASONS: { readonly [R in ErrorReason]: { readonly proto: ProtoErrorReason; readonly code: Code } } = {
  INVALID_FIELD: { proto: ProtoErrorReason.INVALID_FIELD, code: Code.InvalidArgument },
  MALFORMED_BODY: { proto: ProtoErrorReason.MALFORMED_BODY, code: Code.InvalidArgument },
  BODY_TOO_LARGE: { proto: ProtoErrorReason.BODY_TOO_LARGE, code: Code.ResourceExhausted },
  TENANT_NOT_FOUND: { proto: ProtoErrorReason.TENANT_NOT_FOUND, code: Code.NotFound },
  KEY_NOT_FOUND: { proto: ProtoErrorReason.KEY_NOT_FOUND, code: Code.NotFound },
  KEY_ALREADY_EXISTS: { proto: ProtoErrorReason.KEY_ALREADY_EXISTS, code: Code.AlreadyExists },
  KEY_REVOKED: { proto: ProtoErrorReason.KEY_REVOKED, code: Code.FailedPrecondition },
  KEY_DESTROYED: { proto: ProtoErrorReason.KEY_DESTROYED, code: Code.FailedPrecondition },
  DEK_VERSION_NOT_FOUND: { proto: ProtoErrorReason.DEK_VERSION_NOT_FOUND, code: Code.NotFound },
  DEK_VERSION_UNUSABLE: { proto: ProtoErrorReason.DEK_VERSION_UNUSABLE, code: Code.FailedPrecondition },
  REFERENCE_MALFORMED: { proto: ProtoErrorReason.REFERENCE_MALFORMED, code: Code.InvalidArgument },
  REFERENCE_TAMPERED: { proto: ProtoErrorReason.REFERENCE_TAMPERED, code: Code.InvalidArgument },
  REFERENCE_KEY_MISMATCH: { proto: ProtoErrorReason.REFERENCE_KEY_MISMATCH, code: Code.InvalidArgument },
  CREDENTIALS_MISSING: { proto: ProtoErrorReason.CREDENTIALS_MISSING, code: Code.Unauthenticated },
  CLIENT_CERTIFICATE_UNTRUSTED: { proto: ProtoErrorReason.CLIENT_CERTIFICATE_UNTRUSTED, code: Code.Unauthenticated },
  TOKEN_INVALID: { proto: ProtoErrorReason.TOKEN_INVALID, code: Code.Unauthenticated },
  TOKEN_EXPIRED: { proto: ProtoErrorReason.TOKEN_EXPIRED, code: Code.Unauthenticated },
  TENANT_FORBIDDEN: { proto: ProtoErrorReason.TENANT_FORBIDDEN, code: Code.PermissionDenied },
  CLIENT_CERTIFICATE_REQUIRED: { proto: ProtoErrorReason.CLIENT_CERTIFICATE_REQUIRED, code: Code.PermissionDenied },
  ROUTE_NOT_FOUND: { proto: ProtoErrorReason.ROUTE_NOT_FOUND, code: Code.NotFound },
  PROVIDER_UNAVAILABLE: { proto: ProtoErrorReason.PROVIDER_UNAVAILABLE, code: Code.Unavailable },
  SHUTTING_DOWN: { proto: ProtoErrorReason.SHUTTING_DOWN, code: Code.Unavailable },
  INTERNAL: { proto: ProtoErrorReason.INTERNAL, code: Code.Internal },
  DEK_VERSION_REVOKED: { proto: ProtoErrorReason.DEK_VERSION_REVOKED, code: Code.FailedPrecondition },
  INVALID_STATE_TRANSITION: { proto: ProtoErrorReason.INVALID_STATE_TRANSITION, code: Code.FailedPrecondition },
  DATASET_NOT_FOUND: { proto: ProtoErrorReason.DATASET_NOT_FOUND, code: Code.NotFound },
  DATASET_ALREADY_EXISTS: { proto: ProtoErrorReason.DATASET_ALREADY_EXISTS, code: Code.AlreadyExists },
  PLAN_NOT_ENTITLED: { proto: ProtoErrorReason.PLAN_NOT_ENTITLED, code: Code.PermissionDenied },
  CUSTOMER_KEY_REVOKED: { proto: ProtoErrorReason.CUSTOMER_KEY_REVOKED, code: Code.FailedPrecondition },
  CUSTOMER_KEY_UNREACHABLE: { proto: ProtoErrorReason.CUSTOMER_KEY_UNREACHABLE, code: Code.Unavailable },
  CUSTOMER_KEY_PERMISSION_DENIED: { proto: ProtoErrorReason.CUSTOMER_KEY_PERMISSION_DENIED, code: Code.FailedPrecondition },
  ADMIN_REQUIRED: { proto: ProtoErrorReason.ADMIN_REQUIRED, code: Code.PermissionDenied },
  EVENT_CURSOR_EXPIRED: { proto: ProtoErrorReason.EVENT_CURSOR_EXPIRED, code: Code.OutOfRange },
};

/** The gRPC code for a domain reason. */
export function codeForReason(reason: ErrorReason): Code {
  return REASONS[reason].code;
}

/** The wire enum value for a domain reason. */
export function protoReasonFor(reason: ErrorReason): ProtoErrorReason {
  return REASONS[reason].proto;
}

/**
 * The reason attached to a ConnectError that carries none: errors raised by
 * the Connect runtime itself (undecodable message, message over the size
 * limit, unknown procedure) or by code that throws a bare ConnectError.
 * Codes without a fitting reason get UNSPECIFIED.
 */
const DEFAULT_REASON_FOR_CODE: Readonly<Partial<Record<Code, ProtoErrorReason>>> = {
  [Code.InvalidArgument]: ProtoErrorReason.MALFORMED_BODY,
  [Code.ResourceExhausted]: ProtoErrorReason.BODY_TOO_LARGE,
  [Code.NotFound]: ProtoErrorReason.ROUTE_NOT_FOUND,
  [Code.Unimplemented]: ProtoErrorReason.ROUTE_NOT_FOUND,
  [Code.Unauthenticated]: ProtoErrorReason.CREDENTIALS_MISSING,
  [Code.Unavailable]: ProtoErrorReason.SHUTTING_DOWN,
  [Code.Internal]: ProtoErrorReason.INTERNAL,
  [Code.Unknown]: ProtoErrorReason.INTERNAL,
  [Code.DataLoss]: ProtoErrorReason.INTERNAL,
};

/** The standard gRPC-to-HTTP mapping (as google.rpc.Code and grpc-gateway document it). */
const HTTP_STATUS_FOR_CODE: { readonly [C in Code]: number } = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

/**
 * The one documented departure from the code-derived status: an oversized
 * body is RESOURCE_EXHAUSTED in gRPC (429 by the standard mapping, which would
 * invite a retry), but 413 Content Too Large is what HTTP clients expect.
 */
const HTTP_STATUS_OVERRIDES: Readonly<Partial<Record<ProtoErrorReason, number>>> = {
  [ProtoErrorReason.BODY_TOO_LARGE]: 413,
};

/** Lower snake case names of the codes, as the Connect protocol spells them. */
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

export function httpStatusForCode(code: Code): number {
  return HTTP_STATUS_FOR_CODE[code];
}

/** The HTTP status for an error: from its code, unless its reason overrides it. */
export function httpStatusFor(code: Code, reason: ProtoErrorReason): number {
  return HTTP_STATUS_OVERRIDES[reason] ?? HTTP_STATUS_FOR_CODE[code];
}

/** "invalid_argument" for Code.InvalidArgument. */
export function codeName(code: Code): string {
  return CODE_NAMES[code];
}

/** The message every unexpected fault is reported with; the cause stays in the log. */
export const INTERNAL_ERROR_MESSAGE = "internal error";

/**
 * Turns anything a handler threw into the ConnectError sent to the caller.
 *
 * - KmsError: its reason's code, its message, and an ErrorDetail with reason,
 *   field and metadata. INTERNAL KmsErrors are logged with their cause.
 * - ConnectError: passed through; an ErrorDetail is added when it has none
 *   (reason derived from the code).
 * - anything else: Internal with a generic message and an `error_id` that
 *   ties the response to the log line holding the cause. The cause is never
 *   sent.
 */
export function toConnectError(err: unknown, log: Logger, context: LogFields = {}): ConnectError {
  if (err instanceof KmsError) {
    const entry = REASONS[err.reason];
    const detail: ErrorDetailInit = { reason: entry.proto, field: err.field ?? "", metadata: { ...err.metadata } };
    if (err.reason === "INTERNAL") {
      const errorId = randomUUID();
      detail.metadata = { ...detail.metadata, error_id: errorId };
      log.error("internal error", { ...context, error_id: errorId, err });
    }
    return new ConnectError(err.message, entry.code, undefined, [{ desc: ErrorDetailSchema, value: detail }], err);
  }
  if (err instanceof ConnectError) {
    if (err.findDetails(ErrorDetailSchema).length > 0) return err;
    const reason = DEFAULT_REASON_FOR_CODE[err.code] ?? ProtoErrorReason.UNSPECIFIED;
    const detail: ErrorDetailInit = { reason, field: "", metadata: {} };
    if (err.code === Code.Internal || err.code === Code.Unknown || err.code === Code.DataLoss) {
      // A ConnectError with an internal code may wrap a fault whose message is
      // not meant for callers; treat it like any unexpected fault.
      const errorId = randomUUID();
      detail.metadata = { error_id: errorId };
      log.error("internal error", { ...context, error_id: errorId, err });
      return new ConnectError(INTERNAL_ERROR_MESSAGE, Code.Internal, err.metadata, [{ desc: ErrorDetailSchema, value: detail }]);
    }
    const error = new ConnectError(err.rawMessage, err.code, err.metadata, undefined, err.cause);
    error.details.push(...err.details, { desc: ErrorDetailSchema, value: detail });
    return error;
  }
  const errorId = randomUUID();
  log.error("internal error", { ...context, error_id: errorId, err });
  return new ConnectError(INTERNAL_ERROR_MESSAGE, Code.Internal, undefined, [
    { desc: ErrorDetailSchema, value: { reason: ProtoErrorReason.INTERNAL, metadata: { error_id: errorId } } },
  ]);
}

type ErrorDetailInit = { reason: ProtoErrorReason; field: string; metadata: Record<string, string> };

/** The ErrorDetail of a ConnectError, if it carries one. */
export function errorDetailOf(err: ConnectError): ErrorDetail | undefined {
  return err.findDetails(ErrorDetailSchema)[0];
}

/** "ERROR_REASON_INVALID_FIELD" for ErrorReason.INVALID_FIELD. */
export function reasonName(reason: ProtoErrorReason): string {
  const name = enumToJson(ErrorReasonSchema, reason);
  return typeof name === "string" ? name : "ERROR_REASON_UNSPECIFIED";
}

/** The JSON body of a REST error response. */
export interface RestErrorBody {
  /** The gRPC code in Connect's spelling: "invalid_argument". */
  readonly code: string;
  /** The ErrorReason enum value name: "ERROR_REASON_INVALID_FIELD". */
  readonly reason: string;
  readonly message: string;
  /** The request field at fault, when there is one. */
  readonly field?: string;
  /** Machine-readable facts, when there are any. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface RestError {
  readonly status: number;
  readonly body: RestErrorBody;
}

/**
 * The REST rendering of an error: HTTP status and JSON body
 * `{"code":"invalid_argument","reason":"ERROR_REASON_INVALID_FIELD","message":"...","field":"key_id"}`.
 * Pass a ConnectError made by `toConnectError`, or anything (it is converted).
 */
export function errorToJson(err: unknown, log: Logger, context: LogFields = {}): RestError {
  const connectError = toConnectError(err, log, context);
  const detail = errorDetailOf(connectError);
  const reason = detail?.reason ?? ProtoErrorReason.UNSPECIFIED;
  const body: { -readonly [K in keyof RestErrorBody]: RestErrorBody[K] } = {
    code: codeName(connectError.code),
    reason: reasonName(reason),
    message: connectError.rawMessage,
  };
  if (detail !== undefined && detail.field !== "") body.field = detail.field;
  if (detail !== undefined && Object.keys(detail.metadata).length > 0) body.metadata = { ...detail.metadata };
  return { status: httpStatusFor(connectError.code, reason), body };
}

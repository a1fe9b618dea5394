import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, ErrorReason as ProtoErrorReason } from "../../../gen/matih/kms/v1/errors_pb.js";
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import { codeForReason, errorToJson, httpStatusFor, protoReasonFor, toConnectError } from "./error-mapping.js";
import type { Logger } from "./logger.js";

function capture(): Logger & { lines: Array<{ level: string; message: string; fields: unknown }> } {
  const lines: Array<{ level: string; message: string; fields: unknown }> = [];
  const push = (level: string) => (message: string, fields?: unknown) => void lines.push({ level, message, fields });
  return { lines, info: push("info"), warn: push("warn"), error: push("error") };
}

const expected: Array<[ErrorReason, Code, number]> = [
  ["INVALID_FIELD", Code.InvalidArgument, 400],
  ["MALFORMED_BODY", Code.InvalidArgument, 400],
  ["BODY_TOO_LARGE", Code.ResourceExhausted, 413],
  ["TENANT_NOT_FOUND", Code.NotFound, 404],
  ["KEY_NOT_FOUND", Code.NotFound, 404],
  ["KEY_ALREADY_EXISTS", Code.AlreadyExists, 409],
  ["KEY_REVOKED", Code.FailedPrecondition, 400],
  ["KEY_DESTROYED", Code.FailedPrecondition, 400],
  ["DEK_VERSION_NOT_FOUND", Code.NotFound, 404],
  ["DEK_VERSION_UNUSABLE", Code.FailedPrecondition, 400],
  ["REFERENCE_MALFORMED", Code.InvalidArgument, 400],
  ["REFERENCE_TAMPERED", Code.InvalidArgument, 400],
  ["REFERENCE_KEY_MISMATCH", Code.InvalidArgument, 400],
  ["CREDENTIALS_MISSING", Code.Unauthenticated, 401],
  ["CLIENT_CERTIFICATE_UNTRUSTED", Code.Unauthenticated, 401],
  ["TOKEN_INVALID", Code.Unauthenticated, 401],
  ["TOKEN_EXPIRED", Code.Unauthenticated, 401],
  ["TENANT_FORBIDDEN", Code.PermissionDenied, 403],
  ["CLIENT_CERTIFICATE_REQUIRED", Code.PermissionDenied, 403],
  ["ROUTE_NOT_FOUND", Code.NotFound, 404],
  ["PROVIDER_UNAVAILABLE", Code.Unavailable, 503],
  ["SHUTTING_DOWN", Code.Unavailable, 503],
  ["INTERNAL", Code.Internal, 500],
];

describe("the error table", () => {
  it.each(expected)("%s → %s → HTTP %i, as errors.proto documents", (reason, code, status) => {
    expect(codeForReason(reason)).toBe(code);
    expect(httpStatusFor(code, protoReasonFor(reason))).toBe(status);
    expect(ProtoErrorReason[protoReasonFor(reason)]).toBe(reason);
  });
});

describe("toConnectError", () => {
  it("carries a KmsError's message, field and metadata as a typed ErrorDetail", () => {
    const err = toConnectError(new KmsError("INVALID_FIELD", "key_id: too long", { field: "key_id", metadata: { maxLength: "64" } }), capture());
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe("key_id: too long");
    const detail = err.findDetails(ErrorDetailSchema)[0];
    expect(detail?.reason).toBe(ProtoErrorReason.INVALID_FIELD);
    expect(detail?.field).toBe("key_id");
    expect(detail?.metadata).toEqual({ maxLength: "64" });
  });

  it("hides anything unexpected behind a generic Internal, logging the cause with an error id", () => {
    const log = capture();
    const err = toConnectError(new TypeError("secret connection string"), log);
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
    const detail = err.findDetails(ErrorDetailSchema)[0];
    expect(detail?.reason).toBe(ProtoErrorReason.INTERNAL);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]?.fields).toMatchObject({ error_id: detail?.metadata["error_id"] });
  });

  it("passes a ConnectError through, adding a reason derived from its code when it has none", () => {
    const err = toConnectError(new ConnectError("too big", Code.ResourceExhausted), capture());
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toBe("too big");
    expect(err.findDetails(ErrorDetailSchema)[0]?.reason).toBe(ProtoErrorReason.BODY_TOO_LARGE);
    const withDetail = toConnectError(new KmsError("KEY_REVOKED", "revoked"), capture());
    expect(toConnectError(withDetail, capture())).toBe(withDetail);
  });
});

describe("errorToJson", () => {
  it("renders {code, reason, message, field}", () => {
    const { status, body } = errorToJson(new KmsError("INVALID_FIELD", "key_id: bad", { field: "key_id" }), capture());
    expect(status).toBe(400);
    expect(body).toEqual({ code: "invalid_argument", reason: "ERROR_REASON_INVALID_FIELD", message: "key_id: bad", field: "key_id" });
  });
});

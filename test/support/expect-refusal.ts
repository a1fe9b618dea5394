import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import { ErrorReason } from "../../gen/matih/kms/v1/errors_pb.js";
import { errorDetailOf } from "../../server/src/api/error-mapping.js";

/** Awaits a call that must fail, and checks its code, reason and (optionally) field. */
export async function expectRefusal(
  call: Promise<unknown>,
  expected: { code: Code; reason: keyof typeof ErrorReason; field?: string },
): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "the call should have been refused").toBeInstanceOf(ConnectError);
  const connectError = error as ConnectError;
  const detail = errorDetailOf(connectError);
  expect({ code: Code[connectError.code], reason: detail === undefined ? undefined : ErrorReason[detail.reason] }).toEqual({
    code: Code[expected.code],
    reason: expected.reason,
  });
  if (expected.field !== undefined) {
    expect(detail?.field).toBe(expected.field);
    expect(connectError.rawMessage).toContain(expected.field);
  }
  return connectError;
}

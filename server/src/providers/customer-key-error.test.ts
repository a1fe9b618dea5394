import { describe, expect, it } from "vitest";
import { KmsError } from "../domain/kms-error.js";
import { customerKeyError } from "./customer-key-error.js";
import { KeyWrappingError } from "./key-wrapping-provider.js";

const KEY_REF = "arn:aws:kms:eu-west-1:444455556666:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const failing = (failure: ConstructorParameters<typeof KeyWrappingError>[0]) =>
  new KeyWrappingError(failure, { provider: "aws-kms", keyRef: KEY_REF, operation: "unwrap" }, "AccessDeniedException: ...");

describe("customerKeyError", () => {
  it.each([
    ["unavailable", "CUSTOMER_KEY_UNREACHABLE", /cannot be reached/],
    ["permission-denied", "CUSTOMER_KEY_PERMISSION_DENIED", /no longer grants this service access/],
    ["key-disabled", "CUSTOMER_KEY_REVOKED", /disabled, scheduled for deletion or deleted/],
    ["invalid-ciphertext", "INTERNAL", /did not accept a wrapped key/],
    ["other", "INTERNAL", /failed unexpectedly/],
  ] as const)("tells the tenant why: %s is %s", (failure, reason, explanation) => {
    const error = customerKeyError(failing(failure), "unwrapping DEK version 3 of key pii");
    expect(error).toBeInstanceOf(KmsError);
    expect(error.reason).toBe(reason);
    expect(error.message).toMatch(explanation);
    expect(error.message).toMatch(/^unwrapping DEK version 3 of key pii: /);
    expect(error.metadata).toEqual({ provider: "aws-kms", failure, key_ref: KEY_REF });
    expect(error.cause).toBeInstanceOf(KeyWrappingError);
  });

  it("names the customer's key in what the tenant sees when the cause is on the customer's side", () => {
    expect(customerKeyError(failing("key-disabled"), "x").message).toContain(KEY_REF);
  });

  it("maps an error that is not a KeyWrappingError to INTERNAL", () => {
    expect(customerKeyError(new RangeError("bug"), "x")).toMatchObject({ reason: "INTERNAL", metadata: { failure: "other" } });
  });
});

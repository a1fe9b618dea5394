import { describe, expect, it } from "vitest";
import { classifyKeyVaultError } from "./azure-keyvault-failure.js";
import { EntraTokenError } from "./entra-credential.js";

/** The RestError shape: statusCode, code, and the service's error body in `details`. */
const restError = (statusCode: number | undefined, code: string, inner?: string, message = "x") =>
  Object.assign(new Error(message), { name: "RestError", statusCode, code, details: { error: { code, message, ...(inner === undefined ? {} : { innerError: { code: inner } }) } } });

describe("classifyKeyVaultError", () => {
  it("403 with inner error KeyDisabled is key-disabled; other 403s are permission-denied", () => {
    expect(classifyKeyVaultError(restError(403, "Forbidden", "KeyDisabled", "Operation unwrapKey is not allowed on a disabled key."), "unwrap")).toBe("key-disabled");
    expect(classifyKeyVaultError(restError(403, "Forbidden", "ForbiddenByPolicy"), "unwrap")).toBe("permission-denied");
    expect(classifyKeyVaultError(restError(403, "Forbidden", "ForbiddenByRbac"), "wrap")).toBe("permission-denied");
  });

  it.each([
    [401, "Unauthorized", "unwrap", "permission-denied"],
    [404, "KeyNotFound", "unwrap", "key-disabled"],
    [409, "Conflict", "wrap", "key-disabled"],
    [400, "BadParameter", "unwrap", "invalid-ciphertext"],
    [400, "BadParameter", "wrap", "other"],
    [429, "Throttled", "wrap", "unavailable"],
    [500, "InternalServerError", "unwrap", "unavailable"],
    [503, "ServiceUnavailable", "unwrap", "unavailable"],
  ] as const)("HTTP %i %s on %s is %s", (status, code, operation, expected) => {
    expect(classifyKeyVaultError(restError(status, code), operation)).toBe(expected);
  });

  it("a request that never got an answer (REQUEST_SEND_ERROR, ECONNREFUSED) or timed out is unavailable", () => {
    expect(classifyKeyVaultError(restError(undefined, "ECONNREFUSED"), "wrap")).toBe("unavailable");
    expect(classifyKeyVaultError(Object.assign(new Error("aborted"), { name: "AbortError" }), "unwrap")).toBe("unavailable");
  });

  it("takes the class of our credential's failure, even wrapped in the SDK's error", () => {
    const denied = new EntraTokenError("permission-denied", "invalid_client");
    expect(classifyKeyVaultError(denied, "wrap")).toBe("permission-denied");
    expect(classifyKeyVaultError(new Error("outer", { cause: new EntraTokenError("unavailable", "no answer") }), "unwrap")).toBe("unavailable");
  });

  it("the SDK's own refusals of an expired key or a forbidden operation are key-disabled and permission-denied", () => {
    expect(classifyKeyVaultError(new Error("Key https://v/keys/k/1 expired at 2024-01-01T00:00:00.000Z"), "wrap")).toBe("key-disabled");
    expect(classifyKeyVaultError(new Error("Operation wrapKey is not supported on key https://v/keys/k/1"), "wrap")).toBe("permission-denied");
    expect(classifyKeyVaultError(new TypeError("bug"), "wrap")).toBe("other");
  });
});

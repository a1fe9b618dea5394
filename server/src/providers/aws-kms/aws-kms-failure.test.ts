import { describe, expect, it } from "vitest";
import { classifyAwsKmsError } from "./aws-kms-failure.js";

/** Shapes as the SDK throws them: `name` from the service's __type, `$fault`, `$metadata`. */
const serviceError = (name: string, status: number) => Object.assign(new Error("x"), { name, $fault: status >= 500 ? "server" : "client", $metadata: { httpStatusCode: status } });

describe("classifyAwsKmsError", () => {
  it.each([
    ["DisabledException", 400, "key-disabled"],
    ["KMSInvalidStateException", 400, "key-disabled"],
    ["NotFoundException", 400, "key-disabled"],
    ["AccessDeniedException", 400, "permission-denied"],
    ["UnrecognizedClientException", 400, "permission-denied"],
    ["InvalidSignatureException", 400, "permission-denied"],
    ["ExpiredTokenException", 400, "permission-denied"],
    ["InvalidCiphertextException", 400, "invalid-ciphertext"],
    ["IncorrectKeyException", 400, "invalid-ciphertext"],
    ["KMSInternalException", 500, "unavailable"],
    ["KeyUnavailableException", 500, "unavailable"],
    ["DependencyTimeoutException", 503, "unavailable"],
    ["ThrottlingException", 400, "unavailable"],
    ["SomethingNew", 503, "unavailable"],
    ["SomethingNew", 403, "permission-denied"],
    ["ValidationException", 400, "other"],
  ] as const)("%s (HTTP %i) is %s", (name, status, expected) => {
    expect(classifyAwsKmsError(serviceError(name, status))).toBe(expected);
  });

  it.each(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND"])("a network error %s that never reached the service is unavailable", (code) => {
    expect(classifyAwsKmsError(Object.assign(new Error("connect"), { code }))).toBe("unavailable");
  });

  it("the SDK's TimeoutError (request timeout, socket hang-up) is unavailable", () => {
    expect(classifyAwsKmsError(Object.assign(new Error("socket hang up"), { name: "TimeoutError" }))).toBe("unavailable");
  });

  it("a credentials-chain failure is permission-denied; anything unknown is other", () => {
    expect(classifyAwsKmsError(Object.assign(new Error("no creds"), { name: "CredentialsProviderError" }))).toBe("permission-denied");
    expect(classifyAwsKmsError(new TypeError("bug"))).toBe("other");
    expect(classifyAwsKmsError("string")).toBe("other");
  });
});

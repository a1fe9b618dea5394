import { describe, expect, it } from "vitest";
import { classifyPkcs11ConnectFailure, classifyPkcs11OperationFailure } from "./pkcs11-failure.js";

describe("classifyPkcs11ConnectFailure", () => {
  it("a refused login is permission-denied", () => {
    for (const code of ["CKR_PIN_INCORRECT", "CKR_PIN_LOCKED", "CKR_PIN_EXPIRED"]) expect(classifyPkcs11ConnectFailure(code, "login")).toBe("permission-denied");
  });
  it("a key the token does not hold is key-disabled; a failure to look it up is unavailable", () => {
    expect(classifyPkcs11ConnectFailure(undefined, "key")).toBe("key-disabled");
    expect(classifyPkcs11ConnectFailure("CKR_DEVICE_ERROR", "key")).toBe("unavailable");
  });
  it("a library that does not initialise, or a token not present, is unavailable", () => {
    expect(classifyPkcs11ConnectFailure("CKR_GENERAL_ERROR", "initialize")).toBe("unavailable");
    expect(classifyPkcs11ConnectFailure(undefined, "token")).toBe("unavailable");
  });
});

describe("classifyPkcs11OperationFailure", () => {
  it.each([
    ["CKR_KEY_FUNCTION_NOT_PERMITTED", "wrap", "key-disabled"],
    ["CKR_KEY_FUNCTION_NOT_PERMITTED", "unwrap", "key-disabled"],
    ["CKR_USER_NOT_LOGGED_IN", "unwrap", "permission-denied"],
    ["CKR_ENCRYPTED_DATA_INVALID", "unwrap", "invalid-ciphertext"],
    ["CKR_ENCRYPTED_DATA_LEN_RANGE", "unwrap", "invalid-ciphertext"],
    // SoftHSM2 reports a GCM tag mismatch as CKR_GENERAL_ERROR.
    ["CKR_GENERAL_ERROR", "unwrap", "invalid-ciphertext"],
    ["CKR_GENERAL_ERROR", "wrap", "other"],
    ["CKR_DEVICE_REMOVED", "wrap", "unavailable"],
    ["CKR_SESSION_HANDLE_INVALID", "unwrap", "unavailable"],
    ["CKR_DATA_LEN_RANGE", "wrap", "other"],
  ] as const)("%s on %s is %s", (code, operation, expected) => {
    expect(classifyPkcs11OperationFailure(code, operation)).toBe(expected);
  });
});

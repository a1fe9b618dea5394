import { describe, expect, it } from "vitest";
import { classifyGcpKmsError, GrpcStatus } from "./gcp-kms-failure.js";

const status = (code: number, message = "") => Object.assign(new Error(message), { code, details: message });

describe("classifyGcpKmsError", () => {
  it.each([
    [GrpcStatus.UNAVAILABLE, "unavailable"],
    [GrpcStatus.DEADLINE_EXCEEDED, "unavailable"],
    [GrpcStatus.RESOURCE_EXHAUSTED, "unavailable"],
    [GrpcStatus.INTERNAL, "unavailable"],
    [GrpcStatus.CANCELLED, "unavailable"],
    [GrpcStatus.PERMISSION_DENIED, "permission-denied"],
    [GrpcStatus.UNAUTHENTICATED, "permission-denied"],
    [GrpcStatus.FAILED_PRECONDITION, "key-disabled"],
    [GrpcStatus.NOT_FOUND, "key-disabled"],
    [GrpcStatus.UNKNOWN, "other"],
  ] as const)("gRPC status %i is %s", (code, expected) => {
    expect(classifyGcpKmsError(status(code), "unwrap")).toBe(expected);
  });

  it("INVALID_ARGUMENT on Decrypt is invalid-ciphertext, on Encrypt other", () => {
    const error = status(GrpcStatus.INVALID_ARGUMENT, "Decryption failed: verify that 'name' refers to the correct CryptoKey.");
    expect(classifyGcpKmsError(error, "unwrap")).toBe("invalid-ciphertext");
    expect(classifyGcpKmsError(error, "wrap")).toBe("other");
  });

  it("INVALID_ARGUMENT about a checksum is corruption in transit: unavailable, on either operation", () => {
    const error = status(GrpcStatus.INVALID_ARGUMENT, "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.");
    expect(classifyGcpKmsError(error, "unwrap")).toBe("unavailable");
    expect(classifyGcpKmsError(error, "wrap")).toBe("unavailable");
  });

  it("an error without a gRPC status is other", () => {
    expect(classifyGcpKmsError(new Error("bug"), "wrap")).toBe("other");
  });
});

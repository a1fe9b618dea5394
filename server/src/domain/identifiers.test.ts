import { describe, expect, it } from "vitest";
import { isValidId, requireValidId } from "./identifiers.js";
import { KmsError } from "./kms-error.js";

describe("tenant and key ids", () => {
  it.each(["a", "A", "0", "tenant-1", "pii_data", "x".repeat(64)])("accepts %s", (id) => {
    expect(isValidId(id)).toBe(true);
  });

  it.each(["", "-lead", "_lead", "x".repeat(65), "a b", "a/b", "a.b", "ä", "a\u0000", "../etc"])("refuses %j", (id) => {
    expect(isValidId(id)).toBe(false);
  });

  it("names the field and the rule when refusing", () => {
    const error = (() => {
      try {
        requireValidId("key_id", "no/slashes");
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(KmsError);
    expect((error as KmsError).reason).toBe("INVALID_FIELD");
    expect((error as KmsError).field).toBe("key_id");
    expect((error as KmsError).message).toMatch(/^key_id: must be 1-64 characters/);
  });
});

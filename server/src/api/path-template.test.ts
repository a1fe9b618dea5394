import { describe, expect, it } from "vitest";
import { KmsError } from "../domain/kms-error.js";
import { matchPathTemplate, parsePathTemplate } from "./path-template.js";

describe("parsePathTemplate", () => {
  it("parses literals, variables and a verb", () => {
    const t = parsePathTemplate("/api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:generateDataKey");
    expect(t.verb).toBe("generateDataKey");
    expect(t.variables).toEqual([
      { fieldPath: "tenant_id", start: 3, end: 4 },
      { fieldPath: "key_id", start: 6, end: 7 },
    ]);
    expect(t.segments.map((s) => s.kind)).toEqual(["literal", "literal", "literal", "single", "literal", "literal", "single"]);
  });

  it("parses {var=pattern} and a trailing **", () => {
    const t = parsePathTemplate("/v1/{name=projects/*/keys/*}/{rest=**}");
    expect(t.variables).toEqual([
      { fieldPath: "name", start: 1, end: 5 },
      { fieldPath: "rest", start: 5, end: 6 },
    ]);
  });

  it.each(["no-slash", "/a/{unclosed", "/a/{x}/{x}", "/a/**/b", "/a/{b={c}}", "/a/{bad-name}", "/a:"])("refuses %s", (source) => {
    expect(() => parsePathTemplate(source)).toThrow(/invalid path template/);
  });
});

describe("matchPathTemplate", () => {
  const keys = parsePathTemplate("/api/v1/tenants/{tenant_id}/encryption/keys/{key_id}");
  const decrypt = parsePathTemplate("/api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:decrypt");

  it("extracts and percent-decodes single-segment variables", () => {
    expect(matchPathTemplate(keys, "/api/v1/tenants/t%201/encryption/keys/k1")).toEqual(
      new Map([
        ["tenant_id", "t 1"],
        ["key_id", "k1"],
      ]),
    );
  });

  it("matches the verb only when present, and strips it from the last variable", () => {
    expect(matchPathTemplate(decrypt, "/api/v1/tenants/t1/encryption/keys/k1:decrypt")?.get("key_id")).toBe("k1");
    expect(matchPathTemplate(decrypt, "/api/v1/tenants/t1/encryption/keys/k1")).toBeUndefined();
    expect(matchPathTemplate(decrypt, "/api/v1/tenants/t1/encryption/keys/k1:encrypt")).toBeUndefined();
  });

  it("does not match wrong literals, extra or missing segments, or empty variable segments", () => {
    expect(matchPathTemplate(keys, "/api/v2/tenants/t1/encryption/keys/k1")).toBeUndefined();
    expect(matchPathTemplate(keys, "/api/v1/tenants/t1/encryption/keys/k1/x")).toBeUndefined();
    expect(matchPathTemplate(keys, "/api/v1/tenants/t1/encryption/keys")).toBeUndefined();
    expect(matchPathTemplate(keys, "/api/v1/tenants//encryption/keys/k1")).toBeUndefined();
  });

  it("matches ** over several segments, keeping %2F encoded", () => {
    const t = parsePathTemplate("/files/{path=**}");
    expect(matchPathTemplate(t, "/files/a/b%2Fc/d")?.get("path")).toBe("a/b%2Fc/d");
    expect(matchPathTemplate(t, "/files")?.get("path")).toBe(""); // zero segments
    expect(matchPathTemplate(t, "/other/a")).toBeUndefined();
  });

  it("refuses invalid percent-encoding in a variable with INVALID_FIELD naming it", () => {
    try {
      matchPathTemplate(keys, "/api/v1/tenants/t1/encryption/keys/%E0%A4%A");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(KmsError);
      expect((err as KmsError).reason).toBe("INVALID_FIELD");
      expect((err as KmsError).field).toBe("key_id");
    }
  });
});

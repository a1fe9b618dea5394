import { describe, expect, it } from "vitest";
import { encodeKekWrapContext } from "../domain/root-key-provider.js";
import {
  checkWrapPlaintext,
  encodeWrapContext,
  KeyWrappingError,
  MAX_WRAP_PLAINTEXT_BYTES,
  probeKeyWrappingProvider,
  wrapContextFields,
  type KeyWrappingProvider,
  type WrapContext,
} from "./key-wrapping-provider.js";

const context: WrapContext = { purpose: "kek", tenantId: "t1", keyId: "pii", version: 2 };

describe("wrap context encodings", () => {
  it("encodes a KEK context exactly as the root port's encodeKekWrapContext (decision 0002)", () => {
    expect(encodeWrapContext(context)).toEqual(encodeKekWrapContext({ tenantId: "t1", keyId: "pii", kekVersion: 2 }));
  });

  it("gives every purpose, tenant, key and version its own bytes", () => {
    const variants: WrapContext[] = [
      context,
      { ...context, purpose: "dek" },
      { ...context, purpose: "probe" },
      { ...context, tenantId: "t2" },
      { ...context, keyId: "docs" },
      { ...context, version: 3 },
      // Moving a character across a field boundary must change the bytes too.
      { ...context, tenantId: "t1p", keyId: "ii" },
    ];
    const encoded = new Set(variants.map((v) => encodeWrapContext(v).toString("hex")));
    expect(encoded.size).toBe(variants.length);
  });

  it("maps the context to an encryption-context map a key policy can name", () => {
    expect(wrapContextFields({ ...context, purpose: "dek" })).toEqual({
      "matih-purpose": "dek",
      "matih-tenant": "t1",
      "matih-key": "pii",
      "matih-version": "2",
    });
  });

  it.each([
    ["an empty tenant", { ...context, tenantId: "" }],
    ["a NUL in the key id", { ...context, keyId: "a\u0000b" }],
    ["a negative version", { ...context, version: -1 }],
    ["a fractional version", { ...context, version: 1.5 }],
  ])("refuses %s, which would make the encoding ambiguous", (_what, bad) => {
    expect(() => encodeWrapContext(bad)).toThrow(TypeError);
    expect(() => wrapContextFields(bad)).toThrow(TypeError);
  });
});

describe("checkWrapPlaintext", () => {
  const where = { provider: "aws-kms" as const, keyRef: "arn:aws:kms:us-east-1:111122223333:key/x" };
  it("accepts 1 to 4096 bytes and refuses empty or larger plaintexts as 'other' before any call", () => {
    expect(() => checkWrapPlaintext(Buffer.alloc(1), where)).not.toThrow();
    expect(() => checkWrapPlaintext(Buffer.alloc(MAX_WRAP_PLAINTEXT_BYTES), where)).not.toThrow();
    for (const size of [0, MAX_WRAP_PLAINTEXT_BYTES + 1]) {
      const error = (() => {
        try {
          checkWrapPlaintext(Buffer.alloc(size), where);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(error).toBeInstanceOf(KeyWrappingError);
      expect(error).toMatchObject({ failure: "other", provider: "aws-kms", operation: "wrap" });
    }
  });
});

describe("probeKeyWrappingProvider", () => {
  function fakeProvider(unwrapResult: (blob: Buffer) => Buffer): KeyWrappingProvider {
    return {
      kind: "gcp-kms",
      keyRef: "projects/p/locations/l/keyRings/r/cryptoKeys/k",
      wrap: async (plaintext) => Buffer.concat([Buffer.from("w:"), plaintext]),
      unwrap: async (blob) => unwrapResult(Buffer.from(blob)),
      close: async () => {},
    };
  }

  it("resolves when the provider round-trips the probe", async () => {
    await expect(probeKeyWrappingProvider(fakeProvider((blob) => blob.subarray(2)))).resolves.toBeUndefined();
  });

  it("fails as 'other' when the provider returns different bytes", async () => {
    await expect(probeKeyWrappingProvider(fakeProvider(() => Buffer.alloc(32, 1)))).rejects.toMatchObject({ failure: "other" });
  });

  it("passes the provider's own failure through", async () => {
    const failing = fakeProvider(() => {
      throw new KeyWrappingError("key-disabled", { provider: "gcp-kms", keyRef: "k", operation: "unwrap" }, "disabled");
    });
    await expect(probeKeyWrappingProvider(failing)).rejects.toMatchObject({ failure: "key-disabled" });
  });
});

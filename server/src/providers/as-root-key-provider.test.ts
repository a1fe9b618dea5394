import { describe, expect, it } from "vitest";
import { KmsError } from "../domain/kms-error.js";
import { asRootKeyProvider, kekContext } from "./as-root-key-provider.js";
import { KeyWrappingError, type KeyWrappingProvider, type WrapContext, type WrapFailure } from "./key-wrapping-provider.js";

const KEY_REF = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const context = { tenantId: "t1", keyId: "pii", kekVersion: 7 };

/** A port implementation that records what it is asked and fails on demand: the adapter is all that is under test. */
function recordingProvider(failWith?: WrapFailure | Error) {
  const seen: WrapContext[] = [];
  const provider: KeyWrappingProvider = {
    kind: "aws-kms",
    keyRef: KEY_REF,
    async wrap(plaintext, ctx) {
      seen.push(ctx);
      if (failWith instanceof Error) throw failWith;
      if (failWith !== undefined) throw new KeyWrappingError(failWith, { provider: "aws-kms", keyRef: KEY_REF, operation: "wrap" }, "refused");
      return Buffer.concat([Buffer.from("blob:"), plaintext]);
    },
    async unwrap(wrapped, ctx) {
      seen.push(ctx);
      if (failWith instanceof Error) throw failWith;
      if (failWith !== undefined) throw new KeyWrappingError(failWith, { provider: "aws-kms", keyRef: KEY_REF, operation: "unwrap" }, "refused");
      return Buffer.from(wrapped).subarray(5);
    },
    close: async () => {},
  };
  return { provider, seen };
}

describe("asRootKeyProvider", () => {
  it("names the provider kind and its key ref as the root provider and current key id", () => {
    const root = asRootKeyProvider(recordingProvider().provider);
    expect(root.name).toBe("aws-kms");
    expect(root.currentKeyId).toBe(KEY_REF);
  });

  it("passes the KEK context through as purpose 'kek' with the KEK version", async () => {
    const { provider, seen } = recordingProvider();
    const root = asRootKeyProvider(provider);
    const wrapped = await root.wrap(Buffer.from("kek"), context);
    expect(await root.unwrap(wrapped, context, KEY_REF)).toEqual(Buffer.from("kek"));
    expect(seen).toEqual([kekContext(context), kekContext(context)]);
    expect(kekContext(context)).toEqual({ purpose: "kek", tenantId: "t1", keyId: "pii", version: 7 });
  });

  it("answers PROVIDER_UNAVAILABLE, without calling the provider, for a root key id it does not hold", async () => {
    const { provider, seen } = recordingProvider();
    await expect(asRootKeyProvider(provider).unwrap(Buffer.from("blob:x"), context, "arn:aws:kms:us-east-1:111122223333:key/other")).rejects.toMatchObject({
      reason: "PROVIDER_UNAVAILABLE",
      metadata: { provider: "aws-kms", failure: "key-not-configured" },
    });
    expect(seen).toEqual([]);
  });

  it.each([
    ["unavailable", "PROVIDER_UNAVAILABLE"],
    ["permission-denied", "PROVIDER_UNAVAILABLE"],
    ["key-disabled", "PROVIDER_UNAVAILABLE"],
    ["invalid-ciphertext", "INTERNAL"],
    ["other", "INTERNAL"],
  ] as const)("maps %s to %s on wrap and unwrap, keeping the class in the metadata and the cause", async (failure, reason) => {
    const root = asRootKeyProvider(recordingProvider(failure).provider);
    for (const call of [() => root.wrap(Buffer.from("kek"), context), () => root.unwrap(Buffer.from("blob:kek"), context, KEY_REF)]) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(KmsError);
      expect(error).toMatchObject({ reason, metadata: { provider: "aws-kms", failure } });
      expect((error as KmsError).cause).toBeInstanceOf(KeyWrappingError);
    }
  });

  it("maps an unexpected error (not a KeyWrappingError) to INTERNAL", async () => {
    const root = asRootKeyProvider(recordingProvider(new RangeError("bug")).provider);
    await expect(root.wrap(Buffer.from("kek"), context)).rejects.toMatchObject({ reason: "INTERNAL", metadata: { failure: "other" } });
  });
});

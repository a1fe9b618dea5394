/**
 * The one adapter from the wrapping port to the service's root port: any
 * KeyWrappingProvider can hold the master key.
 *
 * Mapping of failure classes to domain reasons (the root is the platform's own
 * key, so every "cannot use it now" is the service being unavailable, and a
 * KEK that does not open is a server fault, as with the local provider):
 *
 * | failure            | KmsError reason      |
 * |--------------------|----------------------|
 * | unavailable        | PROVIDER_UNAVAILABLE |
 * | permission-denied  | PROVIDER_UNAVAILABLE |
 * | key-disabled       | PROVIDER_UNAVAILABLE |
 * | invalid-ciphertext | INTERNAL             |
 * | other              | INTERNAL             |
 *
 * The metadata says `provider` and `failure` (never secrets), so an operator
 * reading the log or a status sees which class it was.
 */
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import type { KekWrapContext, RootKeyProvider } from "../domain/root-key-provider.js";
import { isKeyWrappingError, type KeyWrappingProvider, type WrapContext, type WrapFailure } from "./key-wrapping-provider.js";

const ROOT_REASONS: { readonly [F in WrapFailure]: ErrorReason } = {
  unavailable: "PROVIDER_UNAVAILABLE",
  "permission-denied": "PROVIDER_UNAVAILABLE",
  "key-disabled": "PROVIDER_UNAVAILABLE",
  "invalid-ciphertext": "INTERNAL",
  other: "INTERNAL",
};

export function kekContext(context: KekWrapContext): WrapContext {
  return { purpose: "kek", tenantId: context.tenantId, keyId: context.keyId, version: context.kekVersion };
}

export function asRootKeyProvider(provider: KeyWrappingProvider): RootKeyProvider {
  return {
    name: provider.kind,
    currentKeyId: provider.keyRef,
    async wrap(plaintext: Uint8Array, context: KekWrapContext): Promise<Buffer> {
      try {
        return await provider.wrap(plaintext, kekContext(context));
      } catch (error) {
        throw rootError(error, provider, `KEK version ${context.kekVersion} of key ${context.keyId} could not be wrapped under the master key`);
      }
    },
    async unwrap(wrapped: Uint8Array, context: KekWrapContext, rootKeyId: string): Promise<Buffer> {
      if (rootKeyId !== provider.keyRef) {
        throw new KmsError("PROVIDER_UNAVAILABLE", `master key ${rootKeyId} is not held by this server's ${provider.kind} provider (it holds ${provider.keyRef})`, {
          metadata: { provider: provider.kind, failure: "key-not-configured" },
        });
      }
      try {
        return await provider.unwrap(wrapped, kekContext(context));
      } catch (error) {
        throw rootError(error, provider, `KEK version ${context.kekVersion} of key ${context.keyId} failed to unwrap under the master key`);
      }
    },
    holdsKey: (rootKeyId) => rootKeyId === provider.keyRef,
    close: () => provider.close(),
  };
}

function rootError(error: unknown, provider: KeyWrappingProvider, what: string): KmsError {
  if (!isKeyWrappingError(error)) {
    return new KmsError("INTERNAL", what, { cause: error, metadata: { provider: provider.kind, failure: "other" } });
  }
  const reason = ROOT_REASONS[error.failure];
  const message = reason === "PROVIDER_UNAVAILABLE" ? `${what}: the ${provider.kind} master key is not usable now (${error.failure})` : what;
  return new KmsError(reason, message, { cause: error, metadata: { provider: provider.kind, failure: error.failure } });
}

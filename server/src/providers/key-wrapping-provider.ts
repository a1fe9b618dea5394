/**
 * The provider-neutral wrapping port, for both roles a key holder plays:
 *
 * - the master key (root of trust): wraps each KEK; adapted to the service's
 *   `RootKeyProvider` port by `asRootKeyProvider`;
 * - a customer's key (BYOK): the tenant's own KEK in its cloud KMS, wrapping
 *   that key's DEKs.
 *
 * A provider is bound to one key. It wraps a key's bytes under that key with a
 * context (tenant, key, version, purpose) bound as associated data — AAD in
 * AES-GCM, EncryptionContext in AWS KMS, additionalAuthenticatedData in Cloud
 * KMS — so a wrapped blob opens only under the context it was made for.
 *
 * Every failure is a `KeyWrappingError` with one of five classes, so callers
 * (the root adapter, BYOK status, health probes) branch on the class, never on
 * an SDK's error shape. Messages never contain key material.
 */
import { encodeKekWrapContext } from "../domain/root-key-provider.js";

/** The provider kinds behind this port. The embedded `local` root provider predates it (see asRootKeyProvider). */
export type ProviderKind = "pkcs11" | "aws-kms" | "azure-keyvault" | "gcp-kms";

/** What is being wrapped: a KEK under a master key, a DEK under a customer key, or a health probe's dummy. */
export type WrapPurpose = "kek" | "dek" | "probe";

/** What a wrapped blob is bound to. Unwrapping under any other context fails as `invalid-ciphertext`. */
export interface WrapContext {
  readonly purpose: WrapPurpose;
  readonly tenantId: string;
  readonly keyId: string;
  /** The KEK version (purpose "kek") or DEK version (purpose "dek"); 0 for a probe. */
  readonly version: number;
}

/**
 * The closed set of failure classes.
 *
 * - `unavailable`: the provider could not be reached or did not answer in time
 *   (network, throttling, 5xx, HSM session or library lost, a response that
 *   failed its integrity check). Transient: retrying later may succeed.
 * - `permission-denied`: the provider answered, but our identity may not use
 *   the key (IAM/RBAC/key policy withdrawn, bad credentials, wrong PIN).
 * - `key-disabled`: the key exists no more in a usable state: disabled,
 *   scheduled for deletion, deleted, or its usage switched off. For a
 *   customer key this is the customer's revocation.
 * - `invalid-ciphertext`: the blob does not open under this key and context:
 *   another key wrapped it, the context differs, or a byte was altered.
 * - `other`: anything else (a bug, an unexpected answer); the cause says more.
 */
export type WrapFailure = "unavailable" | "permission-denied" | "key-disabled" | "invalid-ciphertext" | "other";

export const WRAP_FAILURES: readonly WrapFailure[] = ["unavailable", "permission-denied", "key-disabled", "invalid-ciphertext", "other"];

export class KeyWrappingError extends Error {
  override readonly name = "KeyWrappingError";
  readonly failure: WrapFailure;
  readonly provider: ProviderKind;
  readonly keyRef: string;
  readonly operation: "wrap" | "unwrap";

  constructor(
    failure: WrapFailure,
    where: { readonly provider: ProviderKind; readonly keyRef: string; readonly operation: "wrap" | "unwrap" },
    message: string,
    options: { readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.failure = failure;
    this.provider = where.provider;
    this.keyRef = where.keyRef;
    this.operation = where.operation;
  }
}

export function isKeyWrappingError(error: unknown): error is KeyWrappingError {
  return error instanceof KeyWrappingError;
}

export interface KeyWrappingProvider {
  readonly kind: ProviderKind;
  /**
   * The key this provider wraps under, as it is stored beside each blob: an
   * AWS key ARN, a Key Vault key URL, a Cloud KMS CryptoKey resource name, a
   * PKCS#11 URI. Key versions inside the cloud rotate without changing it.
   */
  readonly keyRef: string;
  /** Wraps `plaintext` (1 byte to 4 KiB) under the key, bound to `context`. */
  wrap(plaintext: Uint8Array, context: WrapContext): Promise<Buffer>;
  /** Unwraps a blob this provider's key wrapped under the same context. The caller owns (and should wipe) the result. */
  unwrap(wrapped: Uint8Array, context: WrapContext): Promise<Buffer>;
  /** Releases clients, sessions and sockets. The provider is unusable afterwards. */
  close(): Promise<void>;
}

/** The largest plaintext every provider accepts (AWS KMS Encrypt's limit); an RSA-4096 KEK's PKCS#8 is ~2.4 KiB. */
export const MAX_WRAP_PLAINTEXT_BYTES = 4096;

/**
 * The context as canonical bytes, for providers that take AAD. For purpose
 * "kek" it is exactly `encodeKekWrapContext` (decision 0002); the other
 * purposes follow the same shape under their own label.
 */
export function encodeWrapContext(context: WrapContext): Buffer {
  checkContext(context);
  if (context.purpose === "kek") {
    return encodeKekWrapContext({ tenantId: context.tenantId, keyId: context.keyId, kekVersion: context.version });
  }
  return Buffer.from(`matih-kms/v1/${context.purpose}\u0000${context.tenantId}\u0000${context.keyId}\u0000${context.version}`, "utf8");
}

/**
 * The context as a string map, for providers that take one (AWS KMS's
 * EncryptionContext). Tenants can scope their key policies with it
 * (`kms:EncryptionContext:matih-tenant`), and it shows in their CloudTrail.
 */
export function wrapContextFields(context: WrapContext): Record<string, string> {
  checkContext(context);
  return {
    "matih-purpose": context.purpose,
    "matih-tenant": context.tenantId,
    "matih-key": context.keyId,
    "matih-version": String(context.version),
  };
}

function checkContext(context: WrapContext): void {
  // The encodings separate fields with NUL; ids never contain one (domain/identifiers.ts), but a provider must not rely on callers.
  if (context.tenantId.length === 0 || context.keyId.length === 0 || /\u0000/.test(context.tenantId + context.keyId)) {
    throw new TypeError("wrap context: tenantId and keyId must be non-empty and free of NUL characters");
  }
  if (!Number.isSafeInteger(context.version) || context.version < 0) {
    throw new TypeError("wrap context: version must be a non-negative integer");
  }
}

/** Refuses a plaintext no provider can wrap, before any call leaves the process. */
export function checkWrapPlaintext(plaintext: Uint8Array, where: { readonly provider: ProviderKind; readonly keyRef: string }): void {
  if (plaintext.byteLength === 0 || plaintext.byteLength > MAX_WRAP_PLAINTEXT_BYTES) {
    throw new KeyWrappingError(
      "other",
      { ...where, operation: "wrap" },
      `plaintext must be 1 to ${MAX_WRAP_PLAINTEXT_BYTES} bytes, got ${plaintext.byteLength}`,
    );
  }
}

/**
 * One health probe: wraps and unwraps 32 zero bytes under a probe context.
 * Resolves on success; rejects with the KeyWrappingError that says why not.
 */
export async function probeKeyWrappingProvider(provider: KeyWrappingProvider): Promise<void> {
  const context: WrapContext = { purpose: "probe", tenantId: "matih-probe", keyId: "probe", version: 0 };
  const probe = Buffer.alloc(32);
  const unwrapped = await provider.unwrap(await provider.wrap(probe, context), context);
  if (!unwrapped.equals(probe)) {
    throw new KeyWrappingError("other", { provider: provider.kind, keyRef: provider.keyRef, operation: "unwrap" }, "probe unwrapped to different bytes");
  }
}

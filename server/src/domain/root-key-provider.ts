/**
 * The port every root (master-key) provider implements: local file, PKCS#11
 * HSM, AWS KMS, Azure Key Vault, GCP KMS. The master key never leaves its
 * provider; only wrap and unwrap cross this boundary.
 */

/** What a wrapped KEK is bound to: unwrapping under another context fails. */
export interface KekWrapContext {
  readonly tenantId: string;
  readonly keyId: string;
  readonly kekVersion: number;
}

export interface RootKeyProvider {
  /** The provider kind, stored beside each wrapped KEK ("local", "pkcs11", ...). */
  readonly name: string;
  /** The master key (version) new wraps use; stored beside each wrapped KEK. */
  readonly currentKeyId: string;
  wrap(plaintext: Uint8Array, context: KekWrapContext): Promise<Buffer>;
  /** Fails with PROVIDER_UNAVAILABLE when the provider cannot be reached. */
  unwrap(wrapped: Uint8Array, context: KekWrapContext, rootKeyId: string): Promise<Buffer>;
  close(): Promise<void>;
  /**
   * Master-key rotation, for providers that keep versions themselves (`local`):
   * makes a new version and returns its id, without making it current. A
   * provider without it rotates inside its own service (cloud KMS automatic
   * rotation under one key reference) and has nothing for us to re-wrap.
   */
  createKeyVersion?(): Promise<string>;
  /** Makes a version this provider holds the one `wrap` uses (after the database recorded it as current). */
  useKeyVersion?(rootKeyId: string): Promise<void>;
}

/** A canonical, unambiguous encoding of a wrap context, for use as AAD. */
export function encodeKekWrapContext(context: KekWrapContext): Buffer {
  return Buffer.from(`matih-kms/v1/kek\u0000${context.tenantId}\u0000${context.keyId}\u0000${context.kekVersion}`, "utf8");
}

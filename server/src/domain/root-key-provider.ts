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
  /** Wraps under the key that is current when it is called (chosen before its first await: see wrapUnderCurrentRootKey). */
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
  /**
   * Whether `unwrap` can open KEKs wrapped under `rootKeyId`, judged from
   * configuration alone (no call to the provider). Absent: only `currentKeyId`.
   */
  holdsKey?(rootKeyId: string): boolean;
  /** Set while this server is configured to move the root of trust to another provider (KMS_ROOT_PROVIDER_PREVIOUS). */
  readonly providerSwitch?: RootProviderSwitch;
}

/**
 * A server configured with a new root provider and, read-only, the previous
 * one: it unwraps under either and wraps under the one the database records
 * as current, until SwitchRootProvider makes the new one current.
 */
export interface RootProviderSwitch {
  /** The provider configured as root (KMS_ROOT_PROVIDER) and its key. */
  /** Wraps and unwraps a probe under the next provider's key: proof it can open what it wraps, before anything depends on it. */
  prove(): Promise<void>;
  readonly to: { readonly name: string; readonly keyId: string };
  /** The previous provider (KMS_ROOT_PROVIDER_PREVIOUS): it only unwraps, and `holds` the master keys it can unwrap under. */
  readonly from: { readonly name: string; holds(rootKeyId: string): boolean };
}

/** Whether `provider` can unwrap KEKs wrapped under `rootKeyId` (see RootKeyProvider.holdsKey). */
export function holdsRootKey(provider: RootKeyProvider, rootKeyId: string): boolean {
  return provider.holdsKey === undefined ? rootKeyId === provider.currentKeyId : provider.holdsKey(rootKeyId);
}

/**
 * Wraps a KEK and says under which provider and key, both read in the tick
 * the wrap starts: reading `currentKeyId` after awaiting the wrap could record
 * a key a concurrent rotation or switch of root provider made current
 * meanwhile, leaving a KEK nobody can open.
 */
export async function wrapUnderCurrentRootKey(
  provider: RootKeyProvider,
  plaintext: Uint8Array,
  context: KekWrapContext,
): Promise<{ readonly wrapped: Buffer; readonly rootProvider: string; readonly rootKeyId: string }> {
  const rootProvider = provider.name;
  const rootKeyId = provider.currentKeyId;
  const wrapped = await provider.wrap(plaintext, context);
  return { wrapped, rootProvider, rootKeyId };
}

/** A canonical, unambiguous encoding of a wrap context, for use as AAD. */
export function encodeKekWrapContext(context: KekWrapContext): Buffer {
  return Buffer.from(`matih-kms/v1/kek\u0000${context.tenantId}\u0000${context.keyId}\u0000${context.kekVersion}`, "utf8");
}

/**
 * The root provider of a server configured to move the master key to another
 * provider: `next` (KMS_ROOT_PROVIDER) and, read-only, `previous`
 * (KMS_ROOT_PROVIDER_PREVIOUS).
 *
 * It unwraps a KEK under whichever of the two holds its master key, and wraps
 * under the one the database records as CURRENT (`useKeyVersion`, called by
 * syncRootKey): the previous one until SwitchRootProvider makes the next one
 * current. So every replica can be given both providers first, in a rolling
 * deploy, before any KEK is wrapped under the new one — no replica ever meets
 * a KEK it cannot open.
 */
import { randomBytes } from "node:crypto";
import { constantTimeEqual, wipe } from "../crypto/secure-buffer.js";
import { KmsError } from "../domain/kms-error.js";
import { holdsRootKey, type KekWrapContext, type RootKeyProvider } from "../domain/root-key-provider.js";

export function switchingRootProvider(next: RootKeyProvider, previous: RootKeyProvider): RootKeyProvider {
  let active = next;
  /** The next provider's current key is checked first: after the switch, nearly every KEK is under it. */
  const ownerOf = (rootKeyId: string): RootKeyProvider =>
    rootKeyId !== next.currentKeyId && !holdsRootKey(next, rootKeyId) && holdsRootKey(previous, rootKeyId) ? previous : next;
  const createKeyVersion = next.createKeyVersion;
  return {
    get name() {
      return active.name;
    },
    get currentKeyId() {
      return active.currentKeyId;
    },
    wrap: (plaintext: Uint8Array, context: KekWrapContext) => active.wrap(plaintext, context),
    unwrap: (wrapped: Uint8Array, context: KekWrapContext, rootKeyId: string) => ownerOf(rootKeyId).unwrap(wrapped, context, rootKeyId),
    holdsKey: (rootKeyId: string) => holdsRootKey(next, rootKeyId) || holdsRootKey(previous, rootKeyId),
    ...(createKeyVersion === undefined
      ? {}
      : {
          async createKeyVersion(): Promise<string> {
            if (active !== next) {
              throw new KmsError("INVALID_STATE_TRANSITION", `the previous root provider (${previous.name}) is read-only: switch to ${next.name} first (SwitchRootProvider), then rotate`);
            }
            return createKeyVersion.call(next);
          },
        }),
    async useKeyVersion(rootKeyId: string): Promise<void> {
      const provider = holdsRootKey(next, rootKeyId) ? next : holdsRootKey(previous, rootKeyId) ? previous : undefined;
      if (provider === undefined) {
        throw new KmsError(
          "PROVIDER_UNAVAILABLE",
          `master key ${rootKeyId} is held neither by this server's ${next.name} root provider nor by its previous one (${previous.name})`,
          { metadata: { provider: next.name, failure: "key-not-configured" } },
        );
      }
      if (provider.currentKeyId !== rootKeyId) await provider.useKeyVersion?.(rootKeyId);
      active = provider;
    },
    providerSwitch: {
      async prove(): Promise<void> {
        const context: KekWrapContext = { tenantId: "matih-probe", keyId: "root-provider-switch", kekVersion: 0 };
        const probe = randomBytes(32);
        const back = await next.unwrap(await next.wrap(probe, context), context, next.currentKeyId);
        const same = constantTimeEqual(back, probe);
        wipe(back, probe);
        if (!same) throw new Error(`the ${next.name} master key ${next.currentKeyId} did not give back what it wrapped`);
      },
      to: {
        name: next.name,
        get keyId() {
          return next.currentKeyId;
        },
      },
      from: { name: previous.name, holds: (rootKeyId: string) => rootKeyId !== next.currentKeyId && holdsRootKey(previous, rootKeyId) },
    },
    async close(): Promise<void> {
      await Promise.all([next.close(), previous.close()]);
    },
  };
}

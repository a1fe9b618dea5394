/**
 * The master key at start-up: register it (first start), align the provider
 * with the one the database records as CURRENT, and refuse to start when KEKs
 * are wrapped under a master key this server's configuration cannot unwrap
 * with — typically a root provider switched without configuring the old one
 * as KMS_ROOT_PROVIDER_PREVIOUS. Serving would fail every Decrypt of those
 * keys' DEKs; refusing names the fix before any caller sees a failure.
 */
import { holdsRootKey } from "../domain/root-key-provider.js";
import type { KmsContext } from "./kms-context.js";
import { readCurrentRootKey, syncRootKey, type RootKeyRow } from "./root-key-registry.js";
import {
  adoptConfiguredRootKey,
  configuredRootKey,
  previousRootProviderUsage,
  unheldRootKeys,
  type PreviousRootProviderUsage,
  type UnheldRootKey,
} from "./root-provider-switch.js";

export class RootKeysNotHeldError extends Error {
  override readonly name = "RootKeysNotHeldError";
  constructor(readonly unheld: readonly UnheldRootKey[]) {
    super(
      `KEK versions are wrapped under master keys this server's root provider configuration does not hold: ${unheld
        .map((key) => `${key.keks} under ${key.provider} key ${key.rootKeyId}`)
        .join("; ")}. If the root provider is being switched, configure the old one as KMS_ROOT_PROVIDER_PREVIOUS (with its KMS_PREVIOUS_* settings) ` +
        `until GetRootKeyStatus says it may be removed (docs/providers.md, "Switching the root provider"); for a local master key, copy its file into the data directory`,
    );
  }
}

export interface RootKeyAtStart {
  readonly current: RootKeyRow;
  /** The recorded CURRENT key was not held and nothing needed it: the configured one replaced it. */
  readonly adoptedFrom: string | undefined;
  /** The provider could not switch to the recorded CURRENT version (a local version file not here yet): it wraps under its own. */
  readonly misaligned: unknown;
  /** A switch of root provider is configured: how much still needs the previous provider. */
  readonly previous: PreviousRootProviderUsage | undefined;
  /** A switch is configured but SwitchRootProvider has not been called yet. */
  readonly switchPending: boolean;
}

export async function prepareRootKeyAtStart(context: KmsContext): Promise<RootKeyAtStart> {
  let misaligned: unknown;
  let current = await syncRootKey(context).catch(async (error: unknown) => {
    misaligned = error;
    return readCurrentRootKey(context);
  });
  const unheld = await unheldRootKeys(context);
  if (unheld.length > 0) throw new RootKeysNotHeldError(unheld);

  const provider = context.rootProvider;
  const configured = configuredRootKey(provider);
  let adoptedFrom: string | undefined;
  // Another provider, or another key of a provider without versions of its own: a reconfiguration, not a lagging copy of a local version.
  const reconfigured = current.provider !== configured.provider || provider.useKeyVersion === undefined || provider.providerSwitch !== undefined;
  if (!holdsRootKey(provider, current.root_key_id) && reconfigured) {
    await adoptConfiguredRootKey(context);
    adoptedFrom = current.root_key_id;
    misaligned = undefined;
    current = await readCurrentRootKey(context);
  }
  return {
    current,
    adoptedFrom,
    misaligned,
    previous: await previousRootProviderUsage(context),
    switchPending: provider.providerSwitch !== undefined && current.root_key_id !== configured.keyId,
  };
}

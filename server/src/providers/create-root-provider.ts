/**
 * Builds the configured root (master-key) provider from a plain options
 * object. `local` is the embedded default and keeps its own implementation
 * (and so every KEK it wrapped); every other kind is a KeyWrappingProvider
 * adapted to the root port. Only the chosen kind's code is loaded.
 *
 * Environment variables to options: root-provider-env.ts.
 */
import type { RootKeyProvider } from "../domain/root-key-provider.js";
import type { KeyWrappingProviderOptions } from "./open-key-wrapping-provider.js";

export type RootProviderKind = "local" | KeyWrappingProviderOptions["kind"];

export type RootProviderOptions = { readonly kind: "local"; readonly dataDir: string } | KeyWrappingProviderOptions;

export async function createRootProvider(options: RootProviderOptions): Promise<RootKeyProvider> {
  if (options.kind === "local") {
    const { openLocalRootProvider } = await import("./local/local-root-provider.js");
    return openLocalRootProvider(options.dataDir);
  }
  const [{ openKeyWrappingProvider }, { asRootKeyProvider }] = await Promise.all([import("./open-key-wrapping-provider.js"), import("./as-root-key-provider.js")]);
  return asRootKeyProvider(await openKeyWrappingProvider(options));
}

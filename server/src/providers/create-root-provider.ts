/**
 * Builds the configured root (master-key) provider from a plain options
 * object. `local` is the embedded default and keeps its own implementation
 * (and so every KEK it wrapped); every other kind is a KeyWrappingProvider
 * adapted to the root port. Only the chosen kind's code is loaded.
 *
 * With a previous provider (a switch of root provider under way), the two
 * are composed by switching-root-provider.ts; the previous one is opened
 * read-only (a `local` one never creates a key file).
 *
 * Environment variables to options: root-provider-env.ts.
 */
import type { RootKeyProvider } from "../domain/root-key-provider.js";
import type { KeyWrappingProviderOptions } from "./open-key-wrapping-provider.js";

export type RootProviderKind = "local" | KeyWrappingProviderOptions["kind"];

export type RootProviderOptions = { readonly kind: "local"; readonly dataDir: string } | KeyWrappingProviderOptions;

export async function createRootProvider(options: RootProviderOptions, previous?: RootProviderOptions): Promise<RootKeyProvider> {
  if (previous === undefined) return openOne(options, { readOnly: false });
  const next = await openOne(options, { readOnly: false });
  try {
    const [old, { switchingRootProvider }] = await Promise.all([openOne(previous, { readOnly: true }), import("./switching-root-provider.js")]);
    return switchingRootProvider(next, old);
  } catch (error) {
    await next.close();
    throw error;
  }
}

async function openOne(options: RootProviderOptions, { readOnly }: { readonly readOnly: boolean }): Promise<RootKeyProvider> {
  if (options.kind === "local") {
    const { openLocalRootProvider } = await import("./local/local-root-provider.js");
    return openLocalRootProvider(options.dataDir, { createIfMissing: !readOnly });
  }
  const [{ openKeyWrappingProvider }, { asRootKeyProvider }] = await Promise.all([import("./open-key-wrapping-provider.js"), import("./as-root-key-provider.js")]);
  return asRootKeyProvider(await openKeyWrappingProvider(options));
}

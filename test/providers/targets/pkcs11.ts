/**
 * `pkcs11` against a SoftHSM2 token initialised for the run. Skips, saying
 * why, where SoftHSM2 is not installed — except under CI, where it must be.
 */
import { asRootKeyProvider } from "../../../server/src/providers/as-root-key-provider.js";
import type { KeyWrappingProvider } from "../../../server/src/providers/key-wrapping-provider.js";
import { openPkcs11Provider, type Pkcs11ProviderOptions } from "../../../server/src/providers/pkcs11/pkcs11-provider.js";
import type { ContractTarget } from "../contract/key-wrapping-contract.js";
import { createSoftHsmToken, softHsmAvailability, type SoftHsmToken } from "../pkcs11/softhsm-token.js";

export interface LocalToken {
  readonly token: SoftHsmToken;
  readonly keyA: string;
  readonly keyB: string;
  open(keyLabel: string, overrides?: Partial<Pkcs11ProviderOptions>): Promise<KeyWrappingProvider>;
  close(): Promise<void>;
}

/** Why the PKCS#11 cases cannot run, or undefined. Under CI a missing SoftHSM2 is a failure, not a skip. */
export function pkcs11SkipReason(): string | undefined {
  const { missing } = softHsmAvailability();
  if (missing === undefined) return undefined;
  if (process.env["CI"] !== undefined && process.env["CI"] !== "" && process.env["CI"] !== "false") {
    throw new Error(`CI is set, so the PKCS#11 provider must be tested: ${missing}`);
  }
  return missing;
}

export async function startLocalToken(): Promise<LocalToken> {
  const token = await createSoftHsmToken();
  const keyA = "matih-root";
  const keyB = "matih-other";
  await token.createKey(keyA);
  await token.createKey(keyB);
  return {
    token,
    keyA,
    keyB,
    open: (keyLabel, overrides = {}) => openPkcs11Provider({ library: token.library, tokenLabel: token.tokenLabel, pin: token.pin, keyLabel, ...overrides }),
    close: () => token.cleanup(),
  };
}

export function pkcs11Target(): ContractTarget {
  return {
    name: "pkcs11 (SoftHSM2 token)",
    skip: pkcs11SkipReason(),
    scenarios: { unavailable: true, "permission-denied": true, "key-disabled": true },
    async open() {
      const local = await startLocalToken();
      const a = await local.open(local.keyA);
      const b = await local.open(local.keyB);
      const root = asRootKeyProvider(a);
      return {
        root,
        otherRoot: asRootKeyProvider(b),
        wrapping: { a, b },
        async stage(scenario) {
          switch (scenario) {
            case "unavailable": {
              const restore = await local.token.outage();
              return { provider: a, root, isKeyA: true, end: restore };
            }
            case "permission-denied":
              await local.token.changePin("changed-by-the-security-officer");
              return { provider: a, root, isKeyA: true, end: () => local.token.restorePin() };
            case "key-disabled":
              await local.token.disableKey(local.keyA);
              return { provider: a, root, isKeyA: true, end: () => local.token.enableKey(local.keyA) };
          }
        },
        async close() {
          await a.close();
          await b.close();
          await local.close();
        },
      };
    },
  };
}

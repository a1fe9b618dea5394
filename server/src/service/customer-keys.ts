/**
 * BYOK: the customer-key registry a KmsContext may carry. A customer-managed
 * key's KEK is generated here, but each of its KEK versions is wrapped by the
 * tenant's own key in its cloud KMS (kek_versions.root_provider = the customer
 * provider, e.g. "AWS_KMS"; root_key_id = the customer key URI). Unwrapped
 * KEKs are cached by the KEK cache under the same bound as platform keys, so
 * the customer's KMS sees one call per KEK per cache lifetime.
 *
 * The registry opens one KeyWrappingProvider per (provider, key URI), lazily,
 * and says which tenants are entitled (the enterprise plan) to create one.
 */
import { constantTimeEqual, wipe } from "../crypto/secure-buffer.js";
import type { CustomerKey, CustomerKeyProvider } from "../domain/key-model.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { customerKeyError } from "../providers/customer-key-error.js";
import { probeKeyWrappingProvider, type KeyWrappingProvider, type ProviderKind, type WrapContext } from "../providers/key-wrapping-provider.js";

export const CUSTOMER_KEY_PROVIDERS: readonly CustomerKeyProvider[] = ["AWS_KMS", "AZURE_KEY_VAULT", "GCP_KMS"];

/** The wrapping-port kind behind each customer provider. */
export const CUSTOMER_PROVIDER_KIND: { readonly [P in CustomerKeyProvider]: ProviderKind } = {
  AWS_KMS: "aws-kms",
  AZURE_KEY_VAULT: "azure-keyvault",
  GCP_KMS: "gcp-kms",
};

/** Opens the provider for one customer key (production: from KMS_BYOK_* settings, customer-key-env.ts; tests: the local servers). */
export type OpenCustomerKey = (provider: CustomerKeyProvider, keyUri: string) => Promise<KeyWrappingProvider>;

export interface CustomerKeys {
  /** Whether the tenant's plan allows customer-managed keys. */
  isEntitled(tenantId: string): boolean;
  /** The (cached) provider for one customer key. */
  provider(provider: CustomerKeyProvider, keyUri: string): Promise<KeyWrappingProvider>;
  close(): Promise<void>;
}

export interface CustomerKeysOptions {
  /** Tenants on the enterprise plan (KMS_ENTERPRISE_TENANTS). */
  readonly enterpriseTenants: readonly string[];
  readonly open: OpenCustomerKey;
}

export function createCustomerKeys(options: CustomerKeysOptions): CustomerKeys {
  const entitled = new Set(options.enterpriseTenants);
  const opened = new Map<string, Promise<KeyWrappingProvider>>();
  return {
    isEntitled: (tenantId) => entitled.has(tenantId),
    provider(provider, keyUri) {
      const id = `${provider}\u0000${keyUri}`;
      let pending = opened.get(id);
      if (pending === undefined) {
        pending = options.open(provider, keyUri);
        opened.set(id, pending);
        // A provider that failed to open is retried on the next use.
        pending.catch(() => {
          if (opened.get(id) === pending) opened.delete(id);
        });
      }
      return pending;
    },
    async close() {
      const all = [...opened.values()];
      opened.clear();
      await Promise.allSettled(all.map(async (pending) => (await pending).close()));
    },
  };
}

export function isCustomerKeyProvider(name: string): name is CustomerKeyProvider {
  return (CUSTOMER_KEY_PROVIDERS as readonly string[]).includes(name);
}

const KEY_URI_SHAPES: { readonly [P in CustomerKeyProvider]: { readonly pattern: RegExp; readonly rule: string } } = {
  AWS_KMS: {
    pattern: /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]{1,128}$/,
    rule: "an AWS KMS key ARN, arn:aws:kms:{region}:{account}:key/{key-id}",
  },
  AZURE_KEY_VAULT: {
    pattern: /^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/keys\/[A-Za-z0-9-]{1,127}(\/[A-Za-z0-9]{1,64})?$/,
    rule: "a Key Vault key URL, https://{vault}.vault.azure.net/keys/{name}[/{version}]",
  },
  GCP_KMS: {
    pattern: /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/,
    rule: "a Cloud KMS CryptoKey name, projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}",
  },
};

/** Refuses a key URI whose shape does not fit its provider, naming customer_key.key_uri. */
export function requireCustomerKeyUri(provider: CustomerKeyProvider, keyUri: string): string {
  const shape = KEY_URI_SHAPES[provider];
  if (keyUri.length > 1024 || !shape.pattern.test(keyUri)) throw invalidField("customer_key.key_uri", `must be ${shape.rule}`);
  return keyUri;
}

/**
 * What CreateKey and UpdateKey(customer_key) check of a requested customer key
 * before calling the customer's KMS: the tenant's plan, then the reference's
 * shape (naming customer_key.key_uri).
 */
export function checkCustomerKeyRequest(
  context: { readonly customerKeys?: CustomerKeys | undefined },
  tenantId: string,
  customerKey: CustomerKey,
): { readonly customerKeys: CustomerKeys; readonly customer: CustomerKey } {
  const customerKeys = context.customerKeys;
  if (customerKeys === undefined || !customerKeys.isEntitled(tenantId)) {
    throw new KmsError("PLAN_NOT_ENTITLED", `customer_key: tenant ${tenantId} is not on the enterprise plan, which customer-managed keys require`, {
      field: "customer_key",
    });
  }
  const keyUri = requireCustomerKeyUri(customerKey.provider, customerKey.keyUri);
  return { customerKeys, customer: { provider: customerKey.provider, keyUri } };
}

export function requireCustomerKeys(context: { readonly customerKeys?: CustomerKeys | undefined }): CustomerKeys {
  if (context.customerKeys === undefined) {
    throw new KmsError("PLAN_NOT_ENTITLED", "customer_key: customer-managed keys are not enabled on this server", { field: "customer_key" });
  }
  return context.customerKeys;
}

/** Wraps a new KEK version's secret under the customer key; failures tell the tenant why. */
export async function wrapKekUnderCustomerKey(
  customerKeys: CustomerKeys,
  customer: { readonly provider: CustomerKeyProvider; readonly keyUri: string },
  secret: Uint8Array,
  scope: { readonly tenantId: string; readonly keyId: string; readonly kekVersion: number },
): Promise<Buffer> {
  const context: WrapContext = { purpose: "kek", tenantId: scope.tenantId, keyId: scope.keyId, version: scope.kekVersion };
  try {
    const provider = await customerKeys.provider(customer.provider, customer.keyUri);
    return await provider.wrap(secret, context);
  } catch (error) {
    throw customerKeyError(error, `wrapping KEK version ${scope.kekVersion} of key ${scope.keyId}`);
  }
}

/**
 * Wraps a new KEK version's secret under the customer key, then unwraps the
 * blob again: the proof, before anything is stored, that the key gives back
 * what it wrapped (a key we may encrypt with but not decrypt with would
 * otherwise strand every DEK re-wrapped under it).
 */
export async function wrapKekUnderCustomerKeyProven(
  customerKeys: CustomerKeys,
  customer: { readonly provider: CustomerKeyProvider; readonly keyUri: string },
  secret: Uint8Array,
  scope: { readonly tenantId: string; readonly keyId: string; readonly kekVersion: number },
): Promise<Buffer> {
  const wrapped = await wrapKekUnderCustomerKey(customerKeys, customer, secret, scope);
  const context: WrapContext = { purpose: "kek", tenantId: scope.tenantId, keyId: scope.keyId, version: scope.kekVersion };
  let back: Buffer;
  try {
    back = await (await customerKeys.provider(customer.provider, customer.keyUri)).unwrap(wrapped, context);
  } catch (error) {
    throw customerKeyError(error, `unwrapping the new KEK version ${scope.kekVersion} of key ${scope.keyId}`);
  }
  try {
    if (!constantTimeEqual(back, secret)) {
      throw new KmsError("INTERNAL", `the customer-managed key ${customer.keyUri} did not give back the KEK version ${scope.kekVersion} it wrapped`);
    }
  } finally {
    wipe(back);
  }
  return wrapped;
}

/** One wrap+unwrap round trip under the customer key; rejects with the KmsError that says why not. */
export async function probeCustomerKey(customerKeys: CustomerKeys, customer: { readonly provider: CustomerKeyProvider; readonly keyUri: string }, what: string): Promise<void> {
  try {
    await probeKeyWrappingProvider(await customerKeys.provider(customer.provider, customer.keyUri));
  } catch (error) {
    throw customerKeyError(error, what);
  }
}

/**
 * BYOK settings from the environment (KMS_BYOK_* and KMS_ENTERPRISE_TENANTS;
 * table in docs/providers.md) and the opener that turns a customer key
 * reference into a KeyWrappingProvider with them. The customer supplies only
 * the key reference; how this service reaches and authenticates to each cloud
 * is the platform's configuration (the customer grants that identity access).
 */
import type { CustomerKeyProvider } from "../domain/key-model.js";
import type { OpenCustomerKey } from "../service/customer-keys.js";
import type { EntraCredentialOptions } from "./azure-keyvault/entra-credential.js";
import { openKeyWrappingProvider } from "./open-key-wrapping-provider.js";
import { RootProviderConfigError } from "./root-provider-env.js";

type Env = Readonly<Record<string, string | undefined>>;

export interface CustomerKeySettings {
  /** Tenants on the enterprise plan, the only ones that may create customer-managed keys. */
  readonly enterpriseTenants: readonly string[];
  readonly aws: { readonly region?: string; readonly endpoint?: string };
  /** Absent: Azure Key Vault customer keys cannot be opened (they fail as "other", reported as INTERNAL). */
  readonly azure?: EntraCredentialOptions;
  readonly gcp: { readonly apiEndpoint?: string; readonly port?: number; readonly keyFilename?: string };
  readonly timeoutMs: number;
  readonly maxRetries: number;
}

export function customerKeySettingsFromEnv(env: Env): CustomerKeySettings {
  const get = (name: string) => (env[name] === undefined || env[name] === "" ? undefined : env[name]);
  const enterpriseTenants = (get("KMS_ENTERPRISE_TENANTS") ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");
  const region = get("KMS_BYOK_AWS_REGION");
  const endpoint = get("KMS_BYOK_AWS_ENDPOINT");
  const tenantId = get("KMS_BYOK_AZURE_TENANT_ID");
  const clientId = get("KMS_BYOK_AZURE_CLIENT_ID");
  const clientSecret = get("KMS_BYOK_AZURE_CLIENT_SECRET");
  const federatedTokenFile = get("KMS_BYOK_AZURE_FEDERATED_TOKEN_FILE");
  const authorityHost = get("KMS_BYOK_AZURE_AUTHORITY_HOST");
  let azure: EntraCredentialOptions | undefined;
  if (tenantId !== undefined || clientId !== undefined) {
    if (tenantId === undefined || clientId === undefined || (clientSecret === undefined) === (federatedTokenFile === undefined)) {
      throw new RootProviderConfigError(
        "KMS_BYOK_AZURE_* needs KMS_BYOK_AZURE_TENANT_ID, KMS_BYOK_AZURE_CLIENT_ID and exactly one of KMS_BYOK_AZURE_CLIENT_SECRET and KMS_BYOK_AZURE_FEDERATED_TOKEN_FILE",
      );
    }
    azure = {
      tenantId,
      clientId,
      ...(clientSecret === undefined ? { federatedTokenFile: federatedTokenFile as string } : { clientSecret }),
      ...(authorityHost === undefined ? {} : { authorityHost }),
    };
  }
  const gcpEndpoint = get("KMS_BYOK_GCP_ENDPOINT");
  const keyFilename = get("KMS_BYOK_GCP_CREDENTIALS_FILE");
  let gcp: CustomerKeySettings["gcp"] = keyFilename === undefined ? {} : { keyFilename };
  if (gcpEndpoint !== undefined) {
    const match = /^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(gcpEndpoint);
    if (match === null) throw new RootProviderConfigError(`KMS_BYOK_GCP_ENDPOINT must be host or host:port, got ${JSON.stringify(gcpEndpoint)}`);
    gcp = { ...gcp, apiEndpoint: match[1] as string, ...(match[2] === undefined ? {} : { port: Number(match[2]) }) };
  }
  const timeoutSeconds = Number(get("KMS_PROVIDER_TIMEOUT_SECONDS") ?? "10");
  const maxRetries = Number(get("KMS_PROVIDER_MAX_RETRIES") ?? "2");
  return {
    enterpriseTenants,
    aws: { ...(region === undefined ? {} : { region }), ...(endpoint === undefined ? {} : { endpoint }) },
    ...(azure === undefined ? {} : { azure }),
    gcp,
    timeoutMs: Number.isInteger(timeoutSeconds) && timeoutSeconds > 0 ? timeoutSeconds * 1000 : 10_000,
    maxRetries: Number.isInteger(maxRetries) && maxRetries >= 0 ? maxRetries : 2,
  };
}

export function customerKeyOpener(settings: CustomerKeySettings): OpenCustomerKey {
  return async (provider: CustomerKeyProvider, keyUri: string) => {
    switch (provider) {
      case "AWS_KMS": {
        // The region is the key ARN's, unless KMS_BYOK_AWS_REGION overrides it.
        const region = settings.aws.region ?? keyUri.split(":")[3] ?? "";
        return openKeyWrappingProvider({
          kind: "aws-kms",
          keyId: keyUri,
          region,
          ...(settings.aws.endpoint === undefined ? {} : { endpoint: settings.aws.endpoint }),
          maxAttempts: settings.maxRetries + 1,
          requestTimeoutMs: settings.timeoutMs,
        });
      }
      case "AZURE_KEY_VAULT":
        if (settings.azure === undefined) throw new Error("Azure Key Vault customer keys need KMS_BYOK_AZURE_TENANT_ID and KMS_BYOK_AZURE_CLIENT_ID");
        return openKeyWrappingProvider({
          kind: "azure-keyvault",
          keyId: keyUri,
          credential: { ...settings.azure, timeoutMs: settings.timeoutMs },
          maxRetries: settings.maxRetries,
          timeoutMs: settings.timeoutMs,
        });
      case "GCP_KMS":
        return openKeyWrappingProvider({ kind: "gcp-kms", keyName: keyUri, ...settings.gcp, timeoutMs: settings.timeoutMs, maxRetries: settings.maxRetries });
    }
  };
}

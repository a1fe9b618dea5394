/**
 * Opens a provider of the wrapping port from a plain options object, loading
 * only the chosen provider's module (and so its SDK or native library): a
 * deployment on AWS never loads the Azure, Google or PKCS#11 code.
 *
 * Used for the master key (create-root-provider.ts) and, in BYOK, for each
 * customer key.
 */
import type { AwsKmsProviderOptions } from "./aws-kms/aws-kms-provider.js";
import type { KeyVaultWrapAlgorithm } from "./azure-keyvault/azure-keyvault-provider.js";
import type { EntraCredentialOptions } from "./azure-keyvault/entra-credential.js";
import type { GcpKmsProviderOptions } from "./gcp-kms/gcp-kms-provider.js";
import type { KeyWrappingProvider } from "./key-wrapping-provider.js";
import type { Pkcs11ProviderOptions } from "./pkcs11/pkcs11-provider.js";

export interface AzureKeyVaultOptions {
  /** https://{vault}.vault.azure.net/keys/{name}[/{version}] */
  readonly keyId: string;
  readonly algorithm?: KeyVaultWrapAlgorithm;
  /** Entra ID client credentials (secret or federated token file). */
  readonly credential: EntraCredentialOptions;
  readonly maxRetries?: number;
  readonly timeoutMs?: number;
}

export type KeyWrappingProviderOptions =
  | ({ readonly kind: "pkcs11" } & Pkcs11ProviderOptions)
  | ({ readonly kind: "aws-kms" } & AwsKmsProviderOptions)
  | ({ readonly kind: "azure-keyvault" } & AzureKeyVaultOptions)
  | ({ readonly kind: "gcp-kms" } & GcpKmsProviderOptions);

export async function openKeyWrappingProvider(options: KeyWrappingProviderOptions): Promise<KeyWrappingProvider> {
  switch (options.kind) {
    case "pkcs11": {
      const { openPkcs11Provider } = await import("./pkcs11/pkcs11-provider.js");
      return openPkcs11Provider(options);
    }
    case "aws-kms": {
      const { openAwsKmsProvider } = await import("./aws-kms/aws-kms-provider.js");
      return openAwsKmsProvider(options);
    }
    case "azure-keyvault": {
      const [{ openAzureKeyVaultProvider }, { createEntraCredential }] = await Promise.all([
        import("./azure-keyvault/azure-keyvault-provider.js"),
        import("./azure-keyvault/entra-credential.js"),
      ]);
      return openAzureKeyVaultProvider({
        keyId: options.keyId,
        credential: createEntraCredential(options.credential),
        ...(options.algorithm === undefined ? {} : { algorithm: options.algorithm }),
        ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }),
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        ...(options.credential.agent === undefined ? {} : { agent: options.credential.agent }),
      });
    }
    case "gcp-kms": {
      const { openGcpKmsProvider } = await import("./gcp-kms/gcp-kms-provider.js");
      return openGcpKmsProvider(options);
    }
  }
}

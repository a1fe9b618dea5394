/**
 * The proposed environment variables for the root provider, read into
 * `RootProviderOptions` (for config.ts to call). Every setting has one
 * variable, a bad or missing value names that variable, and secrets can come
 * from files (Kubernetes secret mounts) rather than the environment.
 *
 * Where a cloud has standard variables of its own (AWS_REGION,
 * AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_FEDERATED_TOKEN_FILE set by AKS
 * workload identity, GOOGLE_APPLICATION_CREDENTIALS), they are the fallbacks,
 * so a pod with workload identity needs only the key's id. See
 * docs/providers.md for the table.
 */
import { readFileSync } from "node:fs";
import type { RootProviderOptions } from "./create-root-provider.js";

export class RootProviderConfigError extends Error {
  override readonly name = "RootProviderConfigError";
}

export const ROOT_PROVIDER_KINDS = ["local", "pkcs11", "aws-kms", "azure-keyvault", "gcp-kms"] as const;

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The variables of one root provider: the current one reads `KMS_ROOT_PROVIDER`
 * and `KMS_<SETTING>` (KMS_PKCS11_LIBRARY, ...); the previous one, during a
 * switch of root provider, `KMS_ROOT_PROVIDER_PREVIOUS` and the same settings
 * under `KMS_PREVIOUS_<SETTING>` (KMS_PREVIOUS_PKCS11_LIBRARY, ...). The shared
 * KMS_PROVIDER_TIMEOUT_SECONDS / KMS_PROVIDER_MAX_RETRIES and the clouds' own
 * standard variables (AWS_REGION, AZURE_CLIENT_ID, ...) serve both.
 */
interface Names {
  readonly kind: string;
  /** KMS_ or KMS_PREVIOUS_ */
  readonly prefix: string;
}

const CURRENT: Names = { kind: "KMS_ROOT_PROVIDER", prefix: "KMS_" };
const PREVIOUS: Names = { kind: "KMS_ROOT_PROVIDER_PREVIOUS", prefix: "KMS_PREVIOUS_" };

export function rootProviderOptionsFromEnv(env: Env, defaults: { readonly dataDir: string }): RootProviderOptions {
  return optionsFromEnv(env, defaults, CURRENT, oneOf(env, CURRENT.kind, ROOT_PROVIDER_KINDS, "local"));
}

/**
 * The previous root provider, read-only during a switch of root provider
 * (docs/providers.md, "Switching the root provider"); undefined when
 * KMS_ROOT_PROVIDER_PREVIOUS is not set. `local` reads the master key files of
 * KMS_PREVIOUS_LOCAL_DIR (default: the data directory) and never creates one.
 */
export function previousRootProviderOptionsFromEnv(env: Env, defaults: { readonly dataDir: string }): RootProviderOptions | undefined {
  if (optional(env, PREVIOUS.kind) === undefined) return undefined;
  const kind = oneOf(env, PREVIOUS.kind, ROOT_PROVIDER_KINDS, "local");
  if (kind === "local" && oneOf(env, CURRENT.kind, ROOT_PROVIDER_KINDS, "local") === "local") {
    throw new RootProviderConfigError(`${PREVIOUS.kind}=local needs another KMS_ROOT_PROVIDER: a new local master key is a rotation (RotateRootKey), not a switch`);
  }
  if (kind === "local") return { kind, dataDir: optional(env, `${PREVIOUS.prefix}LOCAL_DIR`) ?? defaults.dataDir };
  return optionsFromEnv(env, defaults, PREVIOUS, kind);
}

function optionsFromEnv(env: Env, defaults: { readonly dataDir: string }, names: Names, kind: (typeof ROOT_PROVIDER_KINDS)[number]): RootProviderOptions {
  const v = (setting: string): string => `${names.prefix}${setting}`;
  const required = (setting: string): string => {
    const value = optional(env, v(setting));
    if (value === undefined) throw new RootProviderConfigError(`${names.kind}=${kind} needs ${v(setting)}`);
    return value;
  };
  const timeoutMs = integer(env, "KMS_PROVIDER_TIMEOUT_SECONDS", 10, 1, 300) * 1000;
  const retries = integer(env, "KMS_PROVIDER_MAX_RETRIES", 2, 0, 10);
  switch (kind) {
    case "local":
      return { kind, dataDir: defaults.dataDir };
    case "pkcs11":
      return {
        kind,
        library: required("PKCS11_LIBRARY"),
        tokenLabel: required("PKCS11_TOKEN_LABEL"),
        keyLabel: required("PKCS11_KEY_LABEL"),
        pin: secret(env, v("PKCS11_PIN")),
        sessions: integer(env, v("PKCS11_SESSIONS"), 4, 1, 256),
      };
    case "aws-kms": {
      const region = first(env, [v("AWS_REGION"), "AWS_REGION", "AWS_DEFAULT_REGION"]);
      if (region === undefined) throw new RootProviderConfigError(`${names.kind}=aws-kms needs ${v("AWS_REGION")} (or AWS_REGION)`);
      const endpoint = optional(env, v("AWS_KMS_ENDPOINT"));
      return {
        kind,
        keyId: required("AWS_KMS_KEY_ID"),
        region,
        ...(endpoint === undefined ? {} : { endpoint: url(endpoint, v("AWS_KMS_ENDPOINT")) }),
        maxAttempts: retries + 1,
        requestTimeoutMs: timeoutMs,
      };
    }
    case "azure-keyvault": {
      const tenantId = first(env, [v("AZURE_TENANT_ID"), "AZURE_TENANT_ID"]);
      const clientId = first(env, [v("AZURE_CLIENT_ID"), "AZURE_CLIENT_ID"]);
      if (tenantId === undefined || clientId === undefined) {
        throw new RootProviderConfigError(`${names.kind}=azure-keyvault needs ${v("AZURE_TENANT_ID")} and ${v("AZURE_CLIENT_ID")} (or AZURE_TENANT_ID and AZURE_CLIENT_ID)`);
      }
      const hasSecret = optional(env, v("AZURE_CLIENT_SECRET")) !== undefined || optional(env, v("AZURE_CLIENT_SECRET_FILE")) !== undefined;
      const federatedTokenFile = first(env, [v("AZURE_FEDERATED_TOKEN_FILE"), "AZURE_FEDERATED_TOKEN_FILE"]);
      if (hasSecret === (federatedTokenFile !== undefined)) {
        throw new RootProviderConfigError(
          `${names.kind}=azure-keyvault needs exactly one of ${v("AZURE_CLIENT_SECRET")}(_FILE) and ${v("AZURE_FEDERATED_TOKEN_FILE")} (or AZURE_FEDERATED_TOKEN_FILE)`,
        );
      }
      const authorityHost = first(env, [v("AZURE_AUTHORITY_HOST"), "AZURE_AUTHORITY_HOST"]);
      const algorithm = oneOf(env, v("AZURE_WRAP_ALGORITHM"), ["RSA-OAEP-256", "A256KW"] as const, "RSA-OAEP-256");
      return {
        kind,
        keyId: required("AZURE_KEY_ID"),
        algorithm,
        credential: {
          tenantId,
          clientId,
          ...(hasSecret ? { clientSecret: secret(env, v("AZURE_CLIENT_SECRET")) } : { federatedTokenFile: federatedTokenFile as string }),
          ...(authorityHost === undefined ? {} : { authorityHost: url(authorityHost, v("AZURE_AUTHORITY_HOST")) }),
          timeoutMs,
        },
        maxRetries: retries,
        timeoutMs,
      };
    }
    case "gcp-kms": {
      const endpoint = optional(env, v("GCP_KMS_ENDPOINT"));
      const keyFilename = optional(env, v("GCP_CREDENTIALS_FILE"));
      const keyName = required("GCP_KMS_KEY_NAME");
      if (!/^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/.test(keyName)) {
        throw new RootProviderConfigError(`${v("GCP_KMS_KEY_NAME")} must be projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}`);
      }
      let host: { apiEndpoint: string; port?: number } | undefined;
      if (endpoint !== undefined) {
        const match = /^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(endpoint);
        if (match === null) throw new RootProviderConfigError(`${v("GCP_KMS_ENDPOINT")} must be host or host:port, got ${JSON.stringify(endpoint)}`);
        host = { apiEndpoint: match[1] as string, ...(match[2] === undefined ? {} : { port: Number(match[2]) }) };
      }
      return { kind, keyName, ...host, ...(keyFilename === undefined ? {} : { keyFilename }), timeoutMs, maxRetries: retries };
    }
  }
}

function optional(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : value;
}

function first(env: Env, names: readonly string[]): string | undefined {
  for (const name of names) {
    const value = optional(env, name);
    if (value !== undefined) return value;
  }
  return undefined;
}

/** `NAME` or `NAME_FILE` (exactly one); a file's trailing newline is dropped. */
function secret(env: Env, name: string): string {
  const inline = optional(env, name);
  const file = optional(env, `${name}_FILE`);
  if ((inline === undefined) === (file === undefined)) throw new RootProviderConfigError(`set exactly one of ${name} and ${name}_FILE`);
  if (inline !== undefined) return inline;
  let value: string;
  try {
    value = readFileSync(file as string, "utf8").replace(/\r?\n$/, "");
  } catch (error) {
    throw new RootProviderConfigError(`${name}_FILE: cannot read ${file as string}: ${(error as Error).message}`);
  }
  if (value === "") throw new RootProviderConfigError(`${name}_FILE: ${file as string} is empty`);
  return value;
}

function url(value: string, name: string): string {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new RootProviderConfigError(`${name} must be a URL, got ${JSON.stringify(value)}`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw new RootProviderConfigError(`${name} must be an http(s) URL`);
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RootProviderConfigError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new RootProviderConfigError(`${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

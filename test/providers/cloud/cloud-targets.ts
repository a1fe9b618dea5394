/**
 * The provider contract against REAL clouds (and a real HSM), configured from
 * the environment. Nothing here creates, disables or deletes a cloud key:
 * failures are staged without touching the account —
 *
 * - unavailable: the same key through an endpoint nobody listens on;
 * - permission-denied: a fixture key the identity is NOT granted (optional);
 * - key-disabled: a fixture key kept disabled (optional).
 *
 * Credentials come from each SDK's usual sources (see docs/providers.md).
 */
import { Agent } from "node:https";
import type { RootKeyProvider } from "../../../server/src/domain/root-key-provider.js";
import { asRootKeyProvider } from "../../../server/src/providers/as-root-key-provider.js";
import type { KeyWrappingProvider } from "../../../server/src/providers/key-wrapping-provider.js";
import { openKeyWrappingProvider, type KeyWrappingProviderOptions } from "../../../server/src/providers/open-key-wrapping-provider.js";
import type { ContractSubject, ContractTarget, FailureScenario, StagedFailure } from "../contract/key-wrapping-contract.js";

type Env = Readonly<Record<string, string | undefined>>;

export interface CloudSmokeConfig {
  readonly cloud: "aws-kms" | "azure-keyvault" | "gcp-kms" | "pkcs11";
  /** Variables that must all be set for this cloud to run. */
  readonly required: readonly string[];
  /** Which of them are missing (empty: it runs). */
  readonly missing: readonly string[];
  /** Optional fixtures, and the scenario each enables. */
  readonly optional: ReadonlyArray<{ readonly name: string; readonly set: boolean; readonly enables: string }>;
}

const has = (env: Env, name: string) => env[name] !== undefined && env[name] !== "";
const any = (env: Env, names: readonly string[]) => names.some((name) => has(env, name));

export function cloudSmokeConfigs(env: Env): CloudSmokeConfig[] {
  const config = (cloud: CloudSmokeConfig["cloud"], required: Array<string | readonly string[]>, optional: Array<[string, string]>): CloudSmokeConfig => ({
    cloud,
    required: required.map((r) => (typeof r === "string" ? r : r.join(" or "))),
    missing: required.filter((r) => (typeof r === "string" ? !has(env, r) : !any(env, r))).map((r) => (typeof r === "string" ? r : r.join(" or "))),
    optional: optional.map(([name, enables]) => ({ name, set: has(env, name), enables })),
  });
  return [
    config(
      "aws-kms",
      ["KMS_SMOKE_AWS_KEY_ID", "KMS_SMOKE_AWS_OTHER_KEY_ID", ["KMS_SMOKE_AWS_REGION", "AWS_REGION"], ["AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "KMS_SMOKE_AWS_INSTANCE_ROLE"]],
      [
        ["KMS_SMOKE_AWS_DISABLED_KEY_ID", "key-disabled"],
        ["KMS_SMOKE_AWS_DENIED_KEY_ID", "permission-denied"],
      ],
    ),
    config(
      "azure-keyvault",
      ["KMS_SMOKE_AZURE_KEY_ID", "KMS_SMOKE_AZURE_OTHER_KEY_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", ["AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"]],
      [
        ["KMS_SMOKE_AZURE_DISABLED_KEY_ID", "key-disabled"],
        ["KMS_SMOKE_AZURE_DENIED_KEY_ID", "permission-denied"],
      ],
    ),
    config(
      "gcp-kms",
      ["KMS_SMOKE_GCP_KEY_NAME", "KMS_SMOKE_GCP_OTHER_KEY_NAME", ["GOOGLE_APPLICATION_CREDENTIALS", "KMS_SMOKE_GCP_USE_ADC"]],
      [
        ["KMS_SMOKE_GCP_DISABLED_KEY_NAME", "key-disabled"],
        ["KMS_SMOKE_GCP_DENIED_KEY_NAME", "permission-denied"],
      ],
    ),
    config("pkcs11", ["KMS_SMOKE_PKCS11_LIBRARY", "KMS_SMOKE_PKCS11_TOKEN_LABEL", "KMS_SMOKE_PKCS11_PIN", "KMS_SMOKE_PKCS11_KEY_LABEL", "KMS_SMOKE_PKCS11_OTHER_KEY_LABEL"], []),
  ];
}

/** An address nothing listens on: connections are refused at once. */
const NOWHERE_HOST = "127.0.0.1";
const NOWHERE_PORT = 9; // discard; not served on a workstation or CI runner

function nowhereAgent(): Agent {
  return new Agent({
    lookup: (_hostname, lookupOptions, callback) => {
      if ((lookupOptions as { all?: boolean }).all) (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: NOWHERE_HOST, family: 4 }]);
      else (callback as (e: null, a: string, f: number) => void)(null, NOWHERE_HOST, 4);
    },
  });
}

function target(
  config: CloudSmokeConfig,
  name: string,
  options: (keyRef: string) => KeyWrappingProviderOptions,
  unreachable: ((keyRef: string) => KeyWrappingProviderOptions) | undefined,
  keys: { readonly a: string; readonly b: string; readonly disabled: string | undefined; readonly denied: string | undefined },
): ContractTarget {
  const fixture = (value: string | undefined, variable: string): true | string => (value === undefined ? `set ${variable} to a fixture key to stage it` : true);
  const prefix = config.cloud === "gcp-kms" ? "KMS_SMOKE_GCP" : config.cloud === "aws-kms" ? "KMS_SMOKE_AWS" : "KMS_SMOKE_AZURE";
  const suffix = config.cloud === "gcp-kms" ? "KEY_NAME" : "KEY_ID";
  return {
    name: `${name} (REAL)`,
    skip: config.missing.length === 0 ? undefined : `set ${config.missing.join(", ")}`,
    recoveryMs: 30_000,
    scenarios: {
      unavailable: unreachable === undefined ? "a real HSM cannot be taken away without touching it" : true,
      "permission-denied": config.cloud === "pkcs11" ? "a real HSM's PIN is not changed by a smoke test" : fixture(keys.denied, `${prefix}_DENIED_${suffix}`),
      "key-disabled": config.cloud === "pkcs11" ? "a real HSM's key is not disabled by a smoke test" : fixture(keys.disabled, `${prefix}_DISABLED_${suffix}`),
    },
    async open(): Promise<ContractSubject> {
      const a = await openKeyWrappingProvider(options(keys.a));
      const b = await openKeyWrappingProvider(options(keys.b));
      const extra: KeyWrappingProvider[] = [];
      const root: RootKeyProvider = asRootKeyProvider(a);
      const staged = async (provider: KeyWrappingProvider): Promise<StagedFailure> => {
        extra.push(provider);
        return { provider, root: asRootKeyProvider(provider), isKeyA: false };
      };
      return {
        root,
        otherRoot: asRootKeyProvider(b),
        wrapping: { a, b },
        async stage(scenario: FailureScenario): Promise<StagedFailure> {
          switch (scenario) {
            case "unavailable":
              if (unreachable === undefined) throw new Error("not staged");
              return staged(await openKeyWrappingProvider(unreachable(keys.a)));
            case "permission-denied":
              if (keys.denied === undefined) throw new Error("not staged");
              return staged(await openKeyWrappingProvider(options(keys.denied)));
            case "key-disabled":
              if (keys.disabled === undefined) throw new Error("not staged");
              return staged(await openKeyWrappingProvider(options(keys.disabled)));
          }
        },
        async close() {
          await Promise.all([a.close(), b.close(), ...extra.map((p) => p.close())]);
        },
      };
    },
  };
}

export function cloudSmokeTargets(env: Env): ContractTarget[] {
  const configs = new Map(cloudSmokeConfigs(env).map((c) => [c.cloud, c]));
  const value = (name: string) => (has(env, name) ? (env[name] as string) : undefined);
  const targets: ContractTarget[] = [];

  const aws = configs.get("aws-kms") as CloudSmokeConfig;
  const region = value("KMS_SMOKE_AWS_REGION") ?? value("AWS_REGION") ?? "us-east-1";
  targets.push(
    target(
      aws,
      "aws-kms",
      (keyId) => ({ kind: "aws-kms", keyId, region, maxAttempts: 3 }),
      (keyId) => ({ kind: "aws-kms", keyId, region, endpoint: `http://${NOWHERE_HOST}:${NOWHERE_PORT}`, maxAttempts: 1, connectTimeoutMs: 2_000 }),
      { a: value("KMS_SMOKE_AWS_KEY_ID") ?? "", b: value("KMS_SMOKE_AWS_OTHER_KEY_ID") ?? "", disabled: value("KMS_SMOKE_AWS_DISABLED_KEY_ID"), denied: value("KMS_SMOKE_AWS_DENIED_KEY_ID") },
    ),
  );

  const azure = configs.get("azure-keyvault") as CloudSmokeConfig;
  const credential = {
    tenantId: value("AZURE_TENANT_ID") ?? "",
    clientId: value("AZURE_CLIENT_ID") ?? "",
    ...(value("AZURE_CLIENT_SECRET") !== undefined ? { clientSecret: value("AZURE_CLIENT_SECRET") as string } : { federatedTokenFile: value("AZURE_FEDERATED_TOKEN_FILE") ?? "" }),
    ...(value("AZURE_AUTHORITY_HOST") === undefined ? {} : { authorityHost: value("AZURE_AUTHORITY_HOST") as string }),
    additionallyAllowedTenants: ["*"],
  };
  targets.push(
    target(
      azure,
      "azure-keyvault",
      (keyId) => ({ kind: "azure-keyvault", keyId, credential }),
      // The same vault URL, but every host name resolves to a closed local port (the token request too).
      (keyId) => ({ kind: "azure-keyvault", keyId, credential: { ...credential, agent: nowhereAgent() }, maxRetries: 0, timeoutMs: 5_000 }),
      {
        a: value("KMS_SMOKE_AZURE_KEY_ID") ?? "",
        b: value("KMS_SMOKE_AZURE_OTHER_KEY_ID") ?? "",
        disabled: value("KMS_SMOKE_AZURE_DISABLED_KEY_ID"),
        denied: value("KMS_SMOKE_AZURE_DENIED_KEY_ID"),
      },
    ),
  );

  const gcp = configs.get("gcp-kms") as CloudSmokeConfig;
  targets.push(
    target(
      gcp,
      "gcp-kms",
      (keyName) => ({ kind: "gcp-kms", keyName }),
      (keyName) => ({ kind: "gcp-kms", keyName, apiEndpoint: NOWHERE_HOST, port: NOWHERE_PORT, tls: "insecure", maxRetries: 0, timeoutMs: 5_000 }),
      {
        a: value("KMS_SMOKE_GCP_KEY_NAME") ?? "",
        b: value("KMS_SMOKE_GCP_OTHER_KEY_NAME") ?? "",
        disabled: value("KMS_SMOKE_GCP_DISABLED_KEY_NAME"),
        denied: value("KMS_SMOKE_GCP_DENIED_KEY_NAME"),
      },
    ),
  );

  const pkcs11 = configs.get("pkcs11") as CloudSmokeConfig;
  targets.push(
    target(
      pkcs11,
      "pkcs11",
      (keyLabel) => ({
        kind: "pkcs11",
        library: value("KMS_SMOKE_PKCS11_LIBRARY") ?? "",
        tokenLabel: value("KMS_SMOKE_PKCS11_TOKEN_LABEL") ?? "",
        pin: value("KMS_SMOKE_PKCS11_PIN") ?? "",
        keyLabel,
      }),
      undefined,
      { a: value("KMS_SMOKE_PKCS11_KEY_LABEL") ?? "", b: value("KMS_SMOKE_PKCS11_OTHER_KEY_LABEL") ?? "", disabled: undefined, denied: undefined },
    ),
  );
  return targets;
}

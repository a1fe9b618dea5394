/**
 * Configuration from the environment. Every setting has one variable, and a
 * bad value stops start-up with a message naming that variable.
 *
 * Development mode (the default) needs nothing: PGlite in the data directory,
 * a local master key, a development PKI and token key generated on first
 * start, listening on localhost only. Production mode needs every file named
 * explicitly and refuses the development ones.
 */
import { customerKeySettingsFromEnv, type CustomerKeySettings } from "./providers/customer-key-env.js";
import { resolve } from "node:path";
import type { RootProviderOptions } from "./providers/create-root-provider.js";
import { previousRootProviderOptionsFromEnv, RootProviderConfigError, rootProviderOptionsFromEnv } from "./providers/root-provider-env.js";
import { LONGEST_LEASE_MS } from "./storage/replica-synced-dialect.js";

export type Mode = "development" | "production";

export interface Config {
  readonly mode: Mode;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  readonly databaseTls: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string };
  readonly tls: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string } | undefined;
  readonly jwt: {
    readonly jwksFile: string | undefined;
    readonly jwksUrl: string | undefined;
    readonly issuer: string | undefined;
    readonly audience: string | undefined;
    readonly tenantClaim: string;
  };
  /** Where the master key lives: the local file (default), a PKCS#11 token, or a cloud KMS key. */
  readonly rootProvider: RootProviderOptions;
  /** During a switch of root provider: the previous one, read-only (KMS_ROOT_PROVIDER_PREVIOUS, KMS_PREVIOUS_*). */
  readonly previousRootProvider?: RootProviderOptions | undefined;
  /** BYOK: the enterprise plan's tenants and how to reach customers' KMS keys (KMS_ENTERPRISE_TENANTS, KMS_BYOK_*). */
  readonly customerKeys?: CustomerKeySettings;
  readonly kekCache: { readonly maxEntries: number; readonly maxAgeMs: number };
  /**
   * PostgreSQL: how long a replica's hot-path lease runs after each renewal
   * (KMS_HOT_PATH_LEASE_MS; 0 turns leases off). Writers wait at most this
   * long for a replica that stopped answering (docs/decisions/0008).
   */
  readonly hotPathLeaseMs: number;
  readonly maxBodyBytes: number;
  readonly shutdownGraceMs: number;
  /** How often the TLS files are checked for a renewed certificate. */
  readonly tlsReloadIntervalMs: number;
  /** Service identities (SPIFFE URIs) allowed privileged calls: root-key admin, every tenant's events. */
  readonly adminSpiffeIds: readonly string[];
  /** Background work (jobs/): re-wraps, scheduled rotation and the other periodic tasks. */
  readonly workers: {
    /** false (KMS_WORKERS=off) runs none in this process: for tests that drive the work by hand. */
    readonly enabled: boolean;
    readonly intervalMs: number;
    readonly rewrapBatchSize: number;
    /** Batches applied at once by this process. */
    readonly concurrency: number;
    readonly leaseMs: number;
  };
  /** Scheduled master-key rotation: the age of the current master key that triggers it; 0 turns it off. */
  readonly rootKeyRotationDays: number;
  /** How often each server reads new key events for its WatchKeyEvents subscribers. */
  readonly eventPollIntervalMs: number;
  /** Key events older than this are pruned; older cursors are refused EVENT_CURSOR_EXPIRED. */
  readonly eventRetentionDays: number;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const mode = oneOf(env, "KMS_MODE", ["development", "production"] as const, "development");
  const production = mode === "production";
  const dataDir = resolve(env["KMS_DATA_DIR"] ?? ".kms");

  const certFile = env["KMS_TLS_CERT_FILE"];
  const keyFile = env["KMS_TLS_KEY_FILE"];
  const clientCaFile = env["KMS_TLS_CLIENT_CA_FILE"];
  const tlsFiles = [certFile, keyFile, clientCaFile].filter((v) => v !== undefined).length;
  if (tlsFiles !== 0 && tlsFiles !== 3) {
    throw new ConfigError("KMS_TLS_CERT_FILE, KMS_TLS_KEY_FILE and KMS_TLS_CLIENT_CA_FILE must be set together");
  }
  const tls = certFile && keyFile && clientCaFile ? { certFile, keyFile, clientCaFile } : undefined;

  const jwksFile = env["KMS_JWKS_FILE"];
  const jwksUrl = env["KMS_JWKS_URL"];
  if (jwksFile !== undefined && jwksUrl !== undefined) throw new ConfigError("set KMS_JWKS_FILE or KMS_JWKS_URL, not both");
  if (jwksUrl !== undefined && !/^https:\/\//.test(jwksUrl) && production) {
    throw new ConfigError("KMS_JWKS_URL must be an https:// URL in production mode");
  }

  if (production) {
    const missing = [
      tls === undefined ? "KMS_TLS_CERT_FILE, KMS_TLS_KEY_FILE, KMS_TLS_CLIENT_CA_FILE" : undefined,
      env["DATABASE_URL"] === undefined ? "DATABASE_URL" : undefined,
      jwksFile === undefined && jwksUrl === undefined ? "KMS_JWKS_FILE or KMS_JWKS_URL" : undefined,
      env["KMS_JWT_ISSUER"] === undefined ? "KMS_JWT_ISSUER" : undefined,
      env["KMS_JWT_AUDIENCE"] === undefined ? "KMS_JWT_AUDIENCE" : undefined,
    ].filter((v) => v !== undefined);
    if (missing.length > 0) throw new ConfigError(`production mode needs ${missing.join("; ")}`);
  }

  return {
    mode,
    host: env["KMS_HOST"] ?? "127.0.0.1",
    port: integer(env, "KMS_PORT", 8443, 0, 65_535),
    dataDir,
    databaseUrl: env["DATABASE_URL"],
    databaseTls: {
      ...(env["KMS_DATABASE_CA_FILE"] === undefined ? {} : { caFile: env["KMS_DATABASE_CA_FILE"] }),
      ...(env["KMS_DATABASE_CERT_FILE"] === undefined ? {} : { certFile: env["KMS_DATABASE_CERT_FILE"] }),
      ...(env["KMS_DATABASE_KEY_FILE"] === undefined ? {} : { keyFile: env["KMS_DATABASE_KEY_FILE"] }),
    },
    tls,
    jwt: {
      jwksFile,
      jwksUrl,
      issuer: env["KMS_JWT_ISSUER"],
      audience: env["KMS_JWT_AUDIENCE"],
      tenantClaim: env["KMS_JWT_TENANT_CLAIM"] ?? "tenant_id",
    },
    rootProvider: rootProvider(() => rootProviderOptionsFromEnv(env, { dataDir })),
    previousRootProvider: rootProvider(() => previousRootProviderOptionsFromEnv(env, { dataDir })),
    customerKeys: customerKeySettingsFromEnv(env),
    kekCache: {
      maxEntries: integer(env, "KMS_KEK_CACHE_MAX_ENTRIES", 10_000, 0, 1_000_000),
      maxAgeMs: integer(env, "KMS_KEK_CACHE_TTL_SECONDS", 300, 0, 3_600) * 1000,
    },
    hotPathLeaseMs: hotPathLeaseMs(env),
    maxBodyBytes: integer(env, "KMS_MAX_BODY_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
    shutdownGraceMs: integer(env, "KMS_SHUTDOWN_GRACE_SECONDS", 10, 0, 600) * 1000,
    tlsReloadIntervalMs: integer(env, "KMS_TLS_RELOAD_INTERVAL_SECONDS", 60, 1, 86_400) * 1000,
    adminSpiffeIds: spiffeList(env, "KMS_ADMIN_SPIFFE_IDS", production ? [] : ["spiffe://matih.local/dev"]),
    workers: {
      enabled: oneOf(env, "KMS_WORKERS", ["on", "off"] as const, "on") === "on",
      intervalMs: integer(env, "KMS_WORKER_INTERVAL_MS", 2_000, 10, 3_600_000),
      rewrapBatchSize: integer(env, "KMS_REWRAP_BATCH_SIZE", 1_000, 1, 10_000),
      // PGlite is one session: a second lane would only queue behind the first.
      concurrency: integer(env, "KMS_WORKER_CONCURRENCY", env["DATABASE_URL"] === undefined ? 1 : 2, 1, 16),
      leaseMs: integer(env, "KMS_JOB_LEASE_SECONDS", 30, 1, 3_600) * 1000,
    },
    rootKeyRotationDays: integer(env, "KMS_ROOT_KEY_ROTATION_DAYS", 365, 0, 3_650),
    eventPollIntervalMs: integer(env, "KMS_EVENT_POLL_INTERVAL_MS", 150, 10, 10_000),
    eventRetentionDays: integer(env, "KMS_EVENT_RETENTION_DAYS", 7, 1, 3_650),
  };
}

function rootProvider<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof RootProviderConfigError) throw new ConfigError(error.message);
    throw error;
  }
}

function spiffeList(env: NodeJS.ProcessEnv, name: string, fallback: readonly string[]): readonly string[] {
  const raw = env[name];
  if (raw === undefined) return fallback;
  const ids = raw.split(",").map((id) => id.trim()).filter((id) => id !== "");
  for (const id of ids) {
    if (!/^spiffe:\/\/[^/\s]+(\/\S*)?$/.test(id)) throw new ConfigError(`${name} must be a comma-separated list of spiffe:// URIs, got ${JSON.stringify(id)}`);
  }
  return ids;
}

const HOT_PATH_LEASE_MIN_MS = 500;

function hotPathLeaseMs(env: NodeJS.ProcessEnv): number {
  const value = integer(env, "KMS_HOT_PATH_LEASE_MS", 3_000, 0, LONGEST_LEASE_MS);
  if (value !== 0 && value < HOT_PATH_LEASE_MIN_MS) {
    throw new ConfigError(
      `KMS_HOT_PATH_LEASE_MS must be 0 (off) or from ${HOT_PATH_LEASE_MIN_MS} to ${LONGEST_LEASE_MS}, got ${JSON.stringify(env["KMS_HOT_PATH_LEASE_MS"])}`,
    );
  }
  return value;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

/**
 * Builds the running service from a Config: storage (migrated), root provider,
 * KEK cache, service implementations and the TLS server. main.ts calls it;
 * end-to-end tests call it too, with an injected database and clock.
 */
import { customerKeyOpener } from "./providers/customer-key-env.js";
import { createCustomerKeys } from "./service/customer-keys.js";
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createJsonLinesLogger, type Logger } from "./api/logger.js";
import { createKmsServer, type KmsServer, type KmsServerTls } from "./api/kms-server.js";
import { createAdminService } from "./api/services/admin-service.js";
import { createDataKeyService } from "./api/services/data-key-service.js";
import { createDatasetService } from "./api/services/dataset-service.js";
import { createKeyEventService } from "./api/services/key-event-service.js";
import { createKeyManagementService } from "./api/services/key-management-service.js";
import { ConfigError, type Config } from "./config.js";
import { DEV_JWT_AUDIENCE, DEV_JWT_ISSUER, DEV_KEY_ID_PREFIX, ensureDevTokenKey } from "./dev/dev-token-issuer.js";
import { systemClock, type Clock } from "./domain/clock.js";
import type { RootKeyProvider } from "./domain/root-key-provider.js";
import { startBackgroundWorkers, type BackgroundWorkers } from "./jobs/background-workers.js";
import { periodicTasks } from "./jobs/periodic-tasks.js";
import { createRootProvider } from "./providers/create-root-provider.js";
import { flushDecryptTracking } from "./service/decrypt-tracking.js";
import { createKekCache } from "./service/kek-cache.js";
import type { KmsContext } from "./service/kms-context.js";
import { prepareRootKeyAtStart, RootKeysNotHeldError } from "./service/root-key-startup.js";
import { migrateToLatest } from "./storage/migrations/migrate-to-latest.js";
import { openDatabase, type OpenedDatabase } from "./storage/open-database.js";
import { lockDataDir } from "./storage/pglite/data-dir-lock.js";
import { watchTlsFiles } from "./tls/tls-file-watcher.js";

/** The development CA's subject: production mode refuses certificates under it. */
const DEV_CA_MARKER = "matih-kms development CA";

export interface RunningKms {
  readonly server: KmsServer;
  readonly context: KmsContext;
  readonly database: OpenedDatabase;
  /** The background loops (re-wraps, periodic tasks); undefined with KMS_WORKERS=off. */
  readonly workers: BackgroundWorkers | undefined;
  /** Where the development PKI lives, in development mode. */
  readonly devTlsDir: string | undefined;
  /** Drains in-flight calls, then closes the server, the provider and the database. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOverrides {
  /** An already-open (and migrated) database, e.g. a test's; the caller closes it. */
  readonly database?: OpenedDatabase;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

export async function startKms(config: Config, overrides: StartOverrides = {}): Promise<RunningKms> {
  const logger = overrides.logger ?? createJsonLinesLogger();
  // The master key first: a key file others can read must stop start-up before anything is created.
  const rootProvider = await createRootProvider(config.rootProvider, config.previousRootProvider);
  try {
    return await startWithRootProvider(config, overrides, logger, rootProvider);
  } catch (error) {
    await rootProvider.close();
    throw error;
  }
}

async function startWithRootProvider(config: Config, overrides: StartOverrides, logger: Logger, rootProvider: RootKeyProvider): Promise<RunningKms> {
  const devTlsDir = config.mode === "development" && config.tls === undefined ? join(config.dataDir, "tls") : undefined;
  const tls = await loadTls(config, devTlsDir);
  const jwt = await jwtOptions(config);

  const ownsDatabase = overrides.database === undefined;
  const pgliteDir = join(config.dataDir, "pglite");
  const lock = ownsDatabase && config.databaseUrl === undefined ? await lockDataDir(config.dataDir) : undefined;
  let database: OpenedDatabase | undefined;
  try {
    database = overrides.database ?? (await openConfiguredDatabase(config, pgliteDir));
    if (ownsDatabase) await migrateToLatest(database.db);
    if (ownsDatabase && config.hotPathLeaseMs > 0 && database.startHotPathLease !== undefined) {
      await database.startHotPathLease({
        leaseMs: config.hotPathLeaseMs,
        onTrouble: (message, error) => logger.warn(message, error === undefined ? {} : { err: error }),
      });
    }
    const context: KmsContext = {
      db: database.db,
      rootProvider,
      clock: overrides.clock ?? systemClock,
      kekCache: createKekCache(config.kekCache),
      ...(config.customerKeys === undefined
        ? {}
        : { customerKeys: createCustomerKeys({ enterpriseTenants: config.customerKeys.enterpriseTenants, open: customerKeyOpener(config.customerKeys) }) }),
    };
    // Record the master key (first start) or switch the provider to the one recorded as current; refuse if some KEK could not be unwrapped here.
    await logRootKeyAtStart(context, logger).catch((error: unknown) => {
      throw error instanceof RootKeysNotHeldError ? new ConfigError(error.message) : error;
    });
    let workers: BackgroundWorkers | undefined;
    const keyEvents = createKeyEventService(context, {
      adminSpiffeIds: config.adminSpiffeIds,
      pollIntervalMs: config.eventPollIntervalMs,
      logger,
    });
    const server = await createKmsServer({
      services: {
        keyManagement: createKeyManagementService(context),
        dataKey: createDataKeyService(context),
        dataset: createDatasetService(context),
        keyEvents: keyEvents.impl,
        admin: createAdminService(context, {
          adminSpiffeIds: config.adminSpiffeIds,
          rootKeyRotationDays: config.rootKeyRotationDays,
          onRotated: () => workers?.wake(),
        }),
      },
      tls,
      auth: jwt === undefined ? {} : { jwt },
      port: config.port,
      host: config.host,
      maxBodyBytes: config.maxBodyBytes,
      logger,
    });
    const provider = rootProvider;
    const db = database;
    if (config.workers.enabled) {
      workers = startBackgroundWorkers(context, {
        intervalMs: config.workers.intervalMs,
        jobs: { batchSize: config.workers.rewrapBatchSize, concurrency: config.workers.concurrency, leaseMs: config.workers.leaseMs },
        tasks: periodicTasks({ rootKeyRotationDays: config.rootKeyRotationDays, eventRetentionDays: config.eventRetentionDays, logger }),
        logger,
      });
    }
    const watcher =
      config.tls === undefined
        ? undefined
        : watchTlsFiles(config.tls, (material) => server.reloadTls(material), {
            intervalMs: config.tlsReloadIntervalMs,
            onError: (error) => logger.warn("TLS files changed but could not be loaded; keeping the current certificate", { err: error }),
          });
    return {
      server,
      context,
      database: db,
      workers,
      devTlsDir,
      async stop(graceMs = config.shutdownGraceMs) {
        watcher?.stop();
        keyEvents.close(); // watch streams end now, not after the grace period
        // The background work stops with the calls in flight, before the provider and the database close.
        await Promise.all([server.close(graceMs), workers?.stop()]);
        await flushDecryptTracking(context);
        context.kekCache.clear();
        await context.customerKeys?.close();
        await provider.close();
        if (ownsDatabase) await db.close();
        await lock?.release();
      },
    };
  } catch (error) {
    if (ownsDatabase) await database?.close();
    await lock?.release();
    throw error;
  }
}

async function logRootKeyAtStart(context: KmsContext, logger: Logger): Promise<void> {
  const root = await prepareRootKeyAtStart(context);
  const key = { provider: root.current.provider, root_key_id: root.current.root_key_id };
  if (root.misaligned !== undefined) {
    logger.warn("the master key recorded as current is not usable here; new KEKs are wrapped under this server's own", { ...key, err: root.misaligned });
  }
  if (root.adoptedFrom !== undefined) {
    logger.info("root provider reconfigured: no KEK was under the previous master key, the configured one is now current", { ...key, replaced: root.adoptedFrom });
  }
  if (root.switchPending) {
    logger.info("root provider switch configured: KEKs are still wrapped under the previous provider until SwitchRootProvider is called", {
      ...key,
      previous_provider: root.previous?.provider,
    });
  } else if (root.previous !== undefined) {
    const fields = { ...key, previous_provider: root.previous.provider, keks_under_previous: root.previous.keks };
    if (root.previous.removable) logger.warn("the previous root provider is no longer needed: remove KMS_ROOT_PROVIDER_PREVIOUS and its KMS_PREVIOUS_* settings", fields);
    else logger.info("root provider switch under way: KEKs are being re-wrapped from the previous provider", fields);
  }
}

async function openConfiguredDatabase(config: Config, pgliteDir: string): Promise<OpenedDatabase> {
  if (config.databaseUrl === undefined) return openDatabase({ dataDir: pgliteDir });
  const { caFile, certFile, keyFile } = config.databaseTls;
  const ssl = {
    ...(caFile === undefined ? {} : { ca: await readFile(caFile) }),
    ...(certFile === undefined ? {} : { cert: await readFile(certFile) }),
    ...(keyFile === undefined ? {} : { key: await readFile(keyFile) }),
  };
  return openDatabase({ databaseUrl: config.databaseUrl, ...(Object.keys(ssl).length === 0 ? {} : { ssl }) });
}

async function loadTls(config: Config, devTlsDir: string | undefined): Promise<KmsServerTls> {
  if (devTlsDir !== undefined) {
    // Loaded only in development: a production server never carries the certificate generator.
    const { ensureDevelopmentPki } = await import("./tls/dev-pki.js");
    const pki = await ensureDevelopmentPki(devTlsDir);
    return { key: pki.serverKey, cert: pki.serverCert, ca: pki.caCert };
  }
  if (config.tls === undefined) throw new ConfigError("no TLS certificate configured");
  const [key, cert, ca] = await Promise.all([
    readFile(config.tls.keyFile),
    readFile(config.tls.certFile),
    readFile(config.tls.clientCaFile),
  ]);
  if (config.mode === "production") {
    for (const [name, pem] of [["KMS_TLS_CERT_FILE", cert], ["KMS_TLS_CLIENT_CA_FILE", ca]] as const) {
      const certificate = new X509Certificate(pem);
      if (certificate.subject.includes(DEV_CA_MARKER) || certificate.issuer.includes(DEV_CA_MARKER)) {
        throw new ConfigError(`${name} is a development certificate; production mode refuses it`);
      }
    }
  }
  return { key, cert, ca };
}

async function jwtOptions(config: Config) {
  const { jwksFile, jwksUrl, issuer, audience, tenantClaim } = config.jwt;
  if (jwksUrl !== undefined) {
    return { jwks: { url: jwksUrl }, issuer: issuer ?? "", audience: audience ?? "", tenantClaim };
  }
  if (jwksFile !== undefined) {
    if (config.mode === "production" && (await readFile(jwksFile, "utf8")).includes(DEV_KEY_ID_PREFIX)) {
      throw new ConfigError("KMS_JWKS_FILE holds the development token key; production mode refuses it");
    }
    return { jwks: { file: jwksFile }, issuer: issuer ?? "", audience: audience ?? "", tenantClaim };
  }
  if (config.mode !== "development") return undefined;
  const files = await ensureDevTokenKey(config.dataDir);
  return { jwks: { file: files.jwksFile }, issuer: issuer ?? DEV_JWT_ISSUER, audience: audience ?? DEV_JWT_AUDIENCE, tenantClaim };
}

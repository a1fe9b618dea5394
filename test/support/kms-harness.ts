/**
 * An in-process matih-kms for service tests: a fresh database of the given
 * engine, a local root provider in a temp dir, a controllable clock, and
 * Connect clients over `createRouterTransport` that pass through the same RPC
 * guard (authentication, tenant check, error mapping) as the real server.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, createRouterTransport, type Client, type Interceptor } from "@connectrpc/connect";
import { AdminService } from "../../gen/matih/kms/v1/admin_service_pb.js";
import { DataKeyService } from "../../gen/matih/kms/v1/data_key_service_pb.js";
import { DatasetService } from "../../gen/matih/kms/v1/dataset_service_pb.js";
import { KeyManagementService } from "../../gen/matih/kms/v1/key_management_service_pb.js";
import { KeyEventService } from "../../gen/matih/kms/v1/key_event_service_pb.js";
import { authenticationKey, type Caller } from "../../server/src/api/authentication.js";
import type { Logger } from "../../server/src/api/logger.js";
import { silentLogger } from "../../server/src/api/logger.js";
import { createRpcGuard } from "../../server/src/api/rpc-guard.js";
import { createAdminService } from "../../server/src/api/services/admin-service.js";
import { createDataKeyService } from "../../server/src/api/services/data-key-service.js";
import { createDatasetService } from "../../server/src/api/services/dataset-service.js";
import { createKeyManagementService } from "../../server/src/api/services/key-management-service.js";
import { createKeyEventService, type KeyEventServiceHandle } from "../../server/src/api/services/key-event-service.js";
import type { Clock } from "../../server/src/domain/clock.js";
import { openLocalRootProvider } from "../../server/src/providers/local/local-root-provider.js";
import type { CustomerKeys } from "../../server/src/service/customer-keys.js";
import { createKekCache, type KekCacheOptions } from "../../server/src/service/kek-cache.js";
import type { KmsContext } from "../../server/src/service/kms-context.js";
import type { OpenedDatabase } from "../../server/src/storage/open-database.js";
import type { TestEngine } from "./databases.js";

export const SERVICE_CALLER: Caller = { kind: "service", spiffeId: "spiffe://matih.local/test" };
export const tenantCaller = (tenantId: string): Caller => ({ kind: "tenant", tenantId, subject: "test-user" });
/** A service identity listed as privileged (adminSpiffeIds) in every test KMS. */
export const ADMIN_SPIFFE_ID = "spiffe://matih.local/test-admin";
export const ADMIN_CALLER: Caller = { kind: "service", spiffeId: ADMIN_SPIFFE_ID };

/** A clock the test moves by hand. */
export interface ManualClock extends Clock {
  advanceDays(days: number): void;
  set(time: Date): void;
}

export function createManualClock(start = new Date("2026-01-01T00:00:00Z")): ManualClock {
  let now = start.getTime();
  return {
    now: () => new Date(now),
    advanceDays: (days) => {
      now += days * 86_400_000;
    },
    set: (time) => {
      now = time.getTime();
    },
  };
}

export interface TestKms {
  readonly context: KmsContext;
  readonly database: OpenedDatabase;
  readonly clock: ManualClock;
  readonly dataDir: string;
  /** WatchKeyEvents: the service and its feed (one poller per test KMS). */
  readonly keyEvents: KeyEventServiceHandle;
  clients(caller?: Caller): {
    keys: Client<typeof KeyManagementService>;
    dataKeys: Client<typeof DataKeyService>;
    events: Client<typeof KeyEventService>;
    datasets: Client<typeof DatasetService>;
    admin: Client<typeof AdminService>;
  };
  close(): Promise<void>;
}

export interface TestKmsOptions {
  readonly kekCache?: KekCacheOptions;
  readonly logger?: Logger;
  /** Key-event poll interval; default 20 ms (tests wait on it). */
  readonly eventPollIntervalMs?: number;
  /** Key-event query size; default the server's. */
  readonly eventBatchSize?: number;
  /** BYOK: customer-key providers and the plan gate (closed with the KMS). */
  readonly customerKeys?: CustomerKeys;
}

export async function createTestKms(engine: TestEngine, options: TestKmsOptions = {}): Promise<TestKms> {
  const database = await engine.open();
  const dataDir = await mkdtemp(join(tmpdir(), "kms-test-"));
  const rootProvider = await openLocalRootProvider(dataDir);
  const clock = createManualClock();
  const context: KmsContext = {
    db: database.db,
    rootProvider,
    clock,
    kekCache: createKekCache(options.kekCache ?? { maxEntries: 100, maxAgeMs: 60_000 }),
    ...(options.customerKeys === undefined ? {} : { customerKeys: options.customerKeys }),
  };
  const keyManagement = createKeyManagementService(context);
  const dataKey = createDataKeyService(context);
  const dataset = createDatasetService(context);
  const admin = createAdminService(context, { adminSpiffeIds: [ADMIN_SPIFFE_ID], rootKeyRotationDays: 365 });
  const log = options.logger ?? silentLogger;
  const keyEvents = createKeyEventService(context, {
    adminSpiffeIds: [ADMIN_SPIFFE_ID],
    pollIntervalMs: options.eventPollIntervalMs ?? 20,
    batchSize: options.eventBatchSize,
    logger: log,
  });

  return {
    context,
    database,
    clock,
    dataDir,
    keyEvents,
    clients(caller = SERVICE_CALLER) {
      const asCaller: Interceptor = (next) => (req) => {
        req.contextValues.set(authenticationKey, { inputs: undefined, authenticator: undefined, result: Promise.resolve(caller), caller });
        return next(req);
      };
      const transport = createRouterTransport(
        (router) => {
          router.service(KeyManagementService, keyManagement);
          router.service(DataKeyService, dataKey);
          router.service(DatasetService, dataset);
          router.service(KeyEventService, keyEvents.impl);
          router.service(AdminService, admin);
        },
        { router: { interceptors: [asCaller, createRpcGuard({ log, isDraining: () => false })] } },
      );
      return {
        keys: createClient(KeyManagementService, transport),
        dataKeys: createClient(DataKeyService, transport),
        events: createClient(KeyEventService, transport),
        datasets: createClient(DatasetService, transport),
        admin: createClient(AdminService, transport),
      };
    },
    async close() {
      keyEvents.close();
      context.kekCache.clear();
      await context.customerKeys?.close();
      await rootProvider.close();
      await database.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

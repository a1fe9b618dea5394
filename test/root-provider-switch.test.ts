/**
 * Switching the root provider, on PostgreSQL and on PGlite: local -> pkcs11
 * (a SoftHSM2 token) and local -> aws-kms (the local AWS KMS server, through
 * the real SDK). A server configured with the new provider and the old one as
 * previous keeps wrapping under the old one until SwitchRootProvider; then new
 * KEKs go under the new one and the ROOT_REWRAP job re-wraps every KEK. The
 * server "crashes" mid-migration (its lease left behind, its providers
 * dropped), a new one takes over after the lease and finishes; no batch is
 * applied twice. Decrypt, GenerateDataKey and CreateKey run throughout with no
 * KEK cache (every call unwraps through a provider) and none fails. A server
 * without the previous provider refuses to start while a KEK still needs it,
 * and starts once none does.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../server/src/api/logger.js";
import { ConfigError, loadConfig } from "../server/src/config.js";
import { startKms } from "../server/src/start-kms.js";
import { systemClock } from "../server/src/domain/clock.js";
import type { RootKeyProvider } from "../server/src/domain/root-key-provider.js";
import { drainJobs } from "../server/src/jobs/job-runner.js";
import { createRootProvider, type RootProviderOptions } from "../server/src/providers/create-root-provider.js";
import { openLocalRootProvider } from "../server/src/providers/local/local-root-provider.js";
import { previousRootProviderOptionsFromEnv, rootProviderOptionsFromEnv } from "../server/src/providers/root-provider-env.js";
import { createKey } from "../server/src/service/create-key.js";
import { decryptDataKey } from "../server/src/service/decrypt-data-key.js";
import { generateDataKey } from "../server/src/service/generate-data-key.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import type { KmsContext } from "../server/src/service/kms-context.js";
import { prepareRootKeyAtStart, RootKeysNotHeldError } from "../server/src/service/root-key-startup.js";
import { getRootKeyStatus } from "../server/src/service/root-key-status.js";
import { switchRootProvider } from "../server/src/service/root-provider-switch.js";
import type { OpenedDatabase } from "../server/src/storage/open-database.js";
import { material, seedKey } from "../server/src/storage/testing/fixtures.js";
import { engines } from "./support/databases.js";
import { seedDekVersions } from "./support/dek-seeding.js";
import { AWS_TEST_CREDENTIALS, startLocalAwsKms, type LocalAwsKms } from "./providers/targets/aws-kms.js";
import { pkcs11SkipReason, startLocalToken, type LocalToken } from "./providers/targets/pkcs11.js";

const TENANT = "switch";
const KEYS = 9;
const DEKS_PER_KEY = 3;
const BYOK_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/byok";
const LEASE_MS = 400;

interface Target {
  readonly name: "pkcs11" | "aws-kms";
  readonly skip: string | undefined;
  /** Starts the token or server; returns the new root provider's options. */
  start(): Promise<{ options: RootProviderOptions; close(): Promise<void> }>;
}

const targets: Target[] = [
  {
    name: "pkcs11",
    skip: pkcs11SkipReason(),
    async start() {
      const token: LocalToken = await startLocalToken();
      return {
        options: { kind: "pkcs11", library: token.token.library, tokenLabel: token.token.tokenLabel, pin: token.token.pin, keyLabel: token.keyA },
        close: () => token.close(),
      };
    },
  },
  {
    name: "aws-kms",
    skip: undefined,
    async start() {
      const aws: LocalAwsKms = await startLocalAwsKms();
      return {
        options: { kind: "aws-kms", keyId: aws.keyA, region: aws.server.region, endpoint: aws.server.endpoint, credentials: AWS_TEST_CREDENTIALS, maxAttempts: 2 },
        close: () => aws.close(),
      };
    },
  },
];

interface KnownDek {
  readonly keyId: string;
  readonly reference: Buffer;
  readonly plaintext: Buffer;
}

describe.each(engines.flatMap((engine) => targets.map((target) => ({ engine, target, label: `local -> ${target.name} on ${engine.name}` }))))("switching the root provider: $label", ({ engine, target }) => {
  let database: OpenedDatabase;
  let dataDir: string;
  let newRoot: { options: RootProviderOptions; close(): Promise<void> };
  const previous = (): RootProviderOptions => ({ kind: "local", dataDir });
  const known: KnownDek[] = [];
  const opened: RootKeyProvider[] = [];
  const contextWith = (rootProvider: RootKeyProvider): KmsContext => ({
    db: database.db,
    rootProvider,
    clock: systemClock,
    // No KEK cache: every call unwraps its KEK through whichever provider holds it now.
    kekCache: createKekCache({ maxEntries: 0, maxAgeMs: 0 }),
  });
  const open = async (options: RootProviderOptions, previousOptions?: RootProviderOptions): Promise<RootKeyProvider> => {
    const provider = await createRootProvider(options, previousOptions);
    opened.push(provider);
    return provider;
  };
  const db = () => database.db;
  const kekRoots = async () =>
    db().selectFrom("kek_versions").select(["root_provider", "root_key_id"]).where("wrapped_material", "is not", null).where("key_id", "<>", "byok").execute();

  beforeAll(async () => {
    if (target.skip !== undefined) return;
    database = await engine.open();
    dataDir = await mkdtemp(join(tmpdir(), "kms-switch-"));
    newRoot = await target.start();
    // The server as it ran before: the local master key only.
    const local = await openLocalRootProvider(dataDir);
    try {
      const context = contextWith(local);
      await prepareRootKeyAtStart(context);
      for (let i = 0; i < KEYS; i++) {
        const keyId = `k${i}`;
        await createKey(context, { tenantId: TENANT, keyId });
        const seeded = await seedDekVersions(db(), local, { tenantId: TENANT, keyId }, DEKS_PER_KEY);
        known.push(...seeded.map((dek) => ({ keyId, reference: dek.reference, plaintext: dek.plaintext })));
      }
    } finally {
      await local.close();
    }
    // A customer-managed KEK: wrapped by the tenant's own key, never part of the switch.
    await seedKey(db(), TENANT, "byok", { protection: "CUSTOMER_MANAGED" });
    await db().updateTable("kek_versions").set({ root_provider: "AWS_KMS", root_key_id: BYOK_KEY_ARN }).where("key_id", "=", "byok").execute();
  }, 120_000);
  afterAll(async () => {
    for (const provider of opened) await provider.close().catch(() => undefined);
    await newRoot?.close();
    await database?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it.skipIf(target.skip !== undefined)(
    "re-wraps every KEK under the new provider across a crash and a takeover, with Decrypt, GenerateDataKey and CreateKey succeeding throughout; then the previous provider is no longer needed",
    async () => {
      // 1. Every replica gets the new provider plus the old one as previous: it still wraps under the old one.
      const first = await open(newRoot.options, previous());
      let live = contextWith(first);
      const atStart = await prepareRootKeyAtStart(live);
      expect(atStart.switchPending).toBe(true);
      expect(atStart.previous).toEqual({ provider: "local", keks: KEYS, removable: false });
      expect(first.name).toBe("local");
      const localKeyId = atStart.current.root_key_id;

      const load = startLoad(() => live, known);
      try {
        await load.atLeast(20);
        // 2. SwitchRootProvider: new KEKs go under the new provider at once; the job covers every KEK not under it.
        const jobId = await switchRootProvider(live, { provider: target.name });
        expect(jobId).toBeDefined();
        expect(first.name).toBe(target.name);
        const targetKeyId = first.currentKeyId;
        expect(await switchRootProvider(live, { provider: target.name })).toBeUndefined(); // idempotent
        await expect(switchRootProvider(live, { provider: "gcp-kms" })).rejects.toMatchObject({ reason: "INVALID_FIELD" });
        const switched = await getRootKeyStatus(live, { rotationDays: 365 });
        expect(switched).toMatchObject({ provider: target.name, currentKeyId: targetKeyId, configured: { provider: target.name, keyId: targetKeyId } });
        expect(switched.rewrap).toMatchObject({ jobId, done: 0 });
        expect(switched.rewrap!.total).toBeGreaterThanOrEqual(KEYS);
        expect(switched.previous?.removable).toBe(false);

        // 3. Two batches, then the server dies: its lease stays behind, its providers are gone.
        const settings = { batchSize: 2, leaseMs: LEASE_MS, concurrency: 1 };
        await drainJobs(live, { ...settings, workerId: "crashed" }, { logger: silentLogger, shouldStop: stopAfter(2) });
        const midway = await getRootKeyStatus(live, { rotationDays: 365 });
        expect(midway.rewrap?.done).toBe(4);
        expect(midway.previous!.keks).toBeGreaterThan(0);

        // 4. Restarted without the previous provider, while KEKs still need it: refused, naming the fix.
        const alone = await open(newRoot.options);
        const refused = await prepareRootKeyAtStart(contextWith(alone)).catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(RootKeysNotHeldError);
        expect(String((refused as Error).message)).toMatch(/KMS_ROOT_PROVIDER_PREVIOUS/);
        expect((refused as RootKeysNotHeldError).unheld.map((k) => [k.provider, k.rootKeyId])).toEqual([["local", localKeyId]]);

        // 5. Restarted with both: it wraps under the new provider (the database says so) and takes the job over once the lease ran out.
        const second = await open(newRoot.options, previous());
        const restarted = contextWith(second);
        const resumed = await prepareRootKeyAtStart(restarted);
        expect(resumed).toMatchObject({ switchPending: false, current: { root_key_id: targetKeyId } });
        expect(second.currentKeyId).toBe(targetKeyId);
        live = restarted;
        await load.atLeast(load.calls() + 8); // calls that took the old context have finished
        await first.close();
        await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 50));
        await drainJobs(restarted, { ...settings, workerId: "restarted" }, { logger: silentLogger });
        await load.atLeast(load.calls() + 20);
      } finally {
        await load.stop();
      }
      expect(load.failures()).toEqual([]);
      expect(load.calls()).toBeGreaterThan(40);

      // 6. Every KEK under the new provider, each batch applied once, the local master key retired.
      const targetKeyId = live.rootProvider.currentKeyId;
      expect(new Set((await kekRoots()).map((r) => `${r.root_provider} ${r.root_key_id}`))).toEqual(new Set([`${target.name} ${targetKeyId}`]));
      const job = await db().selectFrom("jobs").selectAll().where("kind", "=", "ROOT_REWRAP").where("root_key_id", "=", targetKeyId).executeTakeFirstOrThrow();
      const batches = await db().selectFrom("job_batches").select(["batch_no", "rows", "worker"]).where("job_id", "=", job.job_id).orderBy("batch_no").execute();
      expect(job.state).toBe("DONE");
      expect(batches.map((b) => b.batch_no)).toEqual(batches.map((_, i) => i + 1));
      expect(batches.reduce((sum, b) => sum + b.rows, 0)).toBe(job.done);
      expect(job.done).toBeGreaterThanOrEqual(job.total);
      expect(new Set(batches.map((b) => b.worker))).toEqual(new Set(["crashed", "restarted"]));
      const roots = await db().selectFrom("root_keys").select(["root_key_id", "provider", "state"]).execute();
      expect(roots).toEqual(
        expect.arrayContaining([
          { root_key_id: localKeyId, provider: "local", state: "RETIRED" },
          { root_key_id: targetKeyId, provider: target.name, state: "CURRENT" },
        ]),
      );
      const byok = await db().selectFrom("kek_versions").select(["root_provider", "root_key_id", "wrapped_material"]).where("key_id", "=", "byok").executeTakeFirstOrThrow();
      expect(byok).toEqual({ root_provider: "AWS_KMS", root_key_id: BYOK_KEY_ARN, wrapped_material: material(40, 1) });
      const done = await getRootKeyStatus(live, { rotationDays: 365 });
      expect(done).toMatchObject({ keksPendingRewrap: 0, rewrap: undefined, previous: { provider: "local", keks: 0, removable: true } });

      // 7. The previous provider removed: the server starts, and every DEK ever handed out decrypts.
      const final = await open(newRoot.options);
      const after = contextWith(final);
      expect(await prepareRootKeyAtStart(after)).toMatchObject({ adoptedFrom: undefined, previous: undefined, switchPending: false });
      for (const dek of load.known()) {
        const answer = await decryptDataKey(after, { tenantId: TENANT, keyId: dek.keyId, reference: dek.reference });
        expect(answer.plaintext.equals(dek.plaintext)).toBe(true);
      }
    },
    180_000,
  );
});

describe.each(engines)("a switch to a master key that can wrap but not unwrap, on $name", (engine) => {
  it("is refused with PROVIDER_UNAVAILABLE and changes nothing; once the key may decrypt, the switch goes through", async () => {
    const database = await engine.open();
    const dataDir = await mkdtemp(join(tmpdir(), "kms-switch-probe-"));
    const aws: LocalAwsKms = await startLocalAwsKms();
    const providers: RootKeyProvider[] = [];
    try {
      const context = (rootProvider: RootKeyProvider): KmsContext => ({
        db: database.db,
        rootProvider,
        clock: systemClock,
        kekCache: createKekCache({ maxEntries: 0, maxAgeMs: 0 }),
      });
      const local = await openLocalRootProvider(dataDir);
      providers.push(local);
      await prepareRootKeyAtStart(context(local));
      await createKey(context(local), { tenantId: TENANT, keyId: "k" });
      const awsOptions: RootProviderOptions = { kind: "aws-kms", keyId: aws.keyA, region: aws.server.region, endpoint: aws.server.endpoint, credentials: AWS_TEST_CREDENTIALS, maxAttempts: 1 };
      const switching = await createRootProvider(awsOptions, { kind: "local", dataDir });
      providers.push(switching);
      const before = {
        roots: await database.db.selectFrom("root_keys").select(["root_key_id", "state"]).orderBy("root_key_id").execute(),
        keks: await database.db.selectFrom("kek_versions").select(["root_provider", "root_key_id", "wrapped_material"]).execute(),
        jobs: await database.db.selectFrom("jobs").select(["kind", "state"]).execute(),
      };

      // A key policy granting kms:Encrypt but not kms:Decrypt.
      aws.server.setActionAllowed(aws.keyA, "Decrypt", false);
      await expect(switchRootProvider(context(switching))).rejects.toMatchObject({ reason: "PROVIDER_UNAVAILABLE", message: expect.stringContaining("nothing was switched") });
      expect({
        roots: await database.db.selectFrom("root_keys").select(["root_key_id", "state"]).orderBy("root_key_id").execute(),
        keks: await database.db.selectFrom("kek_versions").select(["root_provider", "root_key_id", "wrapped_material"]).execute(),
        jobs: await database.db.selectFrom("jobs").select(["kind", "state"]).execute(),
      }).toEqual(before);

      aws.server.setActionAllowed(aws.keyA, "Decrypt", true);
      expect(await switchRootProvider(context(switching))).toEqual(expect.any(Number));
      const current = await database.db.selectFrom("root_keys").select(["root_key_id", "provider"]).where("state", "=", "CURRENT").executeTakeFirstOrThrow();
      expect(current).toEqual({ root_key_id: aws.keyA, provider: "aws-kms" });
    } finally {
      for (const provider of providers) await provider.close().catch(() => undefined);
      await aws.close();
      await database.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("start-up with a switched root provider (startKms, PGlite)", () => {
  it("refuses to start with only the new provider while KEKs are under the old one, naming KMS_ROOT_PROVIDER_PREVIOUS; starts with both, still wrapping under the old one until the switch", async () => {
    const aws = await startLocalAwsKms();
    const dataDir = await mkdtemp(join(tmpdir(), "kms-switch-start-"));
    const database = await engines.find((e) => e.name === "pglite")!.open();
    process.env["AWS_ACCESS_KEY_ID"] = AWS_TEST_CREDENTIALS.accessKeyId;
    process.env["AWS_SECRET_ACCESS_KEY"] = AWS_TEST_CREDENTIALS.secretAccessKey;
    try {
      const local = await openLocalRootProvider(dataDir);
      const context = { db: database.db, rootProvider: local, clock: systemClock, kekCache: createKekCache({ maxEntries: 0, maxAgeMs: 0 }) };
      await prepareRootKeyAtStart(context);
      await createKey(context, { tenantId: TENANT, keyId: "before" });
      await local.close();

      const env = {
        KMS_DATA_DIR: dataDir,
        KMS_PORT: "0",
        KMS_WORKERS: "off",
        KMS_ROOT_PROVIDER: "aws-kms",
        KMS_AWS_KMS_KEY_ID: aws.keyA,
        KMS_AWS_REGION: aws.server.region,
        KMS_AWS_KMS_ENDPOINT: aws.server.endpoint,
      };
      const refused = await startKms(loadConfig(env), { database, logger: silentLogger }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as Error).message).toMatch(/1 under local key local-.*KMS_ROOT_PROVIDER_PREVIOUS/);

      const kms = await startKms(loadConfig({ ...env, KMS_ROOT_PROVIDER_PREVIOUS: "local" }), { database, logger: silentLogger });
      try {
        expect(kms.context.rootProvider.name).toBe("local");
        expect(kms.context.rootProvider.providerSwitch?.to).toMatchObject({ name: "aws-kms" });
      } finally {
        await kms.stop(0);
      }
    } finally {
      await database.close();
      await aws.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("root provider switch configuration", () => {
  it("reads the previous provider from KMS_ROOT_PROVIDER_PREVIOUS and KMS_PREVIOUS_* variables, naming them when one is missing", () => {
    const env = {
      KMS_ROOT_PROVIDER: "gcp-kms",
      KMS_GCP_KMS_KEY_NAME: "projects/p/locations/l/keyRings/r/cryptoKeys/new",
      KMS_ROOT_PROVIDER_PREVIOUS: "aws-kms",
      KMS_PREVIOUS_AWS_KMS_KEY_ID: "arn:aws:kms:eu-west-1:111122223333:key/old",
      KMS_PREVIOUS_AWS_REGION: "eu-west-1",
    };
    expect(rootProviderOptionsFromEnv(env, { dataDir: "/d" })).toMatchObject({ kind: "gcp-kms", keyName: "projects/p/locations/l/keyRings/r/cryptoKeys/new" });
    expect(previousRootProviderOptionsFromEnv(env, { dataDir: "/d" })).toMatchObject({ kind: "aws-kms", keyId: "arn:aws:kms:eu-west-1:111122223333:key/old", region: "eu-west-1" });
    expect(() => previousRootProviderOptionsFromEnv({ ...env, KMS_PREVIOUS_AWS_KMS_KEY_ID: "" }, { dataDir: "/d" })).toThrow(/KMS_ROOT_PROVIDER_PREVIOUS=aws-kms needs KMS_PREVIOUS_AWS_KMS_KEY_ID/);
    // The current provider's own variables never leak into the previous one's.
    expect(() => previousRootProviderOptionsFromEnv({ KMS_ROOT_PROVIDER: "aws-kms", KMS_AWS_KMS_KEY_ID: "arn:x", KMS_AWS_REGION: "eu-west-1", KMS_ROOT_PROVIDER_PREVIOUS: "aws-kms", KMS_PREVIOUS_AWS_REGION: "eu-west-1" }, { dataDir: "/d" })).toThrow(
      /KMS_PREVIOUS_AWS_KMS_KEY_ID/,
    );
    expect(previousRootProviderOptionsFromEnv({ KMS_ROOT_PROVIDER: "pkcs11", KMS_ROOT_PROVIDER_PREVIOUS: "local" }, { dataDir: "/d" })).toEqual({ kind: "local", dataDir: "/d" });
    expect(previousRootProviderOptionsFromEnv({}, { dataDir: "/d" })).toBeUndefined();
  });

  it("refuses local as the previous provider of local: a new local master key is a rotation", () => {
    expect(() => previousRootProviderOptionsFromEnv({ KMS_ROOT_PROVIDER_PREVIOUS: "local" }, { dataDir: "/d" })).toThrow(/RotateRootKey/);
  });

  it("opens a previous local provider read-only: a data directory without master.key is an error, not a new key", async () => {
    const empty = await mkdtemp(join(tmpdir(), "kms-switch-empty-"));
    try {
      await expect(createRootProvider({ kind: "local", dataDir: join(empty, "next") }, { kind: "local", dataDir: empty })).rejects.toThrow(/no master key file/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

/** Decrypts of known DEKs, with a GenerateDataKey (then its Decrypt) and now and then a CreateKey, on four lanes, until stopped. */
function startLoad(context: () => KmsContext, seeded: readonly KnownDek[]) {
  const known = [...seeded];
  const failures: string[] = [];
  let calls = 0;
  let stopped = false;
  const lane = async (lane: number): Promise<void> => {
    for (let i = lane; !stopped; i += 4) {
      try {
        if (i % 25 === 3) {
          const keyId = `live${i}`;
          await createKey(context(), { tenantId: TENANT, keyId });
          const generated = await generateDataKey(context(), { tenantId: TENANT, keyId });
          known.push({ keyId, reference: generated.reference, plaintext: generated.plaintext });
        } else if (i % 5 === 1) {
          const keyId = `k${i % KEYS}`;
          const generated = await generateDataKey(context(), { tenantId: TENANT, keyId });
          const answer = await decryptDataKey(context(), { tenantId: TENANT, keyId, reference: generated.reference });
          if (!answer.plaintext.equals(generated.plaintext)) failures.push(`generated DEK of ${keyId} decrypted to other bytes`);
        } else {
          const dek = known[i % known.length]!;
          const answer = await decryptDataKey(context(), { tenantId: TENANT, keyId: dek.keyId, reference: dek.reference });
          if (!answer.plaintext.equals(dek.plaintext)) failures.push(`DEK of ${dek.keyId} decrypted to other bytes`);
        }
      } catch (error) {
        failures.push(`${(error as Error).name}: ${(error as Error).message}`);
      }
      calls++;
      // Let timers and I/O in: PGlite and the local provider answer through microtasks alone (as callers' sockets would).
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  const running = Promise.all([0, 1, 2, 3].map(lane));
  return {
    calls: () => calls,
    failures: () => failures,
    known: () => known,
    async atLeast(n: number): Promise<void> {
      while (calls < n && !stopped) await new Promise((resolve) => setTimeout(resolve, 10));
    },
    async stop(): Promise<void> {
      stopped = true;
      await running;
    },
  };
}

/** A shouldStop that lets `batches` batches run (two checks precede the first: claim and batch). */
function stopAfter(batches: number): () => boolean {
  let checks = 0;
  return () => ++checks > batches + 1;
}

/**
 * The re-encryption inventory, decrypt tracking and the purge, on PostgreSQL
 * and on PGlite: a superseded DEK version is purged only once its grace
 * period is over, every dataset reports none of its ciphertexts under it, and
 * no Decrypt of it was served in the quiet window — and the encryption status
 * says what holds each version back.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DekVersionState, StoreKind } from "../gen/matih/kms/v1/resources_pb.js";
import { runPurge } from "../server/src/jobs/purge.js";
import { createKekCache } from "../server/src/service/kek-cache.js";
import { decryptDataKey } from "../server/src/service/decrypt-data-key.js";
import { flushDecryptTracking, RECORD_AT_ONCE_AFTER_MS } from "../server/src/service/decrypt-tracking.js";
import { readDataKeyMaterial } from "../server/src/storage/data-key-material-reader.js";
import { recordLastDecrypts } from "../server/src/storage/lifecycle.repository.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, tenantCaller, type TestKms } from "./support/kms-harness.js";
import { DAY_MS, DAY_S, dekRows, dekStates, eventsOf, withQueryCounter } from "./support/lifecycle.js";

const seconds = (duration: { seconds: bigint } | undefined) => Number(duration?.seconds ?? -1n);

describe.each(engines)("datasets, decrypt tracking and purge on $name", (engine) => {
  let kms: TestKms;
  beforeAll(async () => {
    kms = await createTestKms(engine);
  });
  afterAll(async () => {
    await kms?.close();
  });

  const db = () => kms.database.db;
  const purge = () => runPurge(kms.context, kms.clock.now());
  const advance = (ms: number) => kms.clock.set(new Date(kms.clock.now().getTime() + ms));
  const holdbacksOf = async (tenantId: string, keyId: string) =>
    (await kms.clients().keys.getEncryptionStatus({ tenantId })).keys.find((k) => k.keyId === keyId)!;

  describe("datasets and inventory", () => {
    it("registers datasets under a key, lists them in id order, and a report replaces the previous counts", async () => {
      const { keys, datasets } = kms.clients();
      const tenantId = "inv";
      await keys.createKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      const registered = await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "orders", storeKind: StoreKind.POSTGRES, description: "orders table" });
      expect(registered.dataset).toMatchObject({ tenantId, keyId: "k", datasetId: "orders", storeKind: StoreKind.POSTGRES, description: "orders table", counts: [] });
      expect(registered.dataset?.lastReportTime).toBeUndefined();
      await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "events", storeKind: StoreKind.KAFKA });

      const first = await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "orders", counts: [{ dekVersion: 2, ciphertexts: 5n }, { dekVersion: 1, ciphertexts: 10n }] });
      expect(first.dataset?.counts.map((c) => [c.dekVersion, c.ciphertexts])).toEqual([[1, 10n], [2, 5n]]);
      expect(first.dataset?.lastReportTime?.seconds).toBe(BigInt(kms.clock.now().getTime() / 1000));
      advance(60_000);
      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "orders", counts: [{ dekVersion: 1, ciphertexts: 0n }, { dekVersion: 2, ciphertexts: 15n }] });

      const listed = await datasets.listDatasets({ tenantId, keyId: "k" });
      expect(listed.datasets.map((d) => d.datasetId)).toEqual(["events", "orders"]);
      const orders = listed.datasets.find((d) => d.datasetId === "orders")!;
      expect(orders.counts.map((c) => [c.dekVersion, c.ciphertexts])).toEqual([[2, 15n]]);
      expect(orders.lastReportTime?.seconds).toBe(BigInt(kms.clock.now().getTime() / 1000));
      const stored = await db().selectFrom("dataset_counts").select(["dataset_id", "dek_version", "ciphertexts"]).where("tenant_id", "=", tenantId).execute();
      expect(stored).toEqual([{ dataset_id: "orders", dek_version: 2, ciphertexts: 15 }]);
    });

    describe("refusals", () => {
      beforeAll(async () => {
        const { keys, datasets } = kms.clients();
        await keys.createKey({ tenantId: "inv-refused", keyId: "k" });
        await datasets.registerDataset({ tenantId: "inv-refused", keyId: "k", datasetId: "dup", storeKind: StoreKind.S3 });
        await keys.createKey({ tenantId: "inv-report", keyId: "k" });
        await datasets.registerDataset({ tenantId: "inv-report", keyId: "k", datasetId: "ds", storeKind: StoreKind.ELASTICSEARCH });
        await datasets.reportInventory({ tenantId: "inv-report", keyId: "k", datasetId: "ds", counts: [{ dekVersion: 1, ciphertexts: 7n }] });
      });

      it.each([
        ["a duplicate dataset id", "DATASET_ALREADY_EXISTS", Code.AlreadyExists, "dataset_id", { keyId: "k", datasetId: "dup", storeKind: StoreKind.S3 }],
        ["an unknown key", "KEY_NOT_FOUND", Code.NotFound, "key_id", { keyId: "nope", datasetId: "x", storeKind: StoreKind.S3 }],
        ["no store kind", "INVALID_FIELD", Code.InvalidArgument, "store_kind", { keyId: "k", datasetId: "x" }],
        ["a malformed dataset id", "INVALID_FIELD", Code.InvalidArgument, "dataset_id", { keyId: "k", datasetId: "no/slashes", storeKind: StoreKind.REDIS }],
        ["a long description", "INVALID_FIELD", Code.InvalidArgument, "description", { keyId: "k", datasetId: "x", storeKind: StoreKind.OTHER, description: "d".repeat(257) }],
      ] as const)("refuses registering with %s (%s) and stores nothing", async (_what, reason, code, field, request) => {
        const { datasets } = kms.clients();
        const tenantId = "inv-refused";
        await expectRefusal(datasets.registerDataset({ tenantId, ...request }), { code, reason, field });
        expect((await datasets.listDatasets({ tenantId, keyId: "k" })).datasets.map((d) => d.datasetId)).toEqual(["dup"]);
      });

      it.each([
        ["a DEK version the key does not have", "counts[1].dek_version", [{ dekVersion: 1, ciphertexts: 1n }, { dekVersion: 9, ciphertexts: 1n }]],
        ["the same version twice", "counts[1].dek_version", [{ dekVersion: 1, ciphertexts: 1n }, { dekVersion: 1, ciphertexts: 2n }]],
        ["version 0", "counts[0].dek_version", [{ dekVersion: 0, ciphertexts: 1n }]],
        ["a count beyond 2^53", "counts[0].ciphertexts", [{ dekVersion: 1, ciphertexts: 2n ** 60n }]],
      ])("refuses a report with %s, naming %s, and keeps the previous report", async (_what, field, counts) => {
        const { datasets } = kms.clients();
        const tenantId = "inv-report";
        const before = (await datasets.listDatasets({ tenantId, keyId: "k" })).datasets;
        await expectRefusal(datasets.reportInventory({ tenantId, keyId: "k", datasetId: "ds", counts }), { code: Code.InvalidArgument, reason: "INVALID_FIELD", field });
        expect((await datasets.listDatasets({ tenantId, keyId: "k" })).datasets).toEqual(before);
      });
    });

    it("answers DATASET_NOT_FOUND for a report on an unregistered dataset, and keeps tenants apart", async () => {
      const { keys, datasets } = kms.clients();
      await keys.createKey({ tenantId: "inv-iso", keyId: "k" });
      await expectRefusal(datasets.reportInventory({ tenantId: "inv-iso", keyId: "k", datasetId: "ghost", counts: [] }), {
        code: Code.NotFound,
        reason: "DATASET_NOT_FOUND",
        field: "dataset_id",
      });
      await expectRefusal(kms.clients(tenantCaller("other")).datasets.listDatasets({ tenantId: "inv-iso", keyId: "k" }), {
        code: Code.PermissionDenied,
        reason: "TENANT_FORBIDDEN",
      });
    });
  });

  describe("decrypt tracking", () => {
    it("records a Decrypt of a version unused for an hour at once, and later ones in the background", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "track";
      await keys.createKey({ tenantId, keyId: "k" });
      const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      expect((await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time).toBeNull();

      const t0 = kms.clock.now();
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
      expect((await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time).toEqual(t0);
      advance(30_000);
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
      advance(1_000);
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
      expect((await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time).toEqual(t0);
      await flushDecryptTracking(kms.context);
      expect((await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time).toEqual(new Date(t0.getTime() + 31_000));

      advance(RECORD_AT_ONCE_AFTER_MS);
      const late = kms.clock.now();
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
      expect((await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time).toEqual(late);
      const { key } = await keys.getKey({ tenantId, keyId: "k" });
      expect(key?.dekVersions[0]?.lastDecryptTime?.seconds).toBe(BigInt(Math.floor(late.getTime() / 1000)));
    });

    it("Decrypts of many unused versions at once are all recorded before they answer, sharing their UPDATEs", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "track-many";
      const references: Array<{ keyId: string; reference: Uint8Array }> = [];
      for (let i = 0; i < 12; i++) {
        await keys.createKey({ tenantId, keyId: `k${i}` });
        references.push({ keyId: `k${i}`, reference: (await dataKeys.generateDataKey({ tenantId, keyId: `k${i}` })).reference });
      }
      const counted = withQueryCounter(kms.context);
      const before = counted.queries();
      const answers = await Promise.all(references.map(({ keyId, reference }) => decryptDataKey(counted.context, { tenantId, keyId, reference })));
      const queries = counted.queries() - before;
      for (const answer of answers) answer.plaintext.fill(0);
      // One read each (the counting handle has no cache or batch); the writes of Decrypts answered in the
      // same turn are shared. On PGlite (one session, replies in order) that is all twelve in one; on
      // PostgreSQL it depends on how the pool's replies arrive, so only the records are checked there.
      if (engine.name === "pglite") expect(queries).toBe(references.length + 1);
      else expect(queries).toBeGreaterThan(references.length);
      const t = kms.clock.now();
      for (const { keyId } of references) expect((await dekRows(db(), tenantId, keyId))[0]!.last_decrypt_time).toEqual(t);
    });

    it("a background flush never moves a recorded use back in time", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "track-order";
      await keys.createKey({ tenantId, keyId: "k" });
      const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      await dataKeys.decrypt({ tenantId, keyId: "k", reference });
      advance(10_000);
      await dataKeys.decrypt({ tenantId, keyId: "k", reference }); // noted for the background
      const noted = kms.clock.now();
      advance(RECORD_AT_ONCE_AFTER_MS);
      const later = new Date(kms.clock.now().getTime() + 5_000);
      await recordLastDecrypts(db(), [{ tenantId, keyId: "k", version: 1, time: later }]);
      await flushDecryptTracking(kms.context);
      const recorded = (await dekRows(db(), tenantId, "k"))[0]!.last_decrypt_time;
      expect(recorded).toEqual(later);
      expect(recorded!.getTime()).toBeGreaterThan(noted.getTime());
    });

    it("a Decrypt whose use is recorded recently costs one query, against two when it writes at once", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "track-cost";
      await keys.createKey({ tenantId, keyId: "k" });
      const { reference } = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      const counted = withQueryCounter(kms.context);
      const call = async () => {
        const before = counted.queries();
        const dek = await decryptDataKey(counted.context, { tenantId, keyId: "k", reference });
        dek.plaintext.fill(0);
        return counted.queries() - before;
      };
      expect(await call()).toBe(2);
      expect(await call()).toBe(1);
      expect(await call()).toBe(1);
    });
  });

  describe("purge", () => {
    it("purges a version nothing needs as soon as its grace period is over; a Decrypt of it then answers DEK_VERSION_UNUSABLE", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "purge-plain";
      await keys.createKey({ tenantId, keyId: "k" });
      const v1 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      const v2 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });

      advance(6 * DAY_MS);
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "DECRYPT_ONLY"], [2, "PRIMARY"]]);
      const held = await holdbacksOf(tenantId, "k");
      expect(held.dekVersionHoldbacks.map((h) => [h.version, h.state, seconds(h.graceRemaining), h.datasetsHolding.length, seconds(h.quietRemaining)])).toEqual([
        [1, DekVersionState.DECRYPT_ONLY, DAY_S, 0, 0],
      ]);

      // The hot path keeps version 1's DEK with its cached KEK; the purge must wipe it in this process too.
      const material = await readDataKeyMaterial(db(), tenantId, "k", 1);
      const kept = kms.context.kekCache.dataKey({ tenantId, keyId: "k", keyUid: material!.keyUid, kekVersion: material!.kekVersion }, 1, material!.wrappedDek!);
      expect(kept).toEqual(Buffer.from(v1.plaintext));

      advance(DAY_MS);
      const run = await purge();
      expect(run.purged.filter((p) => p.tenantId === tenantId).map((p) => [p.keyId, p.dekVersion])).toEqual([["k", 1]]);
      expect(kept!.every((byte) => byte === 0)).toBe(true);
      const [row1] = await dekRows(db(), tenantId, "k");
      expect(row1).toMatchObject({ state: "PURGED", wrapped_material: null, purge_time: kms.clock.now() });
      expect(await eventsOf(db(), tenantId, "k")).toEqual(["KEY_CREATED:1", "DEK_ROTATED:2", "DEK_VERSION_PURGED:1"]);
      expect((await holdbacksOf(tenantId, "k")).dekVersionHoldbacks).toEqual([]);
      await expectRefusal(dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference }), {
        code: Code.FailedPrecondition,
        reason: "DEK_VERSION_UNUSABLE",
        field: "reference",
      });
      expect((await dataKeys.decrypt({ tenantId, keyId: "k", reference: v2.reference })).dekVersion).toBe(2);
      const { key } = await keys.getKey({ tenantId, keyId: "k" });
      expect(key?.dekVersions[0]).toMatchObject({ state: DekVersionState.PURGED });
      expect(key?.dekVersions[0]?.purgeTime?.seconds).toBe(BigInt(kms.clock.now().getTime() / 1000));
    });

    it("holds a version while any dataset reports ciphertexts under it or has not reported since, and shows which and how many", async () => {
      const { keys, datasets } = kms.clients();
      const tenantId = "purge-held";
      await keys.createKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      const rotatedAt = kms.clock.now();
      await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "a", storeKind: StoreKind.POSTGRES });
      await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "b", storeKind: StoreKind.S3 });
      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "a", counts: [{ dekVersion: 1, ciphertexts: 100n }, { dekVersion: 2, ciphertexts: 20n }] });

      advance(7 * DAY_MS);
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PENDING_PURGE"], [2, "PRIMARY"]]);
      const status = await holdbacksOf(tenantId, "k");
      expect(status.dekVersionHoldbacks).toHaveLength(1);
      const [holdback] = status.dekVersionHoldbacks;
      expect(holdback).toMatchObject({ version: 1, state: DekVersionState.PENDING_PURGE });
      expect(seconds(holdback!.graceRemaining)).toBe(0);
      expect(holdback!.datasetsHolding.map((d) => [d.datasetId, d.ciphertexts])).toEqual([["a", 100n], ["b", 0n]]);
      expect(status.datasets.map((d) => [d.datasetId, d.storeKind, d.totalCiphertexts, d.underPrimary])).toEqual([
        ["a", StoreKind.POSTGRES, 120n, 20n],
        ["b", StoreKind.S3, 0n, 0n],
      ]);
      expect(status.datasets[0]!.lastReportTime?.seconds).toBe(BigInt(rotatedAt.getTime() / 1000));
      expect(status.datasets[1]!.lastReportTime).toBeUndefined();

      // "a" finishes re-encrypting; "b" (never reported) still holds it.
      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "a", counts: [{ dekVersion: 2, ciphertexts: 120n }] });
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PENDING_PURGE"], [2, "PRIMARY"]]);
      expect((await holdbacksOf(tenantId, "k")).dekVersionHoldbacks[0]!.datasetsHolding.map((d) => d.datasetId)).toEqual(["b"]);

      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "b", counts: [] });
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PURGED"], [2, "PRIMARY"]]);
      const after = await holdbacksOf(tenantId, "k");
      expect(after.datasets.map((d) => [d.datasetId, d.totalCiphertexts, d.underPrimary])).toEqual([["a", 120n, 120n], ["b", 0n, 0n]]);
    });

    it("does not trust a zero reported before the version was superseded", async () => {
      const { keys, datasets } = kms.clients();
      const tenantId = "purge-stale";
      await keys.createKey({ tenantId, keyId: "k" });
      await datasets.registerDataset({ tenantId, keyId: "k", datasetId: "a", storeKind: StoreKind.REDIS });
      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "a", counts: [] });
      advance(60 * 60_000);
      await keys.rotateKey({ tenantId, keyId: "k" });

      advance(8 * DAY_MS);
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PENDING_PURGE"], [2, "PRIMARY"]]);
      expect((await holdbacksOf(tenantId, "k")).dekVersionHoldbacks[0]!.datasetsHolding.map((d) => [d.datasetId, d.ciphertexts])).toEqual([["a", 0n]]);

      await datasets.reportInventory({ tenantId, keyId: "k", datasetId: "a", counts: [{ dekVersion: 2, ciphertexts: 3n }] });
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PURGED"], [2, "PRIMARY"]]);
    });

    it("waits for a quiet window without Decrypt of the version, and shows the last use and the time left", async () => {
      const { keys, dataKeys } = kms.clients();
      const tenantId = "purge-quiet";
      await keys.createKey({ tenantId, keyId: "k" });
      const v1 = await dataKeys.generateDataKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      advance(5 * DAY_MS);
      await dataKeys.decrypt({ tenantId, keyId: "k", reference: v1.reference });
      const lastUse = kms.clock.now();

      advance(2 * DAY_MS);
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PENDING_PURGE"], [2, "PRIMARY"]]);
      const [holdback] = (await holdbacksOf(tenantId, "k")).dekVersionHoldbacks;
      expect(holdback!.lastDecryptTime?.seconds).toBe(BigInt(lastUse.getTime() / 1000));
      expect(seconds(holdback!.quietRemaining)).toBe(5 * DAY_S);
      expect(seconds(holdback!.graceRemaining)).toBe(0);

      advance(5 * DAY_MS - 1000);
      await purge();
      expect((await dekStates(db(), tenantId, "k"))[0]).toEqual([1, "PENDING_PURGE"]);
      advance(1000);
      await purge();
      expect((await dekStates(db(), tenantId, "k"))[0]).toEqual([1, "PURGED"]);
    });

    it("honours a per-key grace period and quiet window", async () => {
      const { keys } = kms.clients();
      const tenantId = "purge-policy";
      const days = (n: number) => create(DurationSchema, { seconds: BigInt(n * DAY_S) });
      await keys.createKey({ tenantId, keyId: "k", lifecyclePolicy: { dekGracePeriod: days(2) } });
      await keys.rotateKey({ tenantId, keyId: "k" });
      advance(2 * DAY_MS - 1000);
      await purge();
      expect((await dekStates(db(), tenantId, "k"))[0]).toEqual([1, "DECRYPT_ONLY"]);
      advance(1000);
      await purge();
      expect((await dekStates(db(), tenantId, "k"))[0]).toEqual([1, "PURGED"]);
    });

    it("moves nothing while the key is revoked, and resumes once it is restored", async () => {
      const { keys } = kms.clients();
      const tenantId = "purge-revoked";
      await keys.createKey({ tenantId, keyId: "k" });
      await keys.rotateKey({ tenantId, keyId: "k" });
      await keys.revokeKey({ tenantId, keyId: "k" });
      advance(8 * DAY_MS);
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "DECRYPT_ONLY"], [2, "PRIMARY"]]);
      await keys.restoreKey({ tenantId, keyId: "k" });
      await purge();
      expect(await dekStates(db(), tenantId, "k")).toEqual([[1, "PURGED"], [2, "PRIMARY"]]);
    });

    it("lets two replicas purge at once: every version is purged once, with one event", async () => {
      const { keys } = kms.clients();
      const tenantId = "purge-replicas";
      const ids = Array.from({ length: 8 }, (_, i) => `k${i}`);
      for (const keyId of ids) {
        await keys.createKey({ tenantId, keyId });
        await keys.rotateKey({ tenantId, keyId });
      }
      advance(8 * DAY_MS);
      const replicaB = { ...kms.context, kekCache: createKekCache({ maxEntries: 10, maxAgeMs: 60_000 }) };
      const now = kms.clock.now();
      const [a, b] = await Promise.all([runPurge(kms.context, now, { batchSize: 2 }), runPurge(replicaB, now, { batchSize: 2 })]);
      const purged = [...a.purged, ...b.purged].filter((p) => p.tenantId === tenantId).map((p) => `${p.keyId}:${p.dekVersion}`);
      expect(purged.sort()).toEqual(ids.map((id) => `${id}:1`));
      for (const keyId of ids) {
        expect((await eventsOf(db(), tenantId, keyId)).filter((e) => e.startsWith("DEK_VERSION_PURGED"))).toEqual(["DEK_VERSION_PURGED:1"]);
      }
    });
  });
});

/**
 * The lifecycle routes over REST/JSON on the real server (startKms,
 * development mode, a tenant bearer token), on PostgreSQL and on PGlite:
 * UpdateKey (PATCH with an update mask), RestoreKey, RevokeDekVersion, the
 * dataset routes under a key, and the holdbacks and progress in the status.
 * The routes come from the proto annotations; these tests prove they are
 * wired and speak proto3 JSON.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../server/src/config.js";
import { signDevToken } from "../server/src/dev/dev-token-issuer.js";
import { runPurge } from "../server/src/jobs/purge.js";
import { startKms, type RunningKms } from "../server/src/start-kms.js";
import type { OpenedDatabase } from "../server/src/storage/open-database.js";
import { PKI_FILE_NAMES } from "../server/src/tls/dev-pki.js";
import { engines } from "./support/databases.js";
import { restCall, type Endpoint, type RestCall, type RestResult } from "./support/e2e-clients.js";
import { createManualClock, type ManualClock } from "./support/kms-harness.js";
import { DAY_S } from "./support/lifecycle.js";

const TENANT = "rest-co";
const base = `/api/v1/tenants/${TENANT}/encryption`;

describe.each(engines)("lifecycle routes over REST on the real server on $name", (engine) => {
  let dataDir: string;
  let database: OpenedDatabase;
  let kms: RunningKms;
  let endpoint: Endpoint;
  let token: string;
  let clock: ManualClock;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "kms-lifecycle-rest-"));
    database = await engine.open();
    clock = createManualClock();
    kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0", KMS_MODE: "development" }), {
      database,
      clock,
      logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
    });
    endpoint = { url: kms.server.url, ca: await readFile(join(kms.devTlsDir!, PKI_FILE_NAMES.caCert), "utf8") };
    token = await signDevToken(dataDir, TENANT);
  });

  afterAll(async () => {
    await kms?.stop(1_000);
    await database?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  const rest = (call: Omit<RestCall, "token">): Promise<RestResult> => restCall(endpoint, { ...call, token });

  it("lists every lifecycle route among the server's REST routes", () => {
    const routes = kms.server.routes.map((r) => `${r.httpMethod} ${r.path}`);
    expect(routes).toEqual(
      expect.arrayContaining([
        "PATCH /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}:restore",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/versions/{dek_version}:revoke",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/datasets",
        "GET /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/datasets",
        "POST /api/v1/tenants/{tenant_id}/encryption/keys/{key_id}/datasets/{dataset_id}:report",
      ]),
    );
  });

  it("PATCH changes the masked fields (camelCase mask in JSON) and refuses an out-of-bounds period naming it", async () => {
    expect((await rest({ method: "POST", path: `${base}/keys`, json: { keyId: "patched" } })).status).toBe(200);
    const patched = await rest({
      method: "PATCH",
      path: `${base}/keys/patched`,
      json: { updateMask: "description,rotationPolicy.dekRotationPeriod", description: "now described", rotationPolicy: { dekRotationPeriod: `${7 * DAY_S}s` } },
    });
    expect(patched.status).toBe(200);
    expect(patched.json.key).toMatchObject({ description: "now described", rotationPolicy: { dekRotationPeriod: `${7 * DAY_S}s`, kekRotationPeriod: `${90 * DAY_S}s` } });

    const refused = await rest({ method: "PATCH", path: `${base}/keys/patched`, json: { updateMask: "rotationPolicy", rotationPolicy: { dekRotationPeriod: "3600s" } } });
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_INVALID_FIELD", field: "rotation_policy.dek_rotation_period" });
    const noMask = await rest({ method: "PATCH", path: `${base}/keys/patched`, json: { description: "x" } });
    expect(noMask.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "update_mask" });
    expect((await rest({ method: "GET", path: `${base}/keys/patched` })).json.key.description).toBe("now described");
  });

  it("DELETE revokes, :restore restores, and :restore of an enabled key is refused", async () => {
    await rest({ method: "POST", path: `${base}/keys`, json: { keyId: "restorable" } });
    const revoked = await rest({ method: "DELETE", path: `${base}/keys/restorable` });
    expect(revoked.json.key).toMatchObject({ state: "KEY_STATE_REVOKED", scheduledDestroyTime: expect.any(String) });
    const restored = await rest({ method: "POST", path: `${base}/keys/restorable:restore`, json: {} });
    expect(restored.status).toBe(200);
    expect(restored.json.key.state).toBe("KEY_STATE_ENABLED");
    expect(restored.json.key.scheduledDestroyTime).toBeUndefined();
    const again = await rest({ method: "POST", path: `${base}/keys/restorable:restore`, json: {} });
    expect(again.status).toBe(400);
    expect(again.json).toMatchObject({ code: "failed_precondition", reason: "ERROR_REASON_INVALID_STATE_TRANSITION" });
  });

  it("versions/{v}:revoke revokes one DEK version: Decrypt of it is refused, the key keeps working", async () => {
    await rest({ method: "POST", path: `${base}/keys`, json: { keyId: "versions" } });
    const v1 = await rest({ method: "POST", path: `${base}/keys/versions:generateDataKey`, json: {} });
    const revoked = await rest({ method: "POST", path: `${base}/keys/versions/versions/1:revoke`, json: {} });
    expect(revoked.status).toBe(200);
    expect(revoked.json.key.primaryDekVersion).toBe(2);
    expect(revoked.json.key.dekVersions[0]).toMatchObject({ version: 1, state: "DEK_VERSION_STATE_REVOKED", revokeTime: expect.any(String) });
    const decrypt = await rest({ method: "POST", path: `${base}/keys/versions:decrypt`, json: { reference: v1.json.reference } });
    expect(decrypt.status).toBe(400);
    expect(decrypt.json).toMatchObject({ reason: "ERROR_REASON_DEK_VERSION_REVOKED", field: "reference" });
    expect((await rest({ method: "POST", path: `${base}/keys/versions:generateDataKey`, json: {} })).json.dekVersion).toBe(2);
    const unknown = await rest({ method: "POST", path: `${base}/keys/versions/versions/9:revoke`, json: {} });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ reason: "ERROR_REASON_DEK_VERSION_NOT_FOUND", field: "dek_version" });
  });

  it("registers, lists and reports datasets under a key, and the status shows holdbacks and re-encryption progress", async () => {
    await rest({ method: "POST", path: `${base}/keys`, json: { keyId: "inventory" } });
    await rest({ method: "POST", path: `${base}/keys/inventory/rotate`, json: {} });
    const registered = await rest({ method: "POST", path: `${base}/keys/inventory/datasets`, json: { datasetId: "orders", storeKind: "STORE_KIND_POSTGRES", description: "orders" } });
    expect(registered.status).toBe(200);
    expect(registered.json.dataset).toMatchObject({ tenantId: TENANT, keyId: "inventory", datasetId: "orders", storeKind: "STORE_KIND_POSTGRES" });
    const duplicate = await rest({ method: "POST", path: `${base}/keys/inventory/datasets`, json: { datasetId: "orders", storeKind: "STORE_KIND_S3" } });
    expect(duplicate.status).toBe(409);
    expect(duplicate.json).toMatchObject({ reason: "ERROR_REASON_DATASET_ALREADY_EXISTS", field: "dataset_id" });
    const unknownKey = await rest({ method: "POST", path: `${base}/keys/nope/datasets`, json: { datasetId: "x", storeKind: "STORE_KIND_S3" } });
    expect(unknownKey.status).toBe(404);
    expect(unknownKey.json.reason).toBe("ERROR_REASON_KEY_NOT_FOUND");

    const report = await rest({
      method: "POST",
      path: `${base}/keys/inventory/datasets/orders:report`,
      json: { counts: [{ dekVersion: 1, ciphertexts: "40" }, { dekVersion: 2, ciphertexts: "60" }] },
    });
    expect(report.status).toBe(200);
    expect(report.json.dataset.counts).toEqual([{ dekVersion: 1, ciphertexts: "40" }, { dekVersion: 2, ciphertexts: "60" }]);
    const badReport = await rest({ method: "POST", path: `${base}/keys/inventory/datasets/orders:report`, json: { counts: [{ dekVersion: 5, ciphertexts: "1" }] } });
    expect(badReport.status).toBe(400);
    expect(badReport.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "counts[0].dek_version" });

    const listed = await rest({ method: "GET", path: `${base}/keys/inventory/datasets` });
    expect(listed.json.datasets.map((d: { datasetId: string }) => d.datasetId)).toEqual(["orders"]);

    clock.advanceDays(8);
    await runPurge(kms.context, clock.now());
    const status = await rest({ method: "GET", path: `${base}/status` });
    const inventory = status.json.keys.find((k: { keyId: string }) => k.keyId === "inventory");
    expect(inventory.dekVersionHoldbacks).toEqual([
      { version: 1, state: "DEK_VERSION_STATE_PENDING_PURGE", graceRemaining: "0s", datasetsHolding: [{ datasetId: "orders", ciphertexts: "40" }], quietRemaining: "0s" },
    ]);
    expect(inventory.datasets).toEqual([
      { datasetId: "orders", storeKind: "STORE_KIND_POSTGRES", totalCiphertexts: "100", underPrimary: "60", lastReportTime: expect.any(String) },
    ]);
  });
});

/**
 * End to end over a real socket: the REAL server (`startKms`, development
 * mode: dev PKI and dev JWT key generated in a temp data directory) with the
 * real services, on PostgreSQL and on PGlite, called as outside callers call
 * it — the Connect gRPC transport with the dev client certificate, a plain
 * @grpc/grpc-js client that loads the .proto files, and REST/JSON with a dev
 * bearer token or the client certificate — plus the documented refusals.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Client } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { DataKeyService } from "../gen/matih/kms/v1/data_key_service_pb.js";
import { KeyManagementService } from "../gen/matih/kms/v1/key_management_service_pb.js";
import { DekVersionState, KekAlgorithm, KekVersionState, KeyProtection, KeyState } from "../gen/matih/kms/v1/resources_pb.js";
import { loadConfig } from "../server/src/config.js";
import { DEV_JWT_AUDIENCE, DEV_JWT_ISSUER, signDevToken } from "../server/src/dev/dev-token-issuer.js";
import { startKms, type RunningKms } from "../server/src/start-kms.js";
import type { OpenedDatabase } from "../server/src/storage/open-database.js";
import { createSelfSignedCertificate, issueClientCertificate, PKI_FILE_NAMES, type CertificateAndKey } from "../server/src/tls/dev-pki.js";
import { engines } from "./support/databases.js";
import {
  connectGrpcTransport,
  connectRefusal,
  countRows,
  createCapturingLogger,
  grpcJsCall,
  grpcJsErrorDetail,
  loadGrpcJsPackage,
  refusalOf,
  restCall,
  type Endpoint,
  type GrpcJsPackage,
  type RestCall,
  type RestResult,
  type TlsIdentity,
} from "./support/e2e-clients.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { generateSigningKey, signToken } from "./support/pki.js";

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const DURATION = /^\d+(\.\d+)?s$/;
const DAY = 86_400;

const api = (tenantId: string) => `/api/v1/tenants/${tenantId}/encryption`;
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
const fromB64 = (text: string) => Buffer.from(text, "base64");

describe.each(engines)("the real server (startKms, development mode) over a socket on $name", (engine) => {
  let dataDir: string;
  let database: OpenedDatabase;
  let kms: RunningKms;
  let endpoint: Endpoint;
  let devClient: TlsIdentity;
  let selfSigned: CertificateAndKey;
  let expiredClient: CertificateAndKey;
  let grpcPkg: GrpcJsPackage;
  let rpc: { keys: Client<typeof KeyManagementService>; dataKeys: Client<typeof DataKeyService> };
  const captured = createCapturingLogger();

  /** Every DEK plaintext, reference and token this run produced: none may reach the logs. */
  const secretsSeen = { plaintexts: [] as Buffer[], references: [] as Buffer[], tokens: [] as string[] };
  const remember = (kind: "plaintexts" | "references", bytes: Uint8Array): Buffer => {
    const copy = Buffer.from(bytes);
    secretsSeen[kind].push(copy);
    return copy;
  };

  const tokenFor = async (tenantId: string, ttlSeconds = 3600): Promise<string> => {
    const token = await signDevToken(dataDir, tenantId, "tenant_id", ttlSeconds);
    secretsSeen.tokens.push(token);
    return token;
  };
  const rest = (call: RestCall): Promise<RestResult> => restCall(endpoint, call);

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "kms-e2e-server-"));
    database = await engine.open();
    kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0", KMS_MODE: "development" }), {
      database,
      logger: captured.logger,
    });
    const tlsDir = kms.devTlsDir!;
    const read = (name: string) => readFile(join(tlsDir, name), "utf8");
    const [ca, caKey, clientCert, clientKey] = await Promise.all([
      read(PKI_FILE_NAMES.caCert),
      read(PKI_FILE_NAMES.caKey),
      read(PKI_FILE_NAMES.clientCert),
      read(PKI_FILE_NAMES.clientKey),
    ]);
    endpoint = { url: kms.server.url, ca };
    devClient = { cert: clientCert, key: clientKey };
    selfSigned = await createSelfSignedCertificate({ spiffeId: "spiffe://matih.local/dev" });
    expiredClient = await issueClientCertificate(
      { cert: ca, key: caKey },
      { notBefore: new Date(Date.now() - 10 * DAY * 1000), notAfter: new Date(Date.now() - DAY * 1000) },
    );
    grpcPkg = loadGrpcJsPackage();
    const transport = connectGrpcTransport(endpoint, devClient);
    rpc = { keys: createClient(KeyManagementService, transport), dataKeys: createClient(DataKeyService, transport) };
  });

  afterAll(async () => {
    await kms?.stop(1_000);
    await database?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it("runs in development mode with the generated PKI, on the chosen engine, on an ephemeral localhost port", () => {
    expect(kms.devTlsDir).toBe(join(dataDir, "tls"));
    expect(kms.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(kms.server.port).toBeGreaterThan(0);
    expect(kms.database.engine).toBe(engine.name);
  });

  // -------------------------------------------------------------------------
  // (a) Connect gRPC transport, HTTP/2, client certificate
  // -------------------------------------------------------------------------

  describe("(a) the Connect gRPC transport with the dev client certificate", () => {
    it("runs CreateKey → GenerateDataKey → Decrypt → RotateKey(rotate_kek) → Decrypt of the old reference → RevokeKey → GenerateDataKey refused KEY_REVOKED", async () => {
      const ids = { tenantId: "grpc-acme", keyId: "orders" };
      const { key: created } = await rpc.keys.createKey({ ...ids, description: "orders table" });
      expect(created).toMatchObject({
        ...ids,
        description: "orders table",
        kekAlgorithm: KekAlgorithm.AES_256,
        protection: KeyProtection.PLATFORM_MANAGED,
        state: KeyState.ENABLED,
        primaryDekVersion: 1,
        primaryKekVersion: 1,
      });

      const first = await rpc.dataKeys.generateDataKey(ids);
      const firstPlaintext = remember("plaintexts", first.plaintext);
      remember("references", first.reference);
      expect(firstPlaintext.length).toBe(32);
      expect(first.dekVersion).toBe(1);
      const decrypted = await rpc.dataKeys.decrypt({ ...ids, reference: first.reference });
      expect(Buffer.from(decrypted.plaintext)).toEqual(firstPlaintext);
      expect(decrypted.dekVersion).toBe(1);

      const { key: rotated } = await rpc.keys.rotateKey({ ...ids, rotateKek: true });
      expect(rotated).toMatchObject({ primaryDekVersion: 2, primaryKekVersion: 2 });
      expect(rotated?.kekVersions.find((v) => v.version === 2)?.state).toBe(KekVersionState.PRIMARY);
      // Version 1 moves under KEK version 2 in the background (the KEK_REWRAP job); the new one is made under it.
      expect(rotated?.dekVersions.map((v) => [v.version, v.state])).toEqual([
        [1, DekVersionState.DECRYPT_ONLY],
        [2, DekVersionState.PRIMARY],
      ]);
      expect(rotated?.dekVersions[1]?.kekVersion).toBe(2);

      const old = await rpc.dataKeys.decrypt({ ...ids, reference: first.reference });
      expect(Buffer.from(old.plaintext)).toEqual(firstPlaintext);
      expect(old.dekVersion).toBe(1);
      const second = await rpc.dataKeys.generateDataKey(ids);
      remember("plaintexts", second.plaintext);
      remember("references", second.reference);
      expect(second.dekVersion).toBe(2);
      expect(Buffer.from(second.plaintext).equals(firstPlaintext)).toBe(false);

      const { key: revoked } = await rpc.keys.revokeKey(ids);
      expect(revoked?.state).toBe(KeyState.REVOKED);
      expect(revoked?.revokeTime).toBeDefined();

      await expectRefusal(rpc.dataKeys.generateDataKey(ids), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
      await expectRefusal(rpc.dataKeys.decrypt({ ...ids, reference: second.reference }), { code: Code.FailedPrecondition, reason: "KEY_REVOKED" });
      expect((await rpc.keys.getKey(ids)).key?.state).toBe(KeyState.REVOKED);
    });

    it("serves concurrent calls on one HTTP/2 connection: 8 CreateKey and 32 GenerateDataKey/Decrypt in parallel all succeed and store exactly their rows", async () => {
      const tenantId = "grpc-busy";
      const before = await countRows(database.db);
      const keyIds = Array.from({ length: 8 }, (_, i) => `busy-${i}`);
      await Promise.all(keyIds.map((keyId) => rpc.keys.createKey({ tenantId, keyId })));
      const results = await Promise.all(
        Array.from({ length: 32 }, async (_, i) => {
          const keyId = keyIds[i % keyIds.length]!;
          const generated = await rpc.dataKeys.generateDataKey({ tenantId, keyId });
          const decrypted = await rpc.dataKeys.decrypt({ tenantId, keyId, reference: generated.reference });
          remember("plaintexts", generated.plaintext);
          return { keyId, same: Buffer.from(decrypted.plaintext).equals(Buffer.from(generated.plaintext)), plaintext: Buffer.from(generated.plaintext) };
        }),
      );
      expect(results.every((r) => r.same)).toBe(true);
      // One primary DEK per key: every call on a key got the same plaintext, and keys differ.
      const perKey = new Map(results.map((r) => [r.keyId, r.plaintext.toString("hex")]));
      expect(results.every((r) => perKey.get(r.keyId) === r.plaintext.toString("hex"))).toBe(true);
      expect(new Set(perKey.values()).size).toBe(keyIds.length);
      expect(await countRows(database.db)).toEqual({
        tenants: before.tenants + 1,
        keys: before.keys + 8,
        kek_versions: before.kek_versions + 8,
        dek_versions: before.dek_versions + 8,
      });
    });

    it("refuses a Connect gRPC call without a client certificate (Unauthenticated CREDENTIALS_MISSING) and with a self-signed one (CLIENT_CERTIFICATE_UNTRUSTED)", async () => {
      const bare = createClient(DataKeyService, connectGrpcTransport(endpoint, undefined));
      await expectRefusal(bare.generateDataKey({ tenantId: "grpc-acme", keyId: "orders" }), {
        code: Code.Unauthenticated,
        reason: "CREDENTIALS_MISSING",
      });
      const forged = createClient(DataKeyService, connectGrpcTransport(endpoint, selfSigned));
      await expectRefusal(forged.generateDataKey({ tenantId: "grpc-acme", keyId: "orders" }), {
        code: Code.Unauthenticated,
        reason: "CLIENT_CERTIFICATE_UNTRUSTED",
      });
    });
  });

  // -------------------------------------------------------------------------
  // (b) plain @grpc/grpc-js with @grpc/proto-loader
  // -------------------------------------------------------------------------

  describe("(b) a plain @grpc/grpc-js client loading the .proto files with @grpc/proto-loader", () => {
    const ids = { tenantId: "grpcjs-acme", keyId: "invoices" };

    it("creates a key and round-trips GenerateDataKey → Decrypt; its reference also decrypts through the Connect client", async () => {
      const created = await grpcJsCall(grpcPkg, endpoint, devClient, "KeyManagementService", "createKey", ids);
      expect(created.err).toBeNull();
      expect(created.res.key).toMatchObject({ ...ids, state: "KEY_STATE_ENABLED", kekAlgorithm: "KEK_ALGORITHM_AES_256", primaryDekVersion: 1 });

      const generated = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "generateDataKey", ids);
      expect(generated.err).toBeNull();
      const plaintext = remember("plaintexts", generated.res.plaintext);
      remember("references", generated.res.reference);
      expect(plaintext.length).toBe(32);
      expect(generated.res.dekVersion).toBe(1);

      const decrypted = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "decrypt", { ...ids, reference: generated.res.reference });
      expect(decrypted.err).toBeNull();
      expect(Buffer.from(decrypted.res.plaintext)).toEqual(plaintext);
      expect(decrypted.res.dekVersion).toBe(1);

      const viaConnect = await rpc.dataKeys.decrypt({ ...ids, reference: generated.res.reference });
      expect(Buffer.from(viaConnect.plaintext)).toEqual(plaintext);
    });

    it("sees status 9 FAILED_PRECONDITION with reason KEY_REVOKED (in grpc-status-details-bin) for a revoked key", async () => {
      const generated = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "generateDataKey", ids);
      expect(generated.err).toBeNull();
      remember("plaintexts", generated.res.plaintext);
      const revoked = await grpcJsCall(grpcPkg, endpoint, devClient, "KeyManagementService", "revokeKey", ids);
      expect(revoked.err).toBeNull();
      expect(revoked.res.key.state).toBe("KEY_STATE_REVOKED");

      const refusedGenerate = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "generateDataKey", ids);
      expect(refusedGenerate.err?.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(refusedGenerate.err?.code).toBe(9);
      expect(grpcJsErrorDetail(refusedGenerate.err!).reason).toBe("ERROR_REASON_KEY_REVOKED");

      const refusedDecrypt = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "decrypt", { ...ids, reference: generated.res.reference });
      expect(refusedDecrypt.err?.code).toBe(9);
      expect(grpcJsErrorDetail(refusedDecrypt.err!).reason).toBe("ERROR_REASON_KEY_REVOKED");
    });

    it("sees status 16 UNAUTHENTICATED without a client certificate, for an existing and a missing key alike, and with a self-signed one", async () => {
      for (const request of [ids, { tenantId: "grpcjs-acme", keyId: "no-such-key" }, { tenantId: "no-such-tenant", keyId: "k" }]) {
        const refused = await grpcJsCall(grpcPkg, endpoint, undefined, "DataKeyService", "generateDataKey", request);
        expect(refused.err?.code, JSON.stringify(request)).toBe(grpc.status.UNAUTHENTICATED);
        expect(refused.err?.code).toBe(16);
        expect(grpcJsErrorDetail(refused.err!).reason).toBe("ERROR_REASON_CREDENTIALS_MISSING");
      }
      const forged = await grpcJsCall(grpcPkg, endpoint, selfSigned, "DataKeyService", "generateDataKey", ids);
      expect(forged.err?.code).toBe(16);
      expect(grpcJsErrorDetail(forged.err!).reason).toBe("ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED");
    });
  });

  // -------------------------------------------------------------------------
  // (c) REST with a dev bearer token, and with the client certificate
  // -------------------------------------------------------------------------

  describe.each([
    { credential: "a dev bearer token (signDevToken)", kind: "token" as const, tenantId: "rest-token-acme" },
    { credential: "the dev client certificate", kind: "cert" as const, tenantId: "rest-cert-acme" },
  ])("(c) REST with $credential: every documented path in proto3 JSON", ({ kind, tenantId }) => {
    let auth: Pick<RestCall, "token" | "cert">;
    let firstReference = "";
    let firstPlaintext: Buffer = Buffer.alloc(0);
    const base = api(tenantId);

    beforeAll(async () => {
      auth = kind === "token" ? { token: await tokenFor(tenantId) } : { cert: devClient };
    });

    it("POST .../keys creates keys from a proto3 JSON body (JSON or proto field names); the key comes back with enum names, RFC 3339 times and durations", async () => {
      const res = await rest({
        method: "POST",
        path: `${base}/keys`,
        ...auth,
        json: {
          keyId: "alpha",
          description: "customer PII",
          kekAlgorithm: "KEK_ALGORITHM_AES_256",
          rotationPolicy: { dekRotationPeriod: "604800s", kekRotationPeriod: "2592000s" },
        },
      });
      expect(res.status, res.text).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^application\/json/);
      const key = res.json.key;
      expect(key).toMatchObject({
        tenantId,
        keyId: "alpha",
        description: "customer PII",
        kekAlgorithm: "KEK_ALGORITHM_AES_256",
        protection: "KEY_PROTECTION_PLATFORM_MANAGED",
        state: "KEY_STATE_ENABLED",
        rotationPolicy: { dekRotationPeriod: "604800s", kekRotationPeriod: "2592000s" },
        primaryDekVersion: 1,
        primaryKekVersion: 1,
        kekVersions: [{ version: 1, state: "KEK_VERSION_STATE_PRIMARY" }],
        dekVersions: [{ version: 1, state: "DEK_VERSION_STATE_PRIMARY", kekVersion: 1 }],
      });
      expect(key.createTime).toMatch(RFC3339);
      expect(key.kekVersions[0].createTime).toMatch(RFC3339);
      expect(Date.parse(key.nextDekRotationTime) - Date.parse(key.createTime)).toBe(7 * DAY * 1000);
      expect(Date.parse(key.nextKekRotationTime) - Date.parse(key.createTime)).toBe(30 * DAY * 1000);

      const beta = await rest({ method: "POST", path: `${base}/keys`, ...auth, json: { key_id: "beta", kek_algorithm: "KEK_ALGORITHM_AES_256" } });
      expect(beta.status, beta.text).toBe(200);
      expect(beta.json.key).toMatchObject({ keyId: "beta", rotationPolicy: { dekRotationPeriod: `${30 * DAY}s`, kekRotationPeriod: `${90 * DAY}s` } });
      const gamma = await rest({ method: "POST", path: `${base}/keys`, ...auth, json: { keyId: "gamma" } });
      expect(gamma.status, gamma.text).toBe(200);

      const stored = await database.db.selectFrom("keys").select("key_id").where("tenant_id", "=", tenantId).orderBy("key_id").execute();
      expect(stored.map((r) => r.key_id)).toEqual(["alpha", "beta", "gamma"]);
    });

    it("GET .../keys pages with page_size and page_token (query parameters), in key order", async () => {
      const first = await rest({ method: "GET", path: `${base}/keys?page_size=2`, ...auth });
      expect(first.status, first.text).toBe(200);
      expect(first.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["alpha", "beta"]);
      expect(typeof first.json.nextPageToken).toBe("string");
      expect(first.json.nextPageToken).not.toBe("");

      const second = await rest({ method: "GET", path: `${base}/keys?page_size=2&page_token=${encodeURIComponent(first.json.nextPageToken)}`, ...auth });
      expect(second.status, second.text).toBe(200);
      expect(second.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["gamma"]);
      expect(second.json.nextPageToken ?? "").toBe("");

      const all = await rest({ method: "GET", path: `${base}/keys`, ...auth });
      expect(all.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["alpha", "beta", "gamma"]);
      expect(all.json.keys.every((k: { tenantId: string }) => k.tenantId === tenantId)).toBe(true);
    });

    it("GET .../keys/{key_id} reads one key (over HTTP/2 and HTTP/1.1)", async () => {
      for (const http1 of [false, true]) {
        const res = await rest({ method: "GET", path: `${base}/keys/alpha`, ...auth, http1 });
        expect(res.status, res.text).toBe(200);
        expect(res.json.key).toMatchObject({ tenantId, keyId: "alpha", state: "KEY_STATE_ENABLED", description: "customer PII" });
      }
    });

    it("POST ...:generateDataKey returns the DEK and its reference as base64; POST ...:decrypt takes the reference back as base64", async () => {
      const generated = await rest({ method: "POST", path: `${base}/keys/alpha:generateDataKey`, ...auth, json: {} });
      expect(generated.status, generated.text).toBe(200);
      expect(generated.json.dekVersion).toBe(1);
      firstPlaintext = remember("plaintexts", fromB64(generated.json.plaintext));
      remember("references", fromB64(generated.json.reference));
      expect(firstPlaintext.length).toBe(32);
      expect(b64(firstPlaintext)).toBe(generated.json.plaintext);
      firstReference = generated.json.reference;

      const decrypted = await rest({ method: "POST", path: `${base}/keys/alpha:decrypt`, ...auth, json: { reference: firstReference } });
      expect(decrypted.status, decrypted.text).toBe(200);
      expect(fromB64(decrypted.json.plaintext)).toEqual(firstPlaintext);
      expect(decrypted.json.dekVersion).toBe(1);
      // URL-safe base64 is accepted as well (proto3 JSON).
      const urlSafe = fromB64(firstReference).toString("base64url");
      const again = await rest({ method: "POST", path: `${base}/keys/alpha:decrypt`, ...auth, json: { reference: urlSafe } });
      expect(fromB64(again.json.plaintext)).toEqual(firstPlaintext);
    });

    it("POST .../rotate with rotateKek makes new DEK and KEK versions and the old reference still decrypts; an empty body rotates the DEK only", async () => {
      const rotated = await rest({ method: "POST", path: `${base}/keys/alpha/rotate`, ...auth, json: { rotateKek: true } });
      expect(rotated.status, rotated.text).toBe(200);
      expect(rotated.json.key).toMatchObject({ primaryDekVersion: 2, primaryKekVersion: 2 });
      expect(rotated.json.key.dekVersions).toMatchObject([
        { version: 1, state: "DEK_VERSION_STATE_DECRYPT_ONLY" }, // re-wrapped under KEK version 2 in the background
        { version: 2, state: "DEK_VERSION_STATE_PRIMARY", kekVersion: 2 },
      ]);
      expect(rotated.json.key.dekVersions[0].rotateTime).toMatch(RFC3339);
      expect(rotated.json.key.kekVersions.find((v: { version: number }) => v.version === 2).state).toBe("KEK_VERSION_STATE_PRIMARY");

      const old = await rest({ method: "POST", path: `${base}/keys/alpha:decrypt`, ...auth, json: { reference: firstReference } });
      expect(old.status, old.text).toBe(200);
      expect(fromB64(old.json.plaintext)).toEqual(firstPlaintext);
      expect(old.json.dekVersion).toBe(1);

      const newer = await rest({ method: "POST", path: `${base}/keys/alpha:generateDataKey`, ...auth, json: {} });
      expect(newer.json.dekVersion).toBe(2);
      remember("plaintexts", fromB64(newer.json.plaintext));
      remember("references", fromB64(newer.json.reference));

      const dekOnly = await rest({ method: "POST", path: `${base}/keys/alpha/rotate`, ...auth });
      expect(dekOnly.status, dekOnly.text).toBe(200);
      expect(dekOnly.json.key).toMatchObject({ primaryDekVersion: 3, primaryKekVersion: 2 });
    });

    it("GET .../status reports each key's state, versions, ages (durations) and next rotation (timestamps)", async () => {
      const res = await rest({ method: "GET", path: `${base}/status`, ...auth });
      expect(res.status, res.text).toBe(200);
      expect(res.json.tenantId).toBe(tenantId);
      expect(res.json.reportTime).toMatch(RFC3339);
      expect(res.json.keys.map((k: { keyId: string }) => k.keyId).sort()).toEqual(["alpha", "beta", "gamma"]);
      const alpha = res.json.keys.find((k: { keyId: string }) => k.keyId === "alpha");
      expect(alpha).toMatchObject({
        state: "KEY_STATE_ENABLED",
        kekAlgorithm: "KEK_ALGORITHM_AES_256",
        protection: "KEY_PROTECTION_PLATFORM_MANAGED",
        primaryDekVersion: 3,
        primaryKekVersion: 2,
      });
      expect(alpha.primaryDekAge).toMatch(DURATION);
      expect(alpha.primaryKekAge).toMatch(DURATION);
      expect(alpha.nextDekRotationTime).toMatch(RFC3339);
      expect(alpha.nextKekRotationTime).toMatch(RFC3339);
      expect(alpha.rotationOverdue ?? false).toBe(false);
    });

    it("DELETE .../keys/{key_id} revokes: the key lists as KEY_STATE_REVOKED and no longer hands out DEKs", async () => {
      const res = await rest({ method: "DELETE", path: `${base}/keys/gamma`, ...auth });
      expect(res.status, res.text).toBe(200);
      expect(res.json.key).toMatchObject({ keyId: "gamma", state: "KEY_STATE_REVOKED" });
      expect(res.json.key.revokeTime).toMatch(RFC3339);

      const revokedOnly = await rest({ method: "GET", path: `${base}/keys?state=KEY_STATE_REVOKED`, ...auth });
      expect(revokedOnly.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["gamma"]);
      const enabledOnly = await rest({ method: "GET", path: `${base}/keys?state=KEY_STATE_ENABLED&page_size=10`, ...auth });
      expect(enabledOnly.json.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["alpha", "beta"]);

      const refused = await rest({ method: "POST", path: `${base}/keys/gamma:generateDataKey`, ...auth, json: {} });
      expect(refused.status).toBe(400);
      expect(refused.json).toMatchObject({ code: "failed_precondition", reason: "ERROR_REASON_KEY_REVOKED" });

      const status = await rest({ method: "GET", path: `${base}/status`, ...auth });
      expect(status.json.keys.find((k: { keyId: string }) => k.keyId === "gamma").state).toBe("KEY_STATE_REVOKED");
    });
  });

  // -------------------------------------------------------------------------
  // (d) refusals over REST with the real services
  // -------------------------------------------------------------------------

  describe("(d) refusals over REST with the real services", () => {
    /** acme has keys pii and docs, globex has ledger; acme/retired is revoked. */
    let piiReference: Buffer;
    let docsReference: Buffer;

    beforeAll(async () => {
      for (const [tenantId, keyId] of [
        ["acme", "pii"],
        ["acme", "docs"],
        ["acme", "retired"],
        ["globex", "ledger"],
      ] as const) {
        await rpc.keys.createKey({ tenantId, keyId });
      }
      await rpc.keys.revokeKey({ tenantId: "acme", keyId: "retired" });
      const pii = await rpc.dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
      const docs = await rpc.dataKeys.generateDataKey({ tenantId: "acme", keyId: "docs" });
      remember("plaintexts", pii.plaintext);
      remember("plaintexts", docs.plaintext);
      piiReference = remember("references", pii.reference);
      docsReference = remember("references", docs.reference);
    });

    /** The 8 documented routes for acme/pii (acme's own collection for the collection routes). */
    const routes = (tenantId: string, keyId: string, reference = "AQ=="): RestCall[] => [
      { method: "GET", path: `${api(tenantId)}/keys?page_size=5` },
      { method: "POST", path: `${api(tenantId)}/keys`, json: { keyId } },
      { method: "GET", path: `${api(tenantId)}/keys/${keyId}` },
      { method: "POST", path: `${api(tenantId)}/keys/${keyId}/rotate`, json: { rotateKek: true } },
      { method: "DELETE", path: `${api(tenantId)}/keys/${keyId}` },
      { method: "GET", path: `${api(tenantId)}/status` },
      { method: "POST", path: `${api(tenantId)}/keys/${keyId}:generateDataKey`, json: {} },
      { method: "POST", path: `${api(tenantId)}/keys/${keyId}:decrypt`, json: { reference } },
    ];

    const piiState = async () =>
      (await database.db.selectFrom("keys").select(["state", "primary_dek_version"]).where("tenant_id", "=", "acme").where("key_id", "=", "pii").executeTakeFirstOrThrow());

    it("no credentials on any route → 401 CREDENTIALS_MISSING with a Bearer challenge, and nothing changes", async () => {
      const before = await countRows(database.db);
      const pii = await piiState();
      for (const call of routes("acme", "pii", b64(piiReference))) {
        const res = await rest(call);
        expect(res.status, `${call.method} ${call.path}`).toBe(401);
        expect(res.json).toMatchObject({ code: "unauthenticated", reason: "ERROR_REASON_CREDENTIALS_MISSING" });
        expect(String(res.headers["www-authenticate"])).toContain("Bearer");
        expect(res.text).not.toContain(b64(piiReference));
      }
      expect(await countRows(database.db)).toEqual(before);
      expect(await piiState()).toEqual(pii);
    });

    it("a token for another tenant → 403 TENANT_FORBIDDEN with the same body whether or not the key (or tenant) exists, and nothing changes", async () => {
      const globex = await tokenFor("globex");
      const before = await countRows(database.db);
      const pii = await piiState();
      const targets: Array<[string, string]> = [
        ["acme", "pii"], // exists
        ["acme", "no-such-key"], // the tenant exists, the key does not
        ["nobody-here", "pii"], // neither exists
      ];
      const bodies = new Map<string, string[]>();
      for (const [tenantId, keyId] of targets) {
        for (const call of routes(tenantId, keyId, b64(piiReference))) {
          const res = await rest({ ...call, token: globex });
          expect(res.status, `${call.method} ${call.path}`).toBe(403);
          expect(res.json).toMatchObject({ code: "permission_denied", reason: "ERROR_REASON_TENANT_FORBIDDEN" });
          const route = `${call.method} ${call.path.replace(`/tenants/${tenantId}/`, "/tenants/*/").replace(`/keys/${keyId}`, "/keys/*")}`;
          bodies.set(route, [...(bodies.get(route) ?? []), res.text]);
        }
      }
      for (const [route, texts] of bodies) {
        expect(new Set(texts).size, `${route}: ${texts.join(" | ")}`).toBe(1);
      }
      // GET key, generate and decrypt all answer with one identical body, existing key or not.
      const identical = [...bodies.entries()].filter(([route]) => /keys\/\*($|:)/.test(route)).map(([, texts]) => texts[0]);
      expect(new Set(identical).size).toBe(1);
      expect(await countRows(database.db)).toEqual(before);
      expect(await piiState()).toEqual(pii);
    });

    it("an expired dev token → 401 TOKEN_EXPIRED", async () => {
      const expired = await tokenFor("acme", -3600);
      const res = await rest({ method: "GET", path: `${api("acme")}/keys/pii`, token: expired });
      expect(res.status).toBe(401);
      expect(res.json).toMatchObject({ code: "unauthenticated", reason: "ERROR_REASON_TOKEN_EXPIRED" });
    });

    it("an untrusted self-signed client certificate (carrying the dev SPIFFE id) → 401 CLIENT_CERTIFICATE_UNTRUSTED, over HTTP/2 and HTTP/1.1, even with a valid token", async () => {
      const token = await tokenFor("acme");
      for (const http1 of [false, true]) {
        const res = await rest({ method: "GET", path: `${api("acme")}/keys/pii`, cert: selfSigned, http1 });
        expect(res.status).toBe(401);
        expect(res.json).toMatchObject({ code: "unauthenticated", reason: "ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED" });
        const withToken = await rest({ method: "GET", path: `${api("acme")}/keys/pii`, cert: selfSigned, token, http1 });
        expect(withToken.status).toBe(401);
        expect(withToken.json.reason).toBe("ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED");
      }
    });

    it("an expired client certificate issued by the dev CA → 401 CLIENT_CERTIFICATE_UNTRUSTED naming CERT_HAS_EXPIRED, over HTTP/2 and HTTP/1.1", async () => {
      for (const http1 of [false, true]) {
        const res = await rest({ method: "GET", path: `${api("acme")}/keys/pii`, cert: expiredClient, http1 });
        expect(res.status, res.text).toBe(401);
        expect(res.json).toMatchObject({ reason: "ERROR_REASON_CLIENT_CERTIFICATE_UNTRUSTED" });
        expect(res.json.message).toContain("CERT_HAS_EXPIRED");
      }
    });

    describe("CreateKey refusals store nothing", () => {
      interface CreateRefusal {
        readonly name: string;
        readonly tenantId: string;
        readonly keyId: string;
        readonly call: () => Promise<Omit<RestCall, "method" | "path"> & { path?: string }>;
        readonly status: number;
        readonly reason: string;
        readonly field?: string;
        readonly messageContains?: string;
      }
      const fresh = "newco";
      const cases: CreateRefusal[] = [
        { name: "no credentials", tenantId: fresh, keyId: "k1", call: async () => ({ json: { keyId: "k1" } }), status: 401, reason: "CREDENTIALS_MISSING" },
        {
          name: "a token for another tenant",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1" }, token: await tokenFor("globex") }),
          status: 403,
          reason: "TENANT_FORBIDDEN",
        },
        {
          name: "an expired token",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1" }, token: await tokenFor(fresh, -3600) }),
          status: 401,
          reason: "TOKEN_EXPIRED",
        },
        {
          name: "a token signed by a key the server does not know",
          tenantId: fresh,
          keyId: "k1",
          call: async () => {
            const { privateKey } = await generateSigningKey();
            const token = await signToken({ privateKey, kid: "matih-kms-dev-forged", issuer: DEV_JWT_ISSUER, audience: DEV_JWT_AUDIENCE }, { tenantId: fresh });
            return { json: { keyId: "k1" }, token };
          },
          status: 401,
          reason: "TOKEN_INVALID",
        },
        {
          name: "a self-signed client certificate with a valid token",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1" }, cert: selfSigned, token: await tokenFor(fresh) }),
          status: 401,
          reason: "CLIENT_CERTIFICATE_UNTRUSTED",
        },
        {
          name: "an expired client certificate from the dev CA",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1" }, cert: expiredClient }),
          status: 401,
          reason: "CLIENT_CERTIFICATE_UNTRUSTED",
          messageContains: "CERT_HAS_EXPIRED",
        },
        {
          name: "bad JSON",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ body: '{"keyId": "k1",', token: await tokenFor(fresh) }),
          status: 400,
          reason: "MALFORMED_BODY",
        },
        {
          name: "a body not declared as JSON (a cross-site form post)",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1" }, headers: { "content-type": "text/plain" }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "MALFORMED_BODY",
          field: "Content-Type",
        },
        {
          name: "a JSON array instead of an object",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ body: '["k1"]', token: await tokenFor(fresh) }),
          status: 400,
          reason: "MALFORMED_BODY",
        },
        {
          name: "an unknown JSON field",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1", colour: "red" }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "MALFORMED_BODY",
          field: "colour",
        },
        {
          name: "an unknown enum name",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1", kekAlgorithm: "AES" }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "MALFORMED_BODY",
          field: "kek_algorithm",
        },
        {
          name: "an oversized body (over the 64 KiB default)",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1", description: "x".repeat(100 * 1024) }, token: await tokenFor(fresh) }),
          status: 413,
          reason: "BODY_TOO_LARGE",
        },
        {
          name: "a key id with a space",
          tenantId: fresh,
          keyId: "bad id",
          call: async () => ({ json: { keyId: "bad id" }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "key_id",
        },
        {
          name: "a key id of 65 characters",
          tenantId: fresh,
          keyId: "k".repeat(65),
          call: async () => ({ json: { keyId: "k".repeat(65) }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "key_id",
        },
        {
          name: "no key id at all",
          tenantId: fresh,
          keyId: "",
          call: async () => ({ json: {}, token: await tokenFor(fresh) }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "key_id",
        },
        {
          name: "a malformed tenant id in the path",
          tenantId: "bad tenant",
          keyId: "k1",
          call: async () => ({ path: `${api("bad%20tenant")}/keys`, json: { keyId: "k1" }, cert: devClient }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "tenant_id",
        },
        {
          name: "a body tenant_id that differs from the path",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { tenantId: "globex", keyId: "k1" }, cert: devClient }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "tenant_id",
        },
        {
          name: "a description over 256 characters",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1", description: "d".repeat(257) }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "description",
        },
        {
          name: "a rotation period below the minimum",
          tenantId: fresh,
          keyId: "k1",
          call: async () => ({ json: { keyId: "k1", rotationPolicy: { dekRotationPeriod: "60s" } }, token: await tokenFor(fresh) }),
          status: 400,
          reason: "INVALID_FIELD",
          field: "rotation_policy.dek_rotation_period",
        },
        {
          name: "a key id the tenant already has",
          tenantId: "acme",
          keyId: "pii",
          call: async () => ({ json: { keyId: "pii", description: "second try" }, token: await tokenFor("acme") }),
          status: 409,
          reason: "KEY_ALREADY_EXISTS",
          field: "key_id",
        },
      ];

      it.each(cases)("CreateKey with $name → $status $reason, and no row is stored", async (refusal) => {
        const before = await countRows(database.db);
        const piiBefore = await piiState();
        const { path, ...rest_ } = await refusal.call();
        const res = await rest({ method: "POST", path: path ?? `${api(refusal.tenantId)}/keys`, ...rest_ });
        expect(res.status, res.text).toBe(refusal.status);
        expect(res.json).toMatchObject({ reason: `ERROR_REASON_${refusal.reason}` });
        if (refusal.field !== undefined) {
          expect(res.json.field).toBe(refusal.field);
          expect(res.json.message).toContain(refusal.field);
        }
        if (refusal.messageContains !== undefined) expect(res.json.message).toContain(refusal.messageContains);
        expect(await countRows(database.db)).toEqual(before);
        expect(await piiState()).toEqual(piiBefore);
        const tenantRow = await database.db.selectFrom("tenants").select("tenant_id").where("tenant_id", "=", refusal.tenantId).executeTakeFirst();
        expect(tenantRow === undefined).toBe(refusal.tenantId !== "acme");
        const acmeKeys = await database.db.selectFrom("keys").select("description").where("tenant_id", "=", "acme").where("key_id", "=", "pii").executeTakeFirstOrThrow();
        expect(acmeKeys.description).toBe("");
      });
    });

    it.each([
      ["a space (bad%20id)", "bad%20id"],
      ["65 characters", "k".repeat(65)],
      ["a leading dash", "-pii"],
      ["a dot-dot segment (%2E%2E)", "%2E%2E"],
      ["a non-ASCII letter (%C3%A9)", "caf%C3%A9"],
    ])("a key id in the path with %s → 400 INVALID_FIELD naming key_id on every key route", async (_label, badId) => {
      const cert = { cert: devClient };
      for (const call of routes("acme", badId, b64(piiReference)).filter((c) => c.path.includes(`/keys/${badId}`))) {
        const res = await rest({ ...call, ...cert });
        expect(res.status, `${call.method} ${call.path}: ${res.text}`).toBe(400);
        expect(res.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_INVALID_FIELD", field: "key_id" });
        expect(res.json.message).toContain("key_id");
      }
    });

    it("an unknown key → 404 KEY_NOT_FOUND naming key_id (GET, rotate, DELETE, generateDataKey), with a token and with a certificate", async () => {
      const token = await tokenFor("acme");
      for (const auth of [{ token }, { cert: devClient }]) {
        for (const call of routes("acme", "no-such-key").filter((c) => c.path.includes("/keys/no-such-key") && !c.path.endsWith(":decrypt"))) {
          const res = await rest({ ...call, ...auth });
          expect(res.status, `${call.method} ${call.path}`).toBe(404);
          expect(res.json).toMatchObject({ code: "not_found", reason: "ERROR_REASON_KEY_NOT_FOUND", field: "key_id" });
        }
      }
      expect(await database.db.selectFrom("keys").select("key_id").where("key_id", "=", "no-such-key").execute()).toEqual([]);
    });

    it("an unknown tenant → 404 TENANT_NOT_FOUND (list, status, GET key, generateDataKey), with the client certificate and with a token for that tenant", async () => {
      const token = await tokenFor("nobody-here");
      for (const auth of [{ cert: devClient }, { token }]) {
        for (const call of routes("nobody-here", "pii").filter((c) => c.method === "GET" || c.path.endsWith(":generateDataKey"))) {
          const res = await rest({ ...call, ...auth });
          expect(res.status, `${call.method} ${call.path}`).toBe(404);
          expect(res.json).toMatchObject({ code: "not_found", reason: "ERROR_REASON_TENANT_NOT_FOUND", field: "tenant_id" });
        }
      }
      expect(await database.db.selectFrom("tenants").select("tenant_id").where("tenant_id", "=", "nobody-here").execute()).toEqual([]);
    });

    it("a tampered reference → 400 REFERENCE_TAMPERED; a malformed one → 400 REFERENCE_MALFORMED; invalid base64 → 400 MALFORMED_BODY", async () => {
      const token = await tokenFor("acme");
      const tampered = Buffer.from(piiReference);
      tampered[tampered.length - 1]! ^= 0x01;
      const res = await rest({ method: "POST", path: `${api("acme")}/keys/pii:decrypt`, token, json: { reference: b64(tampered) } });
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_REFERENCE_TAMPERED", field: "reference" });

      const malformed = await rest({ method: "POST", path: `${api("acme")}/keys/pii:decrypt`, token, json: { reference: b64(Buffer.from("not a reference")) } });
      expect(malformed.status).toBe(400);
      expect(malformed.json).toMatchObject({ reason: "ERROR_REASON_REFERENCE_MALFORMED", field: "reference" });

      const notBase64 = await rest({ method: "POST", path: `${api("acme")}/keys/pii:decrypt`, token, json: { reference: "!!!" } });
      expect(notBase64.status).toBe(400);
      expect(notBase64.json).toMatchObject({ reason: "ERROR_REASON_MALFORMED_BODY", field: "reference" });

      const empty = await rest({ method: "POST", path: `${api("acme")}/keys/pii:decrypt`, token, json: {} });
      expect(empty.status).toBe(400);
      expect(empty.json).toMatchObject({ reason: "ERROR_REASON_INVALID_FIELD", field: "reference" });
    });

    it("another key's reference → 400 REFERENCE_KEY_MISMATCH (same tenant, other key; other tenant via the certificate)", async () => {
      const token = await tokenFor("acme");
      const sameTenant = await rest({ method: "POST", path: `${api("acme")}/keys/docs:decrypt`, token, json: { reference: b64(piiReference) } });
      expect(sameTenant.status).toBe(400);
      expect(sameTenant.json).toMatchObject({ code: "invalid_argument", reason: "ERROR_REASON_REFERENCE_KEY_MISMATCH", field: "reference" });
      const otherTenant = await rest({ method: "POST", path: `${api("globex")}/keys/ledger:decrypt`, cert: devClient, json: { reference: b64(docsReference) } });
      expect(otherTenant.status).toBe(400);
      expect(otherTenant.json).toMatchObject({ reason: "ERROR_REASON_REFERENCE_KEY_MISMATCH", field: "reference" });
      expect(sameTenant.text).not.toContain(b64(piiReference));
    });

    it("REST answers 404 ROUTE_NOT_FOUND for an undocumented path and 405 for a wrong method, as JSON", async () => {
      const token = await tokenFor("acme");
      const unknown = await rest({ method: "GET", path: `${api("acme")}/keys/pii/versions`, token });
      expect(unknown.status).toBe(404);
      expect(unknown.json).toMatchObject({ reason: "ERROR_REASON_ROUTE_NOT_FOUND" });
      const wrongMethod = await rest({ method: "PUT", path: `${api("acme")}/keys/pii`, token, json: {} });
      expect(wrongMethod.status).toBe(405);
    });

    describe("REST and gRPC return the same code, reason, message and field for the same fault", () => {
      interface Fault {
        readonly name: string;
        readonly status: number;
        readonly reason: string;
        readonly rest: () => RestCall;
        readonly rpc: () => Promise<unknown>;
      }
      const faults: Fault[] = [
        {
          name: "GetKey of an unknown key",
          status: 404,
          reason: "KEY_NOT_FOUND",
          rest: () => ({ method: "GET", path: `${api("acme")}/keys/missing` }),
          rpc: () => rpc.keys.getKey({ tenantId: "acme", keyId: "missing" }),
        },
        {
          name: "GetKey in an unknown tenant",
          status: 404,
          reason: "TENANT_NOT_FOUND",
          rest: () => ({ method: "GET", path: `${api("nobody-here")}/keys/pii` }),
          rpc: () => rpc.keys.getKey({ tenantId: "nobody-here", keyId: "pii" }),
        },
        {
          name: "GetKey with a malformed key id",
          status: 400,
          reason: "INVALID_FIELD",
          rest: () => ({ method: "GET", path: `${api("acme")}/keys/bad%20id` }),
          rpc: () => rpc.keys.getKey({ tenantId: "acme", keyId: "bad id" }),
        },
        {
          name: "CreateKey of an existing key",
          status: 409,
          reason: "KEY_ALREADY_EXISTS",
          rest: () => ({ method: "POST", path: `${api("acme")}/keys`, json: { keyId: "pii" } }),
          rpc: () => rpc.keys.createKey({ tenantId: "acme", keyId: "pii" }),
        },
        {
          name: "CreateKey with a too-long description",
          status: 400,
          reason: "INVALID_FIELD",
          rest: () => ({ method: "POST", path: `${api("acme")}/keys`, json: { keyId: "long", description: "d".repeat(300) } }),
          rpc: () => rpc.keys.createKey({ tenantId: "acme", keyId: "long", description: "d".repeat(300) }),
        },
        {
          name: "ListKeys with page_size over the maximum",
          status: 400,
          reason: "INVALID_FIELD",
          rest: () => ({ method: "GET", path: `${api("acme")}/keys?page_size=1000` }),
          rpc: () => rpc.keys.listKeys({ tenantId: "acme", pageSize: 1000 }),
        },
        {
          name: "ListKeys with a forged page token",
          status: 400,
          reason: "INVALID_FIELD",
          rest: () => ({ method: "GET", path: `${api("acme")}/keys?page_token=forged` }),
          rpc: () => rpc.keys.listKeys({ tenantId: "acme", pageToken: "forged" }),
        },
        {
          name: "GenerateDataKey on a revoked key",
          status: 400,
          reason: "KEY_REVOKED",
          rest: () => ({ method: "POST", path: `${api("acme")}/keys/retired:generateDataKey`, json: {} }),
          rpc: () => rpc.dataKeys.generateDataKey({ tenantId: "acme", keyId: "retired" }),
        },
        {
          name: "Decrypt of a tampered reference",
          status: 400,
          reason: "REFERENCE_TAMPERED",
          rest: () => {
            const tampered = Buffer.from(piiReference);
            tampered[tampered.length - 2]! ^= 0x80;
            return { method: "POST", path: `${api("acme")}/keys/pii:decrypt`, json: { reference: b64(tampered) } };
          },
          rpc: () => {
            const tampered = Buffer.from(piiReference);
            tampered[tampered.length - 2]! ^= 0x80;
            return rpc.dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: tampered });
          },
        },
        {
          name: "Decrypt of another key's reference",
          status: 400,
          reason: "REFERENCE_KEY_MISMATCH",
          rest: () => ({ method: "POST", path: `${api("acme")}/keys/docs:decrypt`, json: { reference: b64(piiReference) } }),
          rpc: () => rpc.dataKeys.decrypt({ tenantId: "acme", keyId: "docs", reference: piiReference }),
        },
        {
          name: "Decrypt of a malformed reference",
          status: 400,
          reason: "REFERENCE_MALFORMED",
          rest: () => ({ method: "POST", path: `${api("acme")}/keys/pii:decrypt`, json: { reference: b64(Buffer.from("junk")) } }),
          rpc: () => rpc.dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: Buffer.from("junk") }),
        },
      ];

      it.each(faults)("$name → HTTP $status / $reason on both", async (fault) => {
        const res = await rest({ ...fault.rest(), cert: devClient });
        const refused = connectRefusal(await refusalOf(fault.rpc()));
        expect(res.status, res.text).toBe(fault.status);
        expect(res.json.reason).toBe(`ERROR_REASON_${fault.reason}`);
        expect({ code: res.json.code, reason: res.json.reason, message: res.json.message, field: res.json.field }).toEqual(refused);
      });

      it("the grpc-js client sees the same status code, reason, field and message as REST", async () => {
        // The message must arrive verbatim ("key_id: ..."): grpc-js decodes
        // grpc-message with decodeURI, so the server encodes it as the gRPC
        // spec says (api/grpc-message-encoding.ts), not with encodeURIComponent.
        const rest404 = await rest({ method: "GET", path: `${api("acme")}/keys/missing`, cert: devClient });
        const viaGrpcJs = await grpcJsCall(grpcPkg, endpoint, devClient, "KeyManagementService", "getKey", { tenantId: "acme", keyId: "missing" });
        expect(viaGrpcJs.err?.code).toBe(grpc.status.NOT_FOUND);
        expect(grpcJsErrorDetail(viaGrpcJs.err!)).toEqual({ reason: rest404.json.reason, field: rest404.json.field, message: rest404.json.message });

        const restRevoked = await rest({ method: "POST", path: `${api("acme")}/keys/retired:generateDataKey`, cert: devClient, json: {} });
        const grpcRevoked = await grpcJsCall(grpcPkg, endpoint, devClient, "DataKeyService", "generateDataKey", { tenantId: "acme", keyId: "retired" });
        expect(grpcRevoked.err?.code).toBe(grpc.status.FAILED_PRECONDITION);
        expect(grpcJsErrorDetail(grpcRevoked.err!)).toEqual({ reason: restRevoked.json.reason, field: restRevoked.json.field, message: restRevoked.json.message });
      });
    });
  });

  // -------------------------------------------------------------------------
  // After the whole scenario
  // -------------------------------------------------------------------------

  it("leaves no DEK plaintext, DEK reference or bearer token in the captured logs, and no DEK plaintext in the database", async () => {
    expect(secretsSeen.plaintexts.length).toBeGreaterThan(5);
    expect(captured.lines.length).toBeGreaterThan(0);
    const log = captured.lines.join("");
    for (const plaintext of secretsSeen.plaintexts) {
      for (const encoded of [plaintext.toString("base64"), plaintext.toString("base64url"), plaintext.toString("hex")]) {
        expect(log.includes(encoded), "a DEK plaintext is in the log").toBe(false);
      }
    }
    for (const reference of secretsSeen.references) {
      expect(log.includes(reference.toString("base64")) || log.includes(reference.toString("hex")), "a DEK reference is in the log").toBe(false);
    }
    for (const token of secretsSeen.tokens) {
      expect(log.includes(token.split(".")[2]!), "a bearer token is in the log").toBe(false);
    }
    const rows = await database.db.selectFrom("dek_versions").select("wrapped_material").execute();
    const keks = await database.db.selectFrom("kek_versions").select(["wrapped_material", "public_key"]).execute();
    const stored = [...rows.map((r) => r.wrapped_material), ...keks.flatMap((r) => [r.wrapped_material, r.public_key])].filter((b): b is Buffer => b !== null);
    for (const plaintext of secretsSeen.plaintexts) {
      expect(stored.some((bytes) => bytes.includes(plaintext))).toBe(false);
    }
  });
});
